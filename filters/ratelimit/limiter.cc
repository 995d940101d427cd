#include "filters/ratelimit/limiter.h"

#include <time.h>

#include <functional>
#include <vector>

namespace eldric::filters::ratelimit {

uint64_t nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec);
}

EntrySharedPtr KeyedTable::get(const std::string& key, uint64_t now_s) {
  Shard& shard = shards_[std::hash<std::string>{}(key) % kShards];
  EntrySharedPtr e;
  {
    std::lock_guard<std::mutex> lock(shard.mutex);
    auto& slot = shard.map[key];
    if (!slot) slot = std::make_shared<Entry>(window_s_);
    e = slot;
  }
  e->last_used_s.store(now_s, std::memory_order_relaxed);
  return e;
}

void KeyedTable::forEach(const std::function<void(const std::string&, Entry&)>& f) {
  for (Shard& shard : shards_) {
    std::vector<std::pair<std::string, EntrySharedPtr>> copy;
    {
      std::lock_guard<std::mutex> lock(shard.mutex);
      copy.assign(shard.map.begin(), shard.map.end());
    }
    for (auto& [k, e] : copy) f(k, *e);
  }
}

size_t KeyedTable::sweep(uint64_t now_s) {
  size_t removed = 0;
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    for (auto it = shard.map.begin(); it != shard.map.end();) {
      Entry& e = *it->second;
      if (e.last_used_s.load(std::memory_order_relaxed) + window_s_ < now_s &&
          e.remote_requests.load(std::memory_order_relaxed) == 0 &&
          e.remote_tokens.load(std::memory_order_relaxed) == 0 &&
          e.ceiling.load(std::memory_order_relaxed) < 0 &&
          e.in_flight.load(std::memory_order_relaxed) == 0 && it->second.use_count() == 1) {
        it = shard.map.erase(it);
        ++removed;
      } else {
        ++it;
      }
    }
  }
  return removed;
}

size_t KeyedTable::size() {
  size_t n = 0;
  for (Shard& shard : shards_) {
    std::lock_guard<std::mutex> lock(shard.mutex);
    n += shard.map.size();
  }
  return n;
}

}  // namespace eldric::filters::ratelimit
