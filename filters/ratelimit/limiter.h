#pragma once

// The three request tiers (global, per IP, per key), tokens per key and
// requests in flight per key. The state is process-wide (shared by every
// worker, kept across config reloads); counters are lock-free, and the
// per-IP and per-key tables are sharded so that a lookup holds one of 64
// small locks for a hash-map probe only.

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "filters/ratelimit/sliding_window.h"

namespace eldric::filters::ratelimit {

// Counters for one IP or one client.
struct Entry {
  explicit Entry(uint32_t window_s) : requests(window_s), tokens(window_s) {}
  SlidingWindow requests;
  SlidingWindow tokens;
  std::atomic<int64_t> in_flight{0};
  std::atomic<uint64_t> last_used_s{0};
};
using EntrySharedPtr = std::shared_ptr<Entry>;

class KeyedTable {
 public:
  explicit KeyedTable(uint32_t window_s) : window_s_(window_s) {}
  EntrySharedPtr get(const std::string& key, uint64_t now_s);
  // Drops entries idle for a whole window with nothing in flight.
  size_t sweep(uint64_t now_s);
  size_t size();

 private:
  static constexpr size_t kShards = 64;
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, EntrySharedPtr> map;
  };
  const uint32_t window_s_;
  std::array<Shard, kShards> shards_;
};

// Everything the limiter counts. One per window size: a reload that
// changes window_seconds starts fresh counters.
class State {
 public:
  explicit State(uint32_t window_s) : window_s_(window_s), global(window_s), ips(window_s), keys(window_s) {}
  uint32_t windowSeconds() const { return window_s_; }
  const uint32_t window_s_;
  SlidingWindow global;
  KeyedTable ips;
  KeyedTable keys;

  // Refusals by tier, for /metrics.
  std::atomic<uint64_t> refused_global{0}, refused_ip{0}, refused_key{0}, refused_tokens{0},
      refused_concurrency{0}, streams_cut{0};
};
using StateSharedPtr = std::shared_ptr<State>;

// Seconds on a monotonic clock.
uint64_t nowSeconds();

}  // namespace eldric::filters::ratelimit
