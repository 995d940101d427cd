#include "controlplane/core/admin_rest.h"

#include <time.h>

#include <cstring>
#include <set>

#include "common/json.h"
#include "rapidjson/document.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace eldric::controlplane {
namespace {

// Whether `path` is `base` or below it ("/api/v1/clients", ".../x/rotate");
// `*rest` is what follows `base`, without a trailing slash.
bool subPath(const std::string& path, const char* base, std::string* rest) {
  size_t n = strlen(base);
  if (path.compare(0, n, base) != 0 || (path.size() > n && path[n] != '/')) return false;
  *rest = path.substr(n);
  if (!rest->empty() && rest->back() == '/') rest->pop_back();
  return true;
}

// A sub-path's "/{id}" or "/{id}/{action}".
void splitIdAction(const std::string& rest, std::string* id, std::string* action) {
  *id = rest.substr(1);
  action->clear();
  if (size_t slash = id->find('/'); slash != std::string::npos) {
    *action = id->substr(slash + 1);
    id->resize(slash);
  }
}

using Writer = rapidjson::Writer<rapidjson::StringBuffer>;

RestReply error(int status, std::string message, std::string code) {
  return RestReply{status, std::move(message), std::move(code)};
}

// 200 with an OpenAI-style list: {"object":"list","data":[...]}, the items
// written by `items(w)`.
template <typename WriteItems>
RestReply listReply(WriteItems&& items) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  w.StartObject();
  w.Key("object");
  w.String("list");
  w.Key("data");
  w.StartArray();
  items(w);
  w.EndArray();
  w.EndObject();
  return RestReply{200, std::string(sb.GetString(), sb.GetSize()), ""};
}

void timeOrNull(Writer& w, int64_t t) {
  if (t) {
    w.Int64(t);
  } else {
    w.Null();
  }
}

void writeClient(Writer& w, const ClientRecord& c, const AdminContext& ctx,
                 const std::string* api_key, const int64_t* overlap) {
  w.StartObject();
  w.Key("id");
  w.String(c.id.c_str());
  w.Key("name");
  w.String(c.name.c_str());
  w.Key("description");
  w.String(c.description.c_str());
  w.Key("source");
  w.String(c.source.c_str());
  w.Key("scopes");
  w.StartArray();
  for (const char* sc : {"inference", "admin", "worker", "router"}) {
    Scopes bit = 0;
    parseScopes(sc, &bit);
    if (c.scopes & bit) w.String(sc);
  }
  w.EndArray();
  w.Key("limits");
  w.StartObject();
  w.Key("rpm");
  w.Uint(c.limits.rpm);
  w.Key("tpm");
  w.Uint(c.limits.tpm);
  w.Key("max_concurrent");
  w.Uint(c.limits.max_concurrent);
  w.Key("allowed_models");
  w.StartArray();
  for (const auto& m : c.limits.allowed_models) w.String(m.c_str());
  w.EndArray();
  w.Key("tools");
  w.StartArray();
  for (const auto& t : c.limits.tools) w.String(t.c_str());
  w.EndArray();
  w.EndObject();
  w.Key("created_at");
  w.Int64(c.created_at);
  w.Key("expires_at");
  timeOrNull(w, c.expires_at);
  w.Key("revoked_at");
  timeOrNull(w, c.revoked_at);
  // Prefixes only: a full key is shown once, at registration or rotation.
  w.Key("keys");
  w.StartArray();
  for (const auto& k : c.keys) {
    w.StartObject();
    w.Key("prefix");
    w.String(k.prefix.c_str());
    w.Key("created_at");
    w.Int64(k.created_at);
    w.Key("expires_at");
    timeOrNull(w, k.expires_at);
    w.Key("revoked_at");
    timeOrNull(w, k.revoked_at);
    w.EndObject();
  }
  w.EndArray();
  if (ctx.usage_json) {
    std::string usage = ctx.usage_json(c.id);
    if (!usage.empty()) {
      w.Key("usage");
      w.RawValue(usage.c_str(), usage.size(), rapidjson::kObjectType);
    }
  }
  if (api_key) {
    w.Key("api_key");
    w.String(api_key->c_str());
  }
  if (overlap) {
    w.Key("previous_keys_valid_for_seconds");
    w.Int64(*overlap);
  }
  w.EndObject();
}

std::string clientJson(const ClientRecord& c, const AdminContext& ctx,
                       const std::string* api_key = nullptr, const int64_t* overlap = nullptr) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  writeClient(w, c, ctx, api_key, overlap);
  return std::string(sb.GetString(), sb.GetSize());
}

