#include "dataplane/upstream/host.h"

#include <algorithm>
#include <cstring>

#include "dataplane/common/random.h"

namespace eldric::upstream {

bool Host::recordFailure(uint64_t now_ms, uint32_t threshold, uint64_t ejection_ms) {
  failures_total.fetch_add(1, std::memory_order_relaxed);
  uint32_t n = consecutive_failures_.fetch_add(1, std::memory_order_relaxed) + 1;
  if (threshold > 0 && n >= threshold && !ejected(now_ms)) {
    ejected_until_ms_.store(now_ms + ejection_ms, std::memory_order_relaxed);
    consecutive_failures_.store(0, std::memory_order_relaxed);
    ejections_total.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void Host::setCheckResult(uint64_t at_ms, uint64_t latency_us, const std::string& detail) {
  last_check_ms_.store(at_ms, std::memory_order_relaxed);
  last_latency_us_.store(latency_us, std::memory_order_relaxed);
  std::lock_guard<std::mutex> lock(detail_mutex_);
  last_detail_ = detail;
}

std::string Host::lastCheckDetail() const {
  std::lock_guard<std::mutex> lock(detail_mutex_);
  return last_detail_;
}

bool Host::tryNextAddress(uint32_t index) {
  if (addrs_.size() < 2) return false;
  uint32_t expected = index;
  current_.compare_exchange_strong(expected, static_cast<uint32_t>((index + 1) % addrs_.size()),
                                   std::memory_order_relaxed);
  return true;
}

HostSharedPtr HostRegistry::get(const std::string& url, const std::string& host, uint16_t port,
                                const AddressList& addrs) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = hosts_.find(url);
  if (it != hosts_.end() && sameAddresses(it->second->addresses(), addrs)) return it->second;
  AddressList order = addrs;
  if (it != hosts_.end()) {
    // The address in use, if the name still has it, stays in use: new
    // connections go on where the old ones went.
    const sockaddr* in_use = it->second->address();
    for (size_t i = 0; i < order.size(); ++i) {
      if (memcmp(&order[i], in_use, sizeof order[i]) == 0) {
        std::rotate(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(i), order.end());
        break;
      }
    }
    replaced_.push_back(it->second);
  }
  auto h = std::make_shared<Host>(url, host, port, std::move(order));
  hosts_[url] = h;
  return h;
}

void HostRegistry::retainOnly(const std::vector<std::string>& urls) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& h : replaced_) h->retire();
  replaced_.clear();
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    if (std::find(urls.begin(), urls.end(), it->first) != urls.end()) {
      ++it;
    } else {
      it->second->retire();
      it = hosts_.erase(it);
    }
  }
}

uint32_t HostRegistry::clusterIndex(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = cluster_indexes_.find(name);
  if (it != cluster_indexes_.end()) return it->second;
  uint32_t idx = static_cast<uint32_t>(cluster_indexes_.size());
  cluster_indexes_[name] = idx;
  return idx;
}

Host* chooseHost(const ClusterInfo& cluster, uint64_t now_ms, const Host* exclude) {
  const auto& hosts = cluster.hosts;
  if (hosts.empty()) return nullptr;
  if (hosts.size() == 1) return hosts[0].get();
  // Candidates: available and not excluded; fall back step by step.
  Host* picks[2] = {nullptr, nullptr};
  size_t found = 0;
  size_t n = hosts.size();
  size_t start = static_cast<size_t>(random::next() % n);
  size_t step_seed = random::next();
  // Two random distinct probes over the available set: walk from two
  // random starting points.
  for (int pass = 0; pass < 2 && found < 2; ++pass) {
    size_t s = pass == 0 ? start : (start + 1 + step_seed % (n - 1)) % n;
    for (size_t i = 0; i < n; ++i) {
      Host* h = hosts[(s + i) % n].get();
      if (h == exclude || h == picks[0] || !h->available(now_ms)) continue;
      picks[found++] = h;
      break;
    }
  }
  if (found == 0) {
    // Nothing available: any host but the excluded one (panic routing).
    for (size_t i = 0; i < n; ++i) {
      Host* h = hosts[(start + i) % n].get();
      if (h != exclude) return h;
    }
    return hosts[start].get();
  }
  if (found == 1) return picks[0];
  return picks[0]->in_flight.load(std::memory_order_relaxed) <=
                 picks[1]->in_flight.load(std::memory_order_relaxed)
             ? picks[0]
             : picks[1];
}

}  // namespace eldric::upstream
