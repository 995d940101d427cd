#include "filters/ratelimit/limiter.h"

#include <arpa/inet.h>
#include <time.h>

#include <cstring>
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
    auto it = shard.map.find(key);
    if (it != shard.map.end()) {
      e = it->second;
    } else if (max_per_shard_ && shard.map.size() >= max_per_shard_) {
      overflowed_.fetch_add(1, std::memory_order_relaxed);
      e = overflow_;
    } else {
      e = std::make_shared<Entry>(window_s_);
      shard.map.emplace(key, e);
    }
  }
  e->last_used_s.store(now_s, std::memory_order_relaxed);
  return e;
}

std::string ipKey(const std::string& ip, uint32_t ipv6_prefix) {
  if (ip.find(':') == std::string::npos || ipv6_prefix >= 128) return ip;
  unsigned char b[16];
  if (inet_pton(AF_INET6, ip.c_str(), b) != 1) return ip;
  // An IPv4-mapped address is an IPv4 client.
  static const unsigned char kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  if (memcmp(b, kMapped, 12) == 0) {
    char v4[INET_ADDRSTRLEN];
    return inet_ntop(AF_INET, b + 12, v4, sizeof v4) ? std::string(v4) : ip;
  }
  uint32_t full = ipv6_prefix / 8, rest = ipv6_prefix % 8;
  if (rest) b[full] &= static_cast<unsigned char>(0xff << (8 - rest));
  for (uint32_t i = full + (rest ? 1 : 0); i < 16; ++i) b[i] = 0;
  char text[INET6_ADDRSTRLEN];
  if (!inet_ntop(AF_INET6, b, text, sizeof text)) return ip;
  return std::string(text) + "/" + std::to_string(ipv6_prefix);
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