// Clients defined by the config file, as records (read-only).
std::vector<ClientRecord> configClients(const AdminContext& ctx, const std::string& only = "") {
  std::vector<ClientRecord> out;
  if (!ctx.config_auth) return out;
  std::set<std::string> seen;
  for (const auto& k : ctx.config_auth->api_keys()) {
    if (!only.empty() && k.client_id() != only && k.client_name() != only) continue;
    if (!seen.insert(k.client_name()).second) continue;
    ClientRecord c;
    c.id = k.client_id();
    c.name = k.client_name();
    c.source = "config";
    c.scopes = 0;
    for (int sc : k.scopes()) {
      c.scopes |= sc == edge::v1::SCOPE_ADMIN    ? static_cast<Scopes>(Scope::Admin)
                  : sc == edge::v1::SCOPE_WORKER ? static_cast<Scopes>(Scope::Worker)
                                                 : static_cast<Scopes>(Scope::Inference);
    }
    c.limits.rpm = k.requests_per_minute();
    c.limits.tpm = k.tokens_per_minute();
    c.limits.max_concurrent = k.max_concurrent_requests();
    c.limits.allowed_models.assign(k.allowed_models().begin(), k.allowed_models().end());
    c.limits.tools.assign(k.tools().begin(), k.tools().end());
    KeyRecord kr;
    kr.prefix = k.prefix();
    c.keys.push_back(kr);
    out.push_back(std::move(c));
  }
  return out;
}

bool isConfigClient(const AdminContext& ctx, const std::string& id) {
  return !configClients(ctx, id).empty();
}

bool readUint(const rapidjson::Value& doc, const char* name, uint32_t* out, std::string* err) {
  if (!doc.HasMember(name)) return true;
  if (!doc[name].IsUint()) {
    *err = std::string("\"") + name + "\" must be a non-negative integer";
    return false;
  }
  *out = doc[name].GetUint();
  return true;
}

RestReply registerClient(const AdminContext& ctx, const rapidjson::Document& doc, bool* changed) {
  if (!doc.HasMember("name") || !doc["name"].IsString())
    return error(400, "missing \"name\" (a string)", "missing_name");
  std::string name = doc["name"].GetString();
  std::string description;
  if (doc.HasMember("description")) {
    if (!doc["description"].IsString())
      return error(400, "\"description\" must be a string", "invalid_field");
    description = doc["description"].GetString();
  }
  Scopes scopes = static_cast<Scopes>(Scope::Inference);
  if (doc.HasMember("scopes")) {
    if (!doc["scopes"].IsArray())
      return error(400, "\"scopes\" must be an array of strings", "invalid_field");
    scopes = 0;
    for (const auto& v : doc["scopes"].GetArray()) {
      Scopes one = 0;
      if (!v.IsString() || !parseScopes(v.GetString(), &one)) {
        return error(400, "unknown scope in \"scopes\" (inference, admin, worker)",
                     "invalid_scope");
      }
      scopes |= one;
    }
  }
  ClientLimits limits;
  std::string err;
  if (!readUint(doc, "rpm", &limits.rpm, &err) || !readUint(doc, "tpm", &limits.tpm, &err) ||
      !readUint(doc, "max_concurrent", &limits.max_concurrent, &err)) {
    return error(400, err, "invalid_field");
  }
  if (doc.HasMember("allowed_models")) {
    if (!doc["allowed_models"].IsArray())
      return error(400, "\"allowed_models\" must be an array", "invalid_field");
    for (const auto& v : doc["allowed_models"].GetArray()) {
      if (!v.IsString()) return error(400, "\"allowed_models\" must hold strings", "invalid_field");
      limits.allowed_models.push_back(v.GetString());
    }
  }
  if (doc.HasMember("tools")) {
    if (!doc["tools"].IsArray()) return error(400, "\"tools\" must be an array", "invalid_field");
    for (const auto& v : doc["tools"].GetArray()) {
      if (!v.IsString()) return error(400, "\"tools\" must hold strings", "invalid_field");
      limits.tools.push_back(v.GetString());
    }
  }
  int64_t expires_at = 0;
  if (doc.HasMember("expires_in_seconds")) {
    if (!doc["expires_in_seconds"].IsUint64() || doc["expires_in_seconds"].GetUint64() == 0) {
      return error(400, "\"expires_in_seconds\" must be a positive integer", "invalid_field");
    }
    expires_at = static_cast<int64_t>(time(nullptr)) +
                 static_cast<int64_t>(doc["expires_in_seconds"].GetUint64());
  }
  if (isConfigClient(ctx, name)) {
    return error(400, "a client named \"" + name + "\" already exists (in the config file)",
                 "duplicate_name");
  }
  IssuedKey issued;
  bool conflict = false;
  if (!ctx.store->registerClient(name, description, scopes, limits, expires_at, &issued, &err,
                                 &conflict)) {
    return error(400, err, conflict ? "duplicate_name" : "invalid_client");
  }
  *changed = true;
  return RestReply{200, clientJson(issued.client, ctx, &issued.key), ""};
}

}  // namespace

