#pragma once

// What the connection manager and the filters know of the config a stream
// started with: the connection's limits and timers, and the route a request
// matched with the chain of filters that serves it. config/ (the layer
// above) compiles a Snapshot into a RuntimeConfig that implements these;
// http/ never sees the Snapshot itself.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/codec.h"
#include "dataplane/http/filter.h"

namespace eldric::http {

struct Route {
  std::string name;
  size_t stats_index = 0;  // into stats::WorkerStats' per-route series
  bool exact = false;
  std::string path;
  std::vector<std::string> methods;  // empty: any
  uint64_t timeout_ms = 0;           // 0: the config's request timeout
  uint64_t body_timeout_ms = 0;      // 0: the config's body timeout
  uint64_t max_body_bytes = 0;       // more than limits.max_body_kb allows (0: that)
  int required_scope = 0;            // edge::v1::Scope
  bool rate_limited = false;
  bool count_tokens = false;
  // Answered by an upstream (a router or a tunnel), not by the Edge
  // itself: the overload manager refuses these first.
  bool to_upstream = false;
  // The handler presents the client's key again (http::kClientCredential):
  // the tunnel's, which relays a forward to the member holding the tunnel.
  bool keeps_credential = false;
  // The registry name of the handler that answers (config::kRouterFilter,
  // "webchat", "session", ...).
  std::string_view handler;
  // The stream's filters in request order; the last one answers (the
  // router, a built-in handler). Built from the filter registry when the
  // config is compiled.
  std::vector<FilterFactory> filter_chain;

  std::string allowedMethods() const;
  bool allows(std::string_view method) const;
};

// The limits and timers of a client connection, from the snapshot's
// `limits`.
struct ConnectionSettings {
  CodecLimits codec_limits;
  uint64_t header_timeout_ms = 10000;
  uint64_t idle_timeout_ms = 60000;
  uint64_t request_timeout_ms = 600000;
  uint64_t drain_timeout_ms = 15000;
  uint64_t body_timeout_ms = 60000;
};

// A compiled config as a stream sees it. Immutable; a stream holds the one
// it started with until it ends, whatever reloads happen meanwhile.
class RouteConfig : public ConnectionSettings {
 public:
  virtual ~RouteConfig() = default;
  // The first route whose path matches. Sets `*wrong_method` when the
  // path matched a route that does not allow `method`.
  virtual const Route* match(std::string_view path, std::string_view method,
                             bool* wrong_method) const = 0;
  // ACME HTTP-01: the key authorization to answer for `token` on a
  // plaintext listener, or null.
  virtual const std::string* acmeKeyAuthorization(std::string_view token) const { return nullptr; }
};
using RouteConfigSharedPtr = std::shared_ptr<const RouteConfig>;

// What a connection keeps of the listener that accepted it.
struct ListenerInfo {
  std::string name;
  // This listener only redirects to HTTPS, on `redirect_port`.
  bool redirect_to_https = false;
  uint32_t redirect_port = 0;
  // Connections arrive over TLS.
  bool secure = false;
  // Strict-Transport-Security's value on every answer (empty: none).
  std::string hsts;
};

}  // namespace eldric::http
