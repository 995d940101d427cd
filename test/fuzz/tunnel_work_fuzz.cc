// The tunnel agent's parse of a poll's answer (the request the Edge hands
// it to run locally): whatever the bytes, nothing crashes, and what is
// accepted is safe to put on an HTTP/1.1 request line and headers.

#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "dataplane/tunnel_agent/work.h"
#include "test/fuzz/fuzz_util.h"

namespace {

bool lineSafe(const std::string& s, bool allow_space) {
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u == '\r' || u == '\n' || u == 0 || (!allow_space && u <= 0x20) || u == 0x7f) return false;
  }
  return true;
}

void fuzzOne(const uint8_t* data, size_t size) {
  eldric::tunnel_agent::Work w;
  std::string error;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (!eldric::tunnel_agent::parseWork(text, &w, &error)) {
    if (error.empty()) abort();
    return;
  }
  if (w.id.empty() || w.id.size() > 64 || !lineSafe(w.id, false)) abort();
  if (w.id.find('/') != std::string::npos || w.id.find('?') != std::string::npos) abort();
  if (w.method.empty() || !lineSafe(w.method, false)) abort();
  if (w.path.empty() || w.path[0] != '/' || !lineSafe(w.path, false)) abort();
  if (!lineSafe(w.content_type, true) || !lineSafe(w.accept, true)) abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