RestReply handleClientsRest(const AdminContext& ctx, const std::string& method,
                            const std::string& path, const std::string& body, bool* changed) {
  *changed = false;
  std::string rest;
  if (!subPath(path, "/api/v1/clients", &rest))
    return error(404, "no route for " + path, "not_found");
  rapidjson::Document doc;
  auto parseBody = [&](bool required) -> bool {
    if (body.empty() && !required) {
      doc.SetObject();
      return true;
    }
    return json::parse(doc, body, nullptr) && doc.IsObject();
  };

  if (rest.empty()) {
    if (method != "GET")
      return error(405, "use GET to list clients or POST /api/v1/clients/register",
                   "method_not_allowed");
    return listReply([&](Writer& w) {
      for (const auto& c : configClients(ctx)) writeClient(w, c, ctx, nullptr, nullptr);
      for (const auto& c : ctx.store->listClients()) writeClient(w, c, ctx, nullptr, nullptr);
    });
  }
  if (rest == "/register") {
    if (method != "POST") return error(405, "use POST to register a client", "method_not_allowed");
    if (!parseBody(true)) return error(400, "request body is not a JSON object", "invalid_json");
    return registerClient(ctx, doc, changed);
  }
  // /{id} and /{id}/rotate
  std::string id, action;
  splitIdAction(rest, &id, &action);
  bool from_config = isConfigClient(ctx, id);
  if (action.empty() && method == "GET") {
    if (auto c = ctx.store->getClient(id)) return RestReply{200, clientJson(*c, ctx), ""};
    auto cfg = configClients(ctx, id);
    if (!cfg.empty()) return RestReply{200, clientJson(cfg[0], ctx), ""};
    return error(404, "no client \"" + id + "\"", "client_not_found");
  }
  if (from_config) {
    return error(400, "client \"" + id + "\" is defined in the config file; change it there",
                 "config_client");
  }
  std::string err;
  if (action.empty() && method == "DELETE") {
    if (!ctx.store->revokeClient(id, &err)) {
      return error(404, err.empty() ? "no client \"" + id + "\"" : err, "client_not_found");
    }
    *changed = true;
    rapidjson::StringBuffer sb;
    Writer w(sb);
    w.StartObject();
    w.Key("id");
    w.String(id.c_str());
    w.Key("revoked");
    w.Bool(true);
    w.EndObject();
    return RestReply{200, std::string(sb.GetString(), sb.GetSize()), ""};
  }
  if (action == "rotate" && method == "POST") {
    if (!parseBody(false)) return error(400, "request body is not a JSON object", "invalid_json");
    int64_t overlap = ctx.rotation_overlap_seconds;
    if (doc.HasMember("overlap_seconds")) {
      if (!doc["overlap_seconds"].IsUint64()) {
        return error(400, "\"overlap_seconds\" must be a non-negative integer", "invalid_field");
      }
      overlap = static_cast<int64_t>(doc["overlap_seconds"].GetUint64());
    }
    IssuedKey issued;
    if (!ctx.store->rotateKey(id, overlap, &issued, &err)) {
      return error(404, err.empty() ? "no client \"" + id + "\"" : err, "client_not_found");
    }
    *changed = true;
    return RestReply{200, clientJson(issued.client, ctx, &issued.key, &overlap), ""};
  }
  return error(405, "unsupported: " + method + " " + path, "method_not_allowed");
}

// ---------------------------------------------------------------------------
// Plugins.

