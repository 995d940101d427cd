#pragma once

// What the Store accepts: names, descriptions, scopes, limits, plugins and
// their valves (internal to controlplane/core).

#include <cstddef>
#include <optional>
#include <string>

#include "controlplane/core/store.h"

namespace eldric::controlplane::internal {

constexpr size_t kMaxDescriptionChars = 500;
constexpr size_t kMaxConfigKeyLen = 1024;

bool validateName(const std::string& name, std::string* error);
// The length in code points; nullopt if `s` is not valid UTF-8.
std::optional<size_t> utf8Length(const std::string& s);
bool validateScopes(Scopes scopes, std::string* error);
bool validateLimits(const ClientLimits& limits, std::string* error);
bool validatePlugin(const PluginRecord& p, std::string* error);
// `json` (a JSON object, bounded in size) re-serialized compactly.
bool canonicalValves(const std::string& json, std::string* out, std::string* error);

}  // namespace eldric::controlplane::internal
