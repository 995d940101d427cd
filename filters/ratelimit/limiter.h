#pragma once

// The three request tiers (global, per IP, per key), tokens per key and
// requests in flight per key. The state is process-wide (shared by every
// worker, kept across config reloads); counters are lock-free, and the
// per-IP and per-key tables are sharded so that a lookup holds one of 64
// small locks for a hash-map probe only.

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
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
  // Farm mode: what the other members counted for this IP or client in
  // their windows, as the control plane last reported it (rate-limit
  // headers and tokens).
  std::atomic<uint64_t> remote_requests{0};
  std::atomic<uint64_t> remote_tokens{0};
  // The most this member may hold in its window for this IP or client, as
  // the control plane shared the farm-wide limit out; -1: the default,
  // floor(limit / members).
  std::atomic<int64_t> ceiling{-1};
  // Requests this tier refused since the last farm report (its demand).
  std::atomic<uint64_t> refused{0};
};
using EntrySharedPtr = std::shared_ptr<Entry>;

class KeyedTable {
 public:
  // `max_entries` 0: unbounded (keys, whose number the config bounds).
  explicit KeyedTable(uint32_t window_s, size_t max_entries = 0)
      : window_s_(window_s),
        max_per_shard_(max_entries ? (max_entries + kShards - 1) / kShards : 0) {}
  // The entry for `key`; once the table is full, a new key gets the one
  // shared overflow entry instead (counted together, memory bounded).
  EntrySharedPtr get(const std::string& key, uint64_t now_s);
  // Keys that were given the overflow entry since start.
  uint64_t overflowed() const { return overflowed_.load(std::memory_order_relaxed); }
  // Calls f(key, entry) for every entry (a snapshot of the table).
  void forEach(const std::function<void(const std::string&, Entry&)>& f);
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
  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
  EntrySharedPtr overflow_ = std::make_shared<Entry>(window_s_);
  std::atomic<uint64_t> overflowed_{0};
};

// The per-IP tables' key for `ip`: an IPv4 address as it is, an IPv6 one
// as its `/ipv6_prefix` network ("2001:db8:1:2::/64"). Anything that does
// not parse is returned as it is.
std::string ipKey(const std::string& ip, uint32_t ipv6_prefix);

inline constexpr size_t kDefaultMaxIpEntries = 100000;

// Everything the limiter counts. One per window size: a reload that
// changes window_seconds starts fresh counters.
class State {
 public:
  explicit State(uint32_t window_s, size_t max_ip_entries = kDefaultMaxIpEntries)
      : window_s_(window_s),
        max_ip_entries_(max_ip_entries),
        global(window_s),
        ips(window_s, max_ip_entries),
        keys(window_s),
        auth_failures(window_s, max_ip_entries) {}
  uint32_t windowSeconds() const { return window_s_; }
  size_t maxIpEntries() const { return max_ip_entries_; }
  const uint32_t window_s_;
  const size_t max_ip_entries_;
  SlidingWindow global;
  KeyedTable ips;
  KeyedTable keys;
  // Failed key attempts per IP (the `requests` window of each entry).
  KeyedTable auth_failures;

  // Farm mode. The other members' global count; how many members the farm
  // has (for the default share); whether the farm's counts are out of
  // reach (the offline policy then applies), and what to do then.
  std::atomic<uint64_t> remote_global{0};
  std::atomic<uint32_t> farm_members{1};
  std::atomic<bool> farm_offline{false};
  std::atomic<bool> offline_local_share{true};

  std::atomic<int64_t> global_ceiling{-1};
  std::atomic<uint64_t> global_refused{0};

  // The limit this member enforces on its local window for a farm-wide
  // `limit`. Alone: the limit. In a farm, the ceiling the control plane
  // gave it (see controlplane/core/farm_limits.h: the members' ceilings
  // never add up to more than the limit, so neither do their counts), or
  // an equal share before it gave one. Cut off from the control plane,
  // the offline policy: an equal share, or the whole limit locally.
  uint64_t effectiveLimit(uint64_t limit, int64_t ceiling) const {
    uint32_t members = farm_members.load(std::memory_order_relaxed);
    if (farm_offline.load(std::memory_order_relaxed)) {
      if (!offline_local_share.load(std::memory_order_relaxed)) return limit;
      return members > 1 ? (limit + members - 1) / members : limit;
    }
    if (ceiling >= 0) return std::min<uint64_t>(limit, static_cast<uint64_t>(ceiling));
    // The same rule as controlplane/core/farm_limits.h's defaultCeiling.
    return members > 1 ? limit / members : limit;
  }

  // Refusals by tier, for /metrics.
  std::atomic<uint64_t> refused_global{0}, refused_ip{0}, refused_key{0}, refused_tokens{0},
      refused_concurrency{0}, streams_cut{0};
};
using StateSharedPtr = std::shared_ptr<State>;

// Seconds on a monotonic clock.
uint64_t nowSeconds();

}  // namespace eldric::filters::ratelimit