namespace {

void writePlugin(Writer& w, const PluginRecord& p, const std::string& runtime = {}) {
  w.StartObject();
  w.Key("id");
  w.String(p.id.c_str());
  w.Key("object");
  w.String("plugin");
  w.Key("name");
  w.String(p.name.c_str());
  w.Key("type");
  w.String(p.type.c_str());
  w.Key("enabled");
  w.Bool(p.enabled);
  w.Key("created_at");
  w.Int64(p.created_at);
  w.Key("updated_at");
  w.Int64(p.updated_at);
  // What the running plugin says (status, restarts, pipe models).
  if (!runtime.empty()) {
    w.Key("runtime");
    w.RawValue(runtime.data(), runtime.size(), rapidjson::kObjectType);
  }
  // Valves are not listed: they may hold secrets and have their own
  // endpoint.
  w.EndObject();
}

std::string pluginRuntime(const AdminContext& ctx, const std::string& id, bool detailed) {
  return ctx.plugin_runtime ? ctx.plugin_runtime(id, detailed) : std::string();
}

std::string pluginJson(const PluginRecord& p, const std::string& runtime = {}) {
  rapidjson::StringBuffer sb;
  Writer w(sb);
  writePlugin(w, p, runtime);
  return std::string(sb.GetString(), sb.GetSize());
}

RestReply pluginNotFound(const std::string& id) {
  return error(404, "no plugin \"" + id + "\"", "plugin_not_found");
}

RestReply storeFailure(const std::string& err, int client_status, const char* client_code) {
  // The Store names database failures "database error in ..."; anything
  // else it refuses is the caller's input.
  if (err.rfind("database error", 0) == 0) return error(500, err, "store_error");
  return error(client_status, err, client_code);
}

}  // namespace

RestReply handlePluginsRest(const AdminContext& ctx, const std::string& method,
                            const std::string& path, const std::string& body, bool* changed) {
  *changed = false;
  std::string rest;
  if (!subPath(path, "/api/v1/plugins", &rest))
    return error(404, "no route for " + path, "not_found");

  if (rest.empty()) {
    if (method != "GET") return error(405, "use GET to list plugins", "method_not_allowed");
    return listReply([&](Writer& w) {
      for (const auto& p : ctx.store->listPlugins())
        writePlugin(w, p, pluginRuntime(ctx, p.id, false));
    });
  }
  // /{id} and /{id}/{action}
  std::string id, action;
  splitIdAction(rest, &id, &action);
  if (!action.empty() && action != "enable" && action != "disable" && action != "valves") {
    return error(404, "no route for " + path + " (plugins have enable, disable and valves)",
                 "not_found");
  }
  std::optional<PluginRecord> plugin = ctx.store->getPlugin(id);
  if (!plugin) return pluginNotFound(id);

  if (action.empty()) {
    if (method != "GET") return error(405, "use GET on a plugin", "method_not_allowed");
    return RestReply{200, pluginJson(*plugin, pluginRuntime(ctx, id, true)), ""};
  }
  std::string err;
  bool not_found = false;
  if (action == "enable" || action == "disable") {
    if (method != "POST")
      return error(405, "use POST to " + action + " a plugin", "method_not_allowed");
    bool enable = action == "enable";
    PluginRecord out;
    if (!ctx.store->setPluginEnabled(id, enable, &out, &err, &not_found)) {
      return not_found ? pluginNotFound(id) : storeFailure(err, 400, "invalid_plugin");
    }
    *changed = plugin->enabled != enable;
    return RestReply{200, pluginJson(out), ""};
  }
  // valves: the plugin's settings, a JSON object, answered as that object.
  if (method == "GET") return RestReply{200, plugin->valves_json, ""};
  if (method != "PUT")
    return error(405, "use GET or PUT on a plugin's valves", "method_not_allowed");
  rapidjson::Document doc;
  std::string jerr;
  // The parse error and where, never the text: valves may hold secrets.
  if (!json::parse(doc, body, &jerr)) return error(400, "request body is " + jerr, "invalid_json");
  if (!doc.IsObject()) return error(400, "valves must be a JSON object", "invalid_valves");
  std::string field;
  if (ctx.check_valves && !ctx.check_valves(id, body, &err, &field)) {
    return error(400, err, "invalid_valves");
  }
  PluginRecord out;
  if (!ctx.store->setPluginValves(id, body, &out, &err, &not_found)) {
    return not_found ? pluginNotFound(id) : storeFailure(err, 400, "invalid_valves");
  }
  *changed = out.valves_json != plugin->valves_json;
  return RestReply{200, out.valves_json, ""};
}

// ---------------------------------------------------------------------------
// The farm.

