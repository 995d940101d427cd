#pragma once

// A Snapshot compiled for the request path: TLS contexts loaded, routes in
// match order, clusters bound to their persistent hosts. Immutable once
// built; workers hold it by shared_ptr, so a request that started on one
// finishes on it even after a reload.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/codec.h"
#include "dataplane/http/filter.h"
#include "dataplane/tls/server_context.h"
#include "dataplane/upstream/dns_cache.h"
#include "dataplane/upstream/host.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::config {

struct CompiledRoute {
  std::string name;
  size_t stats_index = 0;
  bool exact = false;
  std::string path;
  std::vector<std::string> methods;  // empty: any
  upstream::ClusterInfoSharedPtr cluster;  // proxy target, or null
  edge::v1::BuiltinHandler builtin = edge::v1::BUILTIN_HANDLER_UNSPECIFIED;
  uint64_t timeout_ms = 0;
  int required_scope = 0;  // edge::v1::Scope
  bool rate_limited = false;
  bool count_tokens = false;
  std::string allowedMethods() const;
  bool allows(std::string_view method) const;
};

struct CompiledListener {
  std::string name;
  std::string address;
  uint32_t port = 0;
  edge::v1::Listener::Role role = edge::v1::Listener::ROLE_SERVE;
  uint32_t redirect_port = 0;
  tls::ServerContextSharedPtr tls;  // null: plaintext
};

struct RuntimeConfig {
  edge::v1::Snapshot snapshot;
  std::vector<CompiledListener> listeners;
  std::vector<upstream::ClusterInfoSharedPtr> clusters;
  std::vector<CompiledRoute> routes;
  http::CodecLimits codec_limits;
  uint64_t header_timeout_ms = 10000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t request_timeout_ms = 600000;
  uint64_t drain_timeout_ms = 15000;
  uint64_t body_timeout_ms = 60000;
  uint32_t max_connections_per_worker = 0;  // 0: only the total applies
  uint32_t max_connections = 50000;
  uint32_t max_active_requests = 10000;
  uint64_t max_rss_bytes = 0;  // 0: off
  // HTTP filters run before a route's terminal action, in order.
  std::vector<http::FilterFactory> filter_factories;

  const std::string& version() const { return snapshot.version(); }
  const CompiledListener* listener(std::string_view name) const;
  const upstream::ClusterInfo* cluster(std::string_view name) const;
  // The first route whose path matches. Sets `*wrong_method` when the
  // path matched a route that does not allow `method`.
  const CompiledRoute* match(std::string_view path, std::string_view method, bool* wrong_method) const;
};
using RuntimeConfigSharedPtr = std::shared_ptr<const RuntimeConfig>;

// An endpoint's host (an IP literal or a name) and port to an address.
using Resolver = std::function<bool(const std::string& host, uint16_t port, upstream::AddressList* out, std::string* error)>;

// Compiles a snapshot. Returns null with `*error` set (naming the field or
// the source file) when the snapshot cannot be applied; the caller keeps
// its last good config. Endpoint names go through `resolve` (the server
// passes its DnsCache; the default looks each one up, blocking).
RuntimeConfigSharedPtr compile(const edge::v1::Snapshot& snapshot, upstream::HostRegistry& hosts,
                               std::string* error, const Resolver& resolve = upstream::resolveNow);

}  // namespace eldric::config
