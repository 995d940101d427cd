#pragma once

// The control plane's two clocks, in milliseconds: wall time for what is
// shown or compared with other hosts (reports, expiries), steady time for
// intervals and ages measured here.

#include <chrono>
#include <cstdint>

namespace eldric::controlplane {

inline int64_t unixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

inline int64_t steadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace eldric::controlplane
