#include "controlplane/core/store_validation.h"

#include <cstdint>
#include <string>

#include "common/json.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace eldric::controlplane::internal {

namespace {

constexpr size_t kMaxNameLen = 64;
constexpr size_t kMaxModelNameLen = 256;
constexpr Scopes kAllScopes =
    static_cast<Scopes>(Scope::Inference) | static_cast<Scopes>(Scope::Admin) |
    static_cast<Scopes>(Scope::Worker) | static_cast<Scopes>(Scope::Router);
const char kNameRule[] = "name must be 1-64 characters of letters, digits, '.', '_' or '-'";

}  // namespace

bool validName(const std::string& name) {
  if (name.empty() || name.size() > kMaxNameLen) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// True for strings shaped like a client id. getClient() and friends accept
// an id or a name, so a name of this shape could shadow another client's id.
bool looksLikeClientId(const std::string& s) {
  if (s.size() != 19 || s.compare(0, 3, "cl_") != 0) return false;
  for (size_t i = 3; i < s.size(); ++i) {
    char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool validateName(const std::string& name, std::string* error) {
  if (!validName(name)) {
    *error = kNameRule;
    return false;
  }
  if (looksLikeClientId(name)) {
    *error = "name must not have the form of a client id (\"cl_\" + 16 hex digits)";
    return false;
  }
  return true;
}

// Counts code points of well-formed UTF-8 (no overlong forms, surrogates or
// values above U+10FFFF); nullopt when malformed. Descriptions are returned
// in JSON by the API, which needs valid UTF-8.
std::optional<size_t> utf8Length(const std::string& s) {
  size_t count = 0;
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t extra;
    uint32_t cp;
    if (c < 0x80) {
      extra = 0;
      cp = c;
    } else if (c >= 0xc2 && c <= 0xdf) {
      extra = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      extra = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return std::nullopt;
    }
    if (i + extra >= s.size()) return std::nullopt;  // truncated sequence
    for (size_t k = 1; k <= extra; ++k) {
      unsigned char cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return std::nullopt;
      cp = (cp << 6) | (cc & 0x3f);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) || cp > 0x10ffff ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
      return std::nullopt;
    }
    i += extra + 1;
    ++count;
  }
  return count;
}

bool validateScopes(Scopes scopes, std::string* error) {
  if (scopes == 0 || (scopes & ~kAllScopes) != 0) {
    *error = "scopes must be a non-empty combination of inference, admin, worker and router";
    return false;
  }
  return true;
}

bool validateLimits(const ClientLimits& limits, std::string* error) {
  for (const std::string& m : limits.allowed_models) {
    // Models are stored newline separated; control characters would also
    // be unreadable in listings.
    bool ok = !m.empty() && m.size() <= kMaxModelNameLen;
    for (char c : m) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ok = false;
    }
    if (!ok) {
      *error = "allowed model names must be 1-256 characters without control characters";
      return false;
    }
  }
  if (limits.tools.size() > 64) {
    *error = "a client may name at most 64 tools";
    return false;
  }
  for (const std::string& t : limits.tools) {
    // Plugin ids and function names: what the data plane compares them to.
    bool ok = !t.empty() && t.size() <= 128;
    for (char c : t) {
      if (!isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') ok = false;
    }
    if (!ok) {
      *error = "tools must be plugin ids or function names: 1-128 letters, digits, '.', '_' or '-'";
      return false;
    }
  }
  return true;
}

constexpr size_t kMaxValvesBytes = 64 * 1024;
constexpr size_t kMaxPluginTypeLen = 32;

bool validatePlugin(const PluginRecord& p, std::string* error) {
  if (!validName(p.id)) {
    *error = "plugin id must be 1-64 characters of letters, digits, '.', '_' or '-'";
    return false;
  }
  if (p.id == "ui") {
    // GET /api/v1/plugins/ui is the web chat's list of actions and widgets.
    *error = "plugin id \"ui\" is reserved";
    return false;
  }
  std::optional<size_t> name_len = utf8Length(p.name);
  if (!name_len || *name_len > kMaxNameLen) {
    *error = "plugin name must be at most 64 characters of valid UTF-8";
    return false;
  }
  bool type_ok = !p.type.empty() && p.type.size() <= kMaxPluginTypeLen;
  for (char c : p.type) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) type_ok = false;
  }
  if (!type_ok) {
    *error = "plugin type must be 1-32 printable characters without spaces";
    return false;
  }
  return true;
}

// Checks that `json` is one JSON object and returns it compact, so that the
// stored text (and any snapshot built from it) does not depend on spacing.
bool canonicalValves(const std::string& json, std::string* out, std::string* error) {
  if (json.size() > kMaxValvesBytes) {
    *error = "valves must be at most 65536 bytes of JSON";
    return false;
  }
  // Strict JSON (no comments), valid UTF-8, one value and nothing after it.
  rapidjson::Document doc;
  std::string jerr;
  if (!json::parse(doc, json, &jerr)) {
    *error = "valves are " + jerr;
    return false;
  }
  if (!doc.IsObject()) {
    *error = "valves must be a JSON object";
    return false;
  }
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  out->assign(sb.GetString(), sb.GetSize());
  return true;
}

}  // namespace eldric::controlplane::internal
