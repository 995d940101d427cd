#pragma once

// The filter registry: every HTTP filter and every terminal handler (the
// router, the built-in endpoints, the admin API, the web chat) is made by a
// named entry here, and config::compile() builds each route's chain from
// it. The process registers its entries once at start (the data plane's
// assembly, dataplane/server/, is the only layer that knows them all); a
// new filter is one more entry, a plugin or a tunnel one more again.

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/http/filter.h"

namespace eldric::config {

struct RuntimeConfig;
struct CompiledRoute;

// What an entry makes its factory from: the config being compiled (its
// snapshot holds each filter's typed settings) and, for a terminal handler,
// the route it answers. Both outlive every stream that runs the factory's
// filters (a stream holds its config), so a factory may keep pointers to
// them.
struct FilterFactoryContext {
  const RuntimeConfig& config;
  const CompiledRoute* route = nullptr;  // null for kHttpFilters entries
  // The config's worker_settings, for an entry that leaves something for
  // the workers (kHttpFilters entries only; null for handlers).
  http::FilterState* worker_settings = nullptr;
};

// Makes the factory, once per compiled config (per route for a terminal
// handler). False with `*error` set refuses the whole config.
using FilterFactoryMaker = std::function<bool(const FilterFactoryContext& context,
                                              http::FilterFactory* out, std::string* error)>;

class FilterRegistry {
 public:
  // Registers `name`; a second entry with the same name replaces the first.
  void add(std::string name, FilterFactoryMaker maker);
  const FilterFactoryMaker* find(std::string_view name) const;

 private:
  std::vector<std::pair<std::string, FilterFactoryMaker>> makers_;
};

// The filters every route runs, in request order, before its terminal
// handler: the per-IP limit (before any work), who is calling, whether they
// may, and what they use.
// Plugins see who is calling, before the usage filter: what their inlets
// make of a request is what the key's model list and token counts apply
// to (a pipe checks the model list itself), and on the way back the usage
// filter counts what the upstream sent before their stream hooks rewrite
// it. (They must also come first for the manager: they hold a request's
// headers until its body is complete, and the usage filter buffers bodies.)
// The tool loop comes last: it asks the route's handler itself, round by
// round, and what it passes on is the final answer, counted whole by the
// usage filter.
inline constexpr std::string_view kHttpFilters[] = {"ratelimit.ip", "auth",  "ratelimit",
                                                    "plugins",      "usage", "tools"};

// Terminal handlers, by what a route's action names.
inline constexpr std::string_view kRouterFilter = "router";       // a cluster
inline constexpr std::string_view kAdminApiFilter = "admin_api";  // BUILTIN_HANDLER_ADMIN
inline constexpr std::string_view kWebchatFilter = "webchat";     // BUILTIN_HANDLER_WEBCHAT
inline constexpr std::string_view kUsageApiFilter = "usage_api";  // BUILTIN_HANDLER_USAGE
inline constexpr std::string_view kSessionFilter = "session";     // BUILTIN_HANDLER_SESSION
inline constexpr std::string_view kTunnelFilter = "tunnel";       // BUILTIN_HANDLER_TUNNEL
inline constexpr std::string_view kBuiltinFilter = "builtin";     // every other built-in

// The terminal handler's entry for `route`.
std::string_view terminalFilterName(const CompiledRoute& route);

}  // namespace eldric::config
