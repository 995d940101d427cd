#pragma once

// A Snapshot compiled for the request path: TLS contexts loaded, routes in
// match order, clusters bound to their persistent hosts. Immutable once
// built; workers hold it by shared_ptr, so a request that started on one
// finishes on it even after a reload.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/config/filter_registry.h"
#include "dataplane/http/route.h"
#include "dataplane/tls/server_context.h"
#include "dataplane/upstream/dns_cache.h"
#include "dataplane/upstream/host.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::config {

// tunnel.max_answer_kb's default: the tunnel filter's
// TunnelLimits::max_answer_bytes (a unit test keeps the two equal).
inline constexpr uint64_t kDefaultTunnelAnswerBytes = 64u << 20;

struct CompiledRoute : http::Route {
  upstream::ClusterInfoSharedPtr cluster;  // proxy target, or null
  edge::v1::BuiltinHandler builtin = edge::v1::BUILTIN_HANDLER_UNSPECIFIED;
};

struct CompiledListener : http::ListenerInfo {
  std::string address;
  uint32_t port = 0;
  tls::ServerContextSharedPtr tls;  // null: plaintext
  // The certificates served, for /metrics (expiry) and /health.
  struct Certificate {
    std::string source;  // "file", "acme" or "stand-in"
    std::string subject;
    int64_t not_after = 0;  // Unix seconds; 0 when it did not parse
  };
  std::vector<Certificate> certificates;
  // tls.mode "acme" and no certificate issued yet: why (from Snapshot.acme).
  std::string acme_pending;
};

// Immutable once compile() returns it: nothing casts it back to mutable;
// what the process learns later (the ports it bound) goes into the next
// snapshot it compiles.
struct RuntimeConfig : http::RouteConfig {
  edge::v1::Snapshot snapshot;
  std::vector<CompiledListener> listeners;
  std::vector<upstream::ClusterInfoSharedPtr> clusters;
  std::vector<CompiledRoute> routes;
  uint32_t max_connections_per_worker = 0;  // 0: only the total applies
  uint32_t max_connections = 50000;
  uint32_t max_active_requests = 10000;
  uint64_t max_rss_bytes = 0;  // 0: off
  // Limits.handshake_budget in nanoseconds (Dispatcher::setExpensiveWorkBudget).
  uint64_t handshake_budget_ns = 1000000;
  // What filter entries compiled for the workers rather than for each
  // stream (the plugins each worker runs), under keys their owners
  // define; a worker reads them when it switches to this config. Filled
  // while compiling, through FilterFactoryContext::worker_settings.
  http::FilterState worker_settings;

  const std::string& version() const { return snapshot.version(); }
  const CompiledListener* listener(std::string_view name) const;
  const upstream::ClusterInfo* cluster(std::string_view name) const;
  const CompiledRoute* match(std::string_view path, std::string_view method,
                             bool* wrong_method) const override;
  const std::string* acmeKeyAuthorization(std::string_view token) const override;
  // Snapshot.acme's challenges: token -> key authorization.
  std::map<std::string, std::string, std::less<>> acme_challenges;
};
using RuntimeConfigSharedPtr = std::shared_ptr<const RuntimeConfig>;

// An endpoint's host (an IP literal or a name) and port to an address.
using Resolver = std::function<bool(const std::string& host, uint16_t port,
                                    upstream::AddressList* out, std::string* error)>;

// Compiles a snapshot. Returns null with `*error` set (naming the field or
// the source file) when the snapshot cannot be applied; the caller keeps
// its last good config. Endpoint names go through `resolve` (the server
// passes its DnsCache; the default looks each one up, blocking). Each
// route's filter chain comes from `filters` (kHttpFilters, then the
// route's terminal handler); without a registry routes get no chain (a
// config only inspected, as in tests).
RuntimeConfigSharedPtr compile(const edge::v1::Snapshot& snapshot, upstream::HostRegistry& hosts,
                               std::string* error, const Resolver& resolve = upstream::resolveNow,
                               const FilterRegistry* filters = nullptr);

}  // namespace eldric::config