RestReply handleCertificatesRest(const AdminContext& ctx, const std::string& method,
                                 const std::string& path) {
  std::string rest;
  if (!subPath(path, "/api/v1/certificates", &rest))
    return error(404, "no route for " + path, "not_found");
  if (rest.empty()) {
    if (method != "GET") return error(405, "use GET on /api/v1/certificates", "method_not_allowed");
    return RestReply{200,
                     "{\"object\":\"list\",\"data\":" +
                         (ctx.certificates_json ? ctx.certificates_json() : std::string("[]")) +
                         "}",
                     ""};
  }
  if (rest != "/renew") return error(404, "no route for " + path, "not_found");
  if (method != "POST")
    return error(405, "use POST on /api/v1/certificates/renew", "method_not_allowed");
  if (!ctx.renew_certificates)
    return error(409, "no certificate here is ordered by ACME (tls.mode is not \"acme\")",
                 "no_acme");
  std::string why;
  if (!ctx.renew_certificates(&why)) return error(409, why, "order_in_progress");
  return RestReply{202,
                   "{\"renewing\":true,\"message\":\"a new order has started; GET "
                   "/api/v1/certificates shows its outcome\"}",
                   ""};
}

RestReply handleFarmRest(const AdminContext& ctx, const std::string& method,
                         const std::string& path) {
  std::string rest;
  if (!subPath(path, "/api/v1/farm", &rest) || !rest.empty())
    return error(404, "no route for " + path, "not_found");
  if (method != "GET") return error(405, "use GET on /api/v1/farm", "method_not_allowed");
  edge::v1::FarmStatus status;
  if (ctx.farm_status) ctx.farm_status(&status);
  const bool single = ctx.mode != "farm";
  rapidjson::StringBuffer sb;
  Writer w(sb);
  auto stringOrNull = [&w](const std::string& s) {
    if (s.empty()) {
      w.Null();
    } else {
      w.String(s.c_str());
    }
  };
  w.StartObject();
  w.Key("object");
  w.String("farm");
  w.Key("mode");
  w.String(single ? "single" : "farm");
  if (single) {
    w.Key("message");
    w.String(
        "a standalone Edge: no control plane, no other members; this instance is the only one");
  }
  w.Key("current_version");
  stringOrNull(status.current_version());
  w.Key("members");
  w.StartArray();
  for (const auto& m : status.members()) {
    w.StartObject();
    w.Key("node_id");
    w.String(m.node_id().c_str());
    w.Key("listen_addresses");
    w.StartArray();
    for (const auto& a : m.listen_addresses()) w.String(a.c_str());
    w.EndArray();
    w.Key("build_version");
    stringOrNull(m.build_version());
    // Connected to the control plane; null without one.
    w.Key("connected");
    if (single) {
      w.Null();
    } else {
      w.Bool(m.connected());
    }
    w.Key("acked_version");
    stringOrNull(m.acked_version());
    w.Key("in_sync");
    w.Bool(!m.acked_version().empty() && m.acked_version() == status.current_version());
    w.Key("nacked_version");
    stringOrNull(m.nacked_version());
    w.Key("nack_error");
    stringOrNull(m.nack_error());
    w.Key("last_report_unix_ms");
    timeOrNull(w, m.last_report_unix_ms());
    w.Key("connected_since_unix_ms");
    timeOrNull(w, m.connected_since_unix_ms());
    w.Key("upstreams");
    w.StartArray();
    for (const auto& u : m.upstreams()) {
      w.StartObject();
      w.Key("url");
      w.String(u.url().c_str());
      w.Key("healthy");
      w.Bool(u.healthy());
      w.Key("in_flight");
      w.Int64(u.in_flight());
      w.EndObject();
    }
    w.EndArray();
    w.EndObject();
  }
  w.EndArray();
  w.EndObject();
  return RestReply{200, std::string(sb.GetString(), sb.GetSize()), ""};
}

RestReply handleAdminRest(const AdminContext& ctx, const std::string& method,
                          const std::string& path, const std::string& body, bool* changed) {
  *changed = false;
  std::string rest;
  if (subPath(path, "/api/v1/clients", &rest))
    return handleClientsRest(ctx, method, path, body, changed);
  if (subPath(path, "/api/v1/plugins", &rest))
    return handlePluginsRest(ctx, method, path, body, changed);
  if (subPath(path, "/api/v1/farm", &rest)) return handleFarmRest(ctx, method, path);
  if (subPath(path, "/api/v1/certificates", &rest))
    return handleCertificatesRest(ctx, method, path);
  return error(404, "no route for " + path, "not_found");
}

}  // namespace eldric::controlplane
