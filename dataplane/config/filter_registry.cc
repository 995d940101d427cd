#include "dataplane/config/filter_registry.h"

#include "dataplane/config/runtime_config.h"

namespace eldric::config {

void FilterRegistry::add(std::string name, FilterFactoryMaker maker) {
  for (auto& [n, m] : makers_) {
    if (n == name) {
      m = std::move(maker);
      return;
    }
  }
  makers_.emplace_back(std::move(name), std::move(maker));
}

const FilterFactoryMaker* FilterRegistry::find(std::string_view name) const {
  for (const auto& [n, m] : makers_) {
    if (n == name) return &m;
  }
  return nullptr;
}

std::string_view terminalFilterName(const CompiledRoute& route) {
  if (route.cluster) return kRouterFilter;
  switch (route.builtin) {
    case edge::v1::BUILTIN_HANDLER_ADMIN:
      return kAdminApiFilter;
    case edge::v1::BUILTIN_HANDLER_WEBCHAT:
      return kWebchatFilter;
    case edge::v1::BUILTIN_HANDLER_USAGE:
      return kUsageApiFilter;
    case edge::v1::BUILTIN_HANDLER_SESSION:
      return kSessionFilter;
    case edge::v1::BUILTIN_HANDLER_TUNNEL:
      return kTunnelFilter;
    default:
      return kBuiltinFilter;
  }
}

}  // namespace eldric::config
