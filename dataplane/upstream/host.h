#pragma once

// Upstream endpoints and clusters. A Host outlives snapshots: it is looked
// up by URL when a new snapshot is compiled, so health, ejection and
// in-flight counts carry across reloads. Hosts are shared by every worker;
// their mutable state is atomics only (no lock on the request path).

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/upstream/dns_cache.h"

namespace eldric::upstream {

class Host {
 public:
  // `addrs` is not empty.
  Host(std::string url, std::string host, uint16_t port, AddressList addrs)
      : url_(std::move(url)), hostname_(std::move(host)), port_(port), addrs_(std::move(addrs)) {}

  const std::string& url() const { return url_; }
  const std::string& hostname() const { return hostname_; }
  uint16_t port() const { return port_; }
  // The address new connections go to, and its index for tryNextAddress().
  // A name may have several (localhost is ::1 and 127.0.0.1): the host
  // stays on one while it answers, like a browser's last good address.
  uint32_t addressIndex() const { return current_.load(std::memory_order_relaxed); }
  const sockaddr* address(uint32_t index) const {
    return reinterpret_cast<const sockaddr*>(&addrs_[index % addrs_.size()]);
  }
  const sockaddr* address() const { return address(addressIndex()); }
  const AddressList& addresses() const { return addrs_; }
  // A connection to address `index` could not be made: new connections go
  // to the next address (unless another caller moved on already). Returns
  // false when the host has no other address to try.
  bool tryNextAddress(uint32_t index);
  // "router1:8881" for the Host header.
  std::string authority() const { return hostname_ + ":" + std::to_string(port_); }

  // Usable for new requests: healthy by active checks and not ejected.
  bool available(uint64_t now_ms) const {
    return healthy_.load(std::memory_order_relaxed) &&
           ejected_until_ms_.load(std::memory_order_relaxed) <= now_ms;
  }
  bool healthy() const { return healthy_.load(std::memory_order_relaxed); }
  bool ejected(uint64_t now_ms) const {
    return ejected_until_ms_.load(std::memory_order_relaxed) > now_ms;
  }

  // Passive outlier detection, called by workers.
  void recordSuccess() { consecutive_failures_.store(0, std::memory_order_relaxed); }
  // Returns true if this failure ejected the host.
  bool recordFailure(uint64_t now_ms, uint32_t threshold, uint64_t ejection_ms);

  // Active health checking, called by the health checker only.
  void setHealthy(bool h) { healthy_.store(h, std::memory_order_relaxed); }
  void setCheckResult(uint64_t at_ms, uint64_t latency_us, const std::string& detail);
  uint64_t lastCheckMs() const { return last_check_ms_.load(std::memory_order_relaxed); }
  uint64_t lastLatencyUs() const { return last_latency_us_.load(std::memory_order_relaxed); }
  std::string lastCheckDetail() const;
  uint32_t checkFailures = 0;  // health checker's own counters (its thread)
  uint32_t checkSuccesses = 0;

  // Replaced (its URL now resolves elsewhere) or no longer configured:
  // pools close their connections to it instead of keeping them.
  bool retired() const { return retired_.load(std::memory_order_relaxed); }
  void retire() { retired_.store(true, std::memory_order_relaxed); }

  std::atomic<int64_t> in_flight{0};
  std::atomic<uint64_t> requests_total{0};
  std::atomic<uint64_t> failures_total{0};
  std::atomic<uint64_t> ejections_total{0};

 private:
  const std::string url_;
  const std::string hostname_;
  const uint16_t port_;
  const AddressList addrs_;
  std::atomic<uint32_t> current_{0};
  std::atomic<bool> healthy_{true};
  std::atomic<bool> retired_{false};
  std::atomic<uint64_t> ejected_until_ms_{0};
  std::atomic<uint32_t> consecutive_failures_{0};
  std::atomic<uint64_t> last_check_ms_{0};
  std::atomic<uint64_t> last_latency_us_{0};
  mutable std::mutex detail_mutex_;  // off the request path
  std::string last_detail_;
};
using HostSharedPtr = std::shared_ptr<Host>;

struct ClusterInfo {
  std::string name;
  // Stable across reloads while the name stays: indexes per-worker pools.
  uint32_t index = 0;
  std::vector<HostSharedPtr> hosts;
  uint64_t connect_timeout_ms = 2000;
  std::string health_path;
  uint64_t health_interval_ms = 5000;
  uint64_t health_timeout_ms = 2000;
  uint32_t unhealthy_threshold = 2;
  uint32_t healthy_threshold = 1;
  uint32_t outlier_consecutive_failures = 3;
  uint64_t outlier_ejection_ms = 10000;
  uint32_t max_idle_per_host = 64;
  uint64_t idle_connection_timeout_ms = 60000;
  uint32_t max_retries = 1;
  uint64_t dns_refresh_ms = 5000;
};
using ClusterInfoSharedPtr = std::shared_ptr<const ClusterInfo>;

// Owned by the main thread: keeps Host objects alive across snapshots so
// their state survives a reload. Lookups happen only while compiling.
class HostRegistry {
 public:
  // Returns the existing host for `url` if its addresses are unchanged,
  // else a new one (the old one is retired by the next retainOnly()), whose
  // first address is the old one's address in use if it still has it.
  HostSharedPtr get(const std::string& url, const std::string& host, uint16_t port,
                    const AddressList& addrs);
  // At the end of a compile that succeeded: the hosts it replaced, and those
  // whose URL it did not name, are retired; the latter are forgotten. (A
  // compile that fails retires nothing: the running config keeps its hosts.)
  void retainOnly(const std::vector<std::string>& urls);
  uint32_t clusterIndex(const std::string& name);
  uint32_t clusterCount() const { return static_cast<uint32_t>(cluster_indexes_.size()); }

 private:
  std::mutex mutex_;
  std::unordered_map<std::string, HostSharedPtr> hosts_;
  std::vector<HostSharedPtr> replaced_;  // by get(), until retainOnly()
  std::unordered_map<std::string, uint32_t> cluster_indexes_;
};

// Picks a host: power of two random choices among available hosts, the one
// with fewer requests in flight wins. With no available host, chooses among
// all (better a likely failure than a certain one). `exclude` skips a host
// already tried by this request. Returns nullptr only for an empty cluster.
Host* chooseHost(const ClusterInfo& cluster, uint64_t now_ms, const Host* exclude);

}  // namespace eldric::upstream
