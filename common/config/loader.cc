#include "common/config/loader.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <thread>

#include "common/address.h"
#include "common/config/flag_parser.h"
#include "common/crypto.h"
#include "common/file.h"
#include "common/json.h"
#include "rapidjson/document.h"

namespace eldric::config {
namespace {

using rapidjson::Value;

struct Settings {
  std::string mode = "single";
  int64_t https_port = 443;
  int64_t http_port = 80;
  std::string bind = "0.0.0.0";
  std::vector<std::string> routers;
  std::string controller_url;
  // The worker registration proxy's deadline: a controller that has not
  // answered by then gets the worker a 504.
  int64_t controller_timeout_ms = 30000;
  // "tunnel": the NAT tunnel's limits (0: the data plane's defaults).
  int64_t tunnel_poll_timeout_ms = 0, tunnel_queue_depth = 0, tunnel_queue_timeout_ms = 0,
          tunnel_first_byte_timeout_ms = 0, tunnel_max_answer_kb = 0, tunnel_per_key = 0,
          tunnel_max_concurrent = 0;
  // How long a worker's streamed answer (one POST body) may take.
  int64_t tunnel_answer_timeout_ms = 600000;
  bool tls_enabled = true;
  std::string tls_mode = "manual";
  std::string cert_file, key_file;
  // tls.client_ca (mTLS from clients) and whether a certificate is
  // required ("required") or only verified when given ("optional").
  std::string client_ca, client_certificate = "optional";
  AcmeSettings acme;
  bool require_api_key = false;
  struct Key {
    std::string key;  // never logged; hashed into the snapshot
    std::string client;
    std::vector<std::string> scopes = {"inference"};
    int64_t rpm = 0, tpm = 0, max_concurrent = 0;
    std::vector<std::string> allowed_models;
    std::vector<std::string> tools;
    // auth.certificate_clients: `key` is a client certificate's subject
    // common name, not a secret.
    bool certificate = false;
  };
  std::vector<Key> keys;
  int64_t rotation_overlap_s = 3600;
  int64_t session_ttl_s = 12 * 3600;
  int64_t global_rpm = 10000, per_ip_rpm = 100, per_key_rpm = 1000, window_seconds = 60;
  int64_t per_key_tpm = 0, max_tokens_per_request = 0, per_key_max_concurrent = 0;
  std::vector<std::string> trusted_proxies;
  int64_t ipv6_prefix = 64, max_ip_entries = 100000, auth_failures_per_ip = 20;
  std::string data_dir = "/var/lib/eldric-edge";
  std::string plugins_dir;
  // "plugins": how this host runs them.
  std::string plugins_python;
  bool plugins_require_sandbox = false;
  int64_t plugins_max_message_kb = 0;
  std::string plugins_runtime_dir;
  int64_t plugins_max_tool_rounds = 5;
  bool plugins_stream_tool_events = false;
  int64_t plugins_max_tool_result_kb = 1024;
  int64_t plugins_max_tool_answer_kb = 8192;
  FarmOptions farm;
  int64_t sync_interval_ms = 5000;
  int64_t workers = 0;
  std::string access_log = "-";
  std::string log_level;
  // limits
  int64_t max_header_bytes = 32 * 1024, max_headers = 100, max_body_bytes = 10 * 1024 * 1024;
  // "tls": the profile and Strict-Transport-Security (0: none).
  std::string tls_profile = "intermediate";
  // A new session ticket key every this long (0: tickets off).
  int64_t session_ticket_rotation_s = 3600;
  // -1: not set; then 0 (none) with manual certificates, a year with
  // ACME (a publicly trusted certificate that renews itself).
  int64_t hsts_max_age_s = -1;
  bool hsts_include_subdomains = false;
  int64_t header_timeout_ms = 10000, idle_timeout_ms = 60000, request_timeout_ms = 600000,
          drain_timeout_ms = 15000, max_connections_per_worker = 0, body_timeout_ms = 60000,
          max_connections = 50000, max_active_requests = 10000, max_rss_mb = 0,
          handshake_budget_us = 1000;
  // upstream
  int64_t connect_timeout_ms = 2000, health_interval_ms = 5000, health_timeout_ms = 2000,
          unhealthy_threshold = 2, healthy_threshold = 1, ejection_failures = 3,
          ejection_time_ms = 10000, max_idle = 64, idle_connection_timeout_ms = 60000, retries = 1,
          dns_refresh_ms = 5000;
  std::string health_path = "/health";
};

// A tiny schema walker: each object lists its fields; unknown ones fail.
class Walker {
 public:
  explicit Walker(std::string* error) : error_(error) {}
  bool ok() const { return error_->empty(); }
  void fail(const std::string& msg) {
    if (error_->empty()) *error_ = msg;
  }
  static std::string join(const std::string& prefix, const char* name) {
    return prefix.empty() ? name : prefix + "." + name;
  }

  using Handler = std::function<void(const Value&, const std::string& path)>;
  void object(const Value& v, const std::string& path,
              std::initializer_list<std::pair<const char*, Handler>> fields) {
    if (!v.IsObject()) {
      fail("field \"" + path + "\" must be an object");
      return;
    }
    for (auto it = v.MemberBegin(); it != v.MemberEnd() && ok(); ++it) {
      std::string name(it->name.GetString(), it->name.GetStringLength());
      bool known = false;
      for (const auto& [fname, handler] : fields) {
        if (name == fname) {
          known = true;
          handler(it->value, join(path, fname));
          break;
        }
      }
      if (!known) {
        std::string all;
        for (const auto& f : fields) all += std::string(all.empty() ? "" : ", ") + f.first;
        fail("unknown field \"" + join(path, name.c_str()) + "\" (known: " + all + ")");
      }
    }
  }
  Handler integer(int64_t* out, int64_t min, int64_t max) {
    return [this, out, min, max](const Value& v, const std::string& path) {
      if (!v.IsInt64() || v.GetInt64() < min || v.GetInt64() > max) {
        fail("field \"" + path + "\" must be an integer from " + std::to_string(min) + " to " +
             std::to_string(max));
        return;
      }
      *out = v.GetInt64();
    };
  }
  Handler string(std::string* out, std::initializer_list<const char*> allowed = {}) {
    std::vector<std::string> allow(allowed.begin(), allowed.end());
    return [this, out, allow](const Value& v, const std::string& path) {
      if (!v.IsString()) {
        fail("field \"" + path + "\" must be a string");
        return;
      }
      std::string s(v.GetString(), v.GetStringLength());
      if (!allow.empty()) {
        bool found = false;
        std::string list;
        for (const auto& a : allow) {
          found |= a == s;
          list += (list.empty() ? "\"" : ", \"") + a + "\"";
        }
        if (!found) {
          fail("field \"" + path + "\" must be one of " + list + " (got \"" + s + "\")");
          return;
        }
      }
      *out = s;
    };
  }
  Handler boolean(bool* out) {
    return [this, out](const Value& v, const std::string& path) {
      if (!v.IsBool()) {
        fail("field \"" + path + "\" must be true or false");
        return;
      }
      *out = v.GetBool();
    };
  }
  Handler stringList(std::vector<std::string>* out) {
    return [this, out](const Value& v, const std::string& path) {
      if (!v.IsArray()) {
        fail("field \"" + path + "\" must be an array of strings");
        return;
      }
      out->clear();
      for (rapidjson::SizeType i = 0; i < v.Size(); ++i) {
        if (!v[i].IsString()) {
          fail("field \"" + path + "[" + std::to_string(i) + "]\" must be a string");
          return;
        }
        out->emplace_back(v[i].GetString(), v[i].GetStringLength());
      }
    };
  }

 private:
  std::string* error_;
};

constexpr int64_t kMaxInt = 1LL << 40;

void walkFile(Walker& w, const Value& root, Settings& s) {
  w.object(
      root, "",
      {
          {"mode", w.string(&s.mode, {"single", "farm"})},
          {"https_port", w.integer(&s.https_port, 0, 65535)},
          {"http_port", w.integer(&s.http_port, 0, 65535)},
          {"bind_address", w.string(&s.bind)},
          {"router_urls", w.stringList(&s.routers)},
          {"controller_url", w.string(&s.controller_url)},
          {"workers", w.integer(&s.workers, 0, 256)},
          {"log_level", w.string(&s.log_level, {"debug", "info", "warn", "error"})},
          {"access_log", w.string(&s.access_log)},
          {"tls",
           [&](const Value& v, const std::string& p) {
             w.object(
                 v, p,
                 {{"mode", w.string(&s.tls_mode, {"manual", "acme"})},
                  {"enabled", w.boolean(&s.tls_enabled)},
                  {"cert_file", w.string(&s.cert_file)},
                  {"key_file", w.string(&s.key_file)},
                  {"client_ca", w.string(&s.client_ca)},
                  {"client_certificate", w.string(&s.client_certificate, {"optional", "required"})},
                  {"profile", w.string(&s.tls_profile, {"intermediate", "modern"})},
                  {"session_ticket_rotation_s",
                   w.integer(&s.session_ticket_rotation_s, 0, 7 * 86400)},
                  {"hsts_max_age_s", w.integer(&s.hsts_max_age_s, 0, 63072000)},
                  {"hsts_include_subdomains", w.boolean(&s.hsts_include_subdomains)},
                  {"acme", [&](const Value& a, const std::string& ap) {
                     auto& acme = s.acme;
                     w.object(a, ap,
                              {{"directory_url", w.string(&acme.directory_url)},
                               {"email", w.string(&acme.email)},
                               {"domains", w.stringList(&acme.domains)},
                               {"key_type", w.string(&acme.key_type, {"ecdsa-p256", "rsa-2048"})},
                               {"renew_before_days", w.integer(&acme.renew_before_days, 1, 89)},
                               {"ca_file", w.string(&acme.ca_file)},
                               {"challenge", w.string(&acme.challenge, {"http-01"})},
                               {"retry_initial_s", w.integer(&acme.retry_initial_s, 1, 86400)},
                               {"retry_max_s", w.integer(&acme.retry_max_s, 1, 7 * 86400)}});
                   }}});
           }},
          {"auth",
           [&](const Value& v, const std::string& p) {
             auto keyMap = [&](bool admin, bool certificate = false) {
               return [&, admin, certificate](const Value& keys, const std::string& kp) {
                 if (!keys.IsObject()) {
                   w.fail("field \"" + kp + "\" must be an object of " +
                          (certificate ? "certificate subject" : "key") + " -> client");
                   return;
                 }
                 size_t index = 0;
                 for (auto it = keys.MemberBegin(); it != keys.MemberEnd() && w.ok();
                      ++it, ++index) {
                   Settings::Key k;
                   k.key.assign(it->name.GetString(), it->name.GetStringLength());
                   k.certificate = certificate;
                   // Name entries by position: the key itself is never echoed.
                   std::string ep = kp + "[" + std::to_string(index) + "]";
                   if (certificate) {
                     if (k.key.empty() || k.key.size() > 256 ||
                         !std::all_of(k.key.begin(), k.key.end(),
                                      [](unsigned char c) { return c >= 0x20 && c != 0x7f; })) {
                       w.fail("field \"" + ep +
                              "\": a certificate subject (common name) of 1 to 256 printable "
                              "characters");
                       return;
                     }
                   } else if (k.key.size() < 8) {
                     w.fail("field \"" + ep + "\": an API key must be at least 8 characters");
                     return;
                   }
                   if (it->value.IsString()) {
                     k.client.assign(it->value.GetString(), it->value.GetStringLength());
                   } else if (it->value.IsObject()) {
                     w.object(it->value, ep,
                              {{"client", w.string(&k.client)},
                               {"scopes", w.stringList(&k.scopes)},
                               {"rpm", w.integer(&k.rpm, 0, kMaxInt)},
                               {"tpm", w.integer(&k.tpm, 0, kMaxInt)},
                               {"max_concurrent", w.integer(&k.max_concurrent, 0, 1000000)},
                               {"allowed_models", w.stringList(&k.allowed_models)},
                               {"tools", w.stringList(&k.tools)}});
                   } else {
                     w.fail("field \"" + ep + "\" must be a client name or an object");
                     return;
                   }
                   if (k.client.empty()) {
                     w.fail("field \"" + ep + "\" needs a client name");
                     return;
                   }
                   for (const auto& sc : k.scopes) {
                     if (sc != "inference" && sc != "admin" && sc != "worker" && sc != "router") {
                       w.fail("field \"" + ep + ".scopes\": unknown scope \"" + sc +
                              "\" (inference, admin, worker, router)");
                       return;
                     }
                   }
                   if (admin) k.scopes = {"inference", "admin"};
                   s.keys.push_back(std::move(k));
                 }
               };
             };
             w.object(
                 v, p,
                 {{"require_api_key", w.boolean(&s.require_api_key)},
                  {"api_keys", keyMap(false)},
                  {"admin_keys", keyMap(true)},
                  {"certificate_clients", keyMap(false, true)},
                  {"rotation_overlap_seconds", w.integer(&s.rotation_overlap_s, 0, 90 * 86400)},
                  {"session_ttl_seconds", w.integer(&s.session_ttl_s, 60, 30 * 86400)}});
           }},
          {"rate_limits",
           [&](const Value& v, const std::string& p) {
             w.object(v, p,
                      {{"global_rpm", w.integer(&s.global_rpm, 0, kMaxInt)},
                       {"per_ip_rpm", w.integer(&s.per_ip_rpm, 0, kMaxInt)},
                       {"per_key_rpm", w.integer(&s.per_key_rpm, 0, kMaxInt)},
                       {"window_seconds", w.integer(&s.window_seconds, 1, 3600)},
                       {"per_key_tpm", w.integer(&s.per_key_tpm, 0, kMaxInt)},
                       {"max_tokens_per_request", w.integer(&s.max_tokens_per_request, 0, kMaxInt)},
                       {"per_key_max_concurrent", w.integer(&s.per_key_max_concurrent, 0, 1000000)},
                       {"trusted_proxies", w.stringList(&s.trusted_proxies)},
                       {"ipv6_prefix", w.integer(&s.ipv6_prefix, 32, 128)},
                       {"max_ip_entries", w.integer(&s.max_ip_entries, 100, 100000000)},
                       {"auth_failures_per_ip", w.integer(&s.auth_failures_per_ip, 0, kMaxInt)}});
           }},
          {"data_dir", w.string(&s.data_dir)},
          {"plugins_dir", w.string(&s.plugins_dir)},
          {"tunnel",
           [&](const Value& v, const std::string& p) {
             w.object(
                 v, p,
                 {{"poll_timeout_ms", w.integer(&s.tunnel_poll_timeout_ms, 100, 600000)},
                  {"queue_depth", w.integer(&s.tunnel_queue_depth, 1, 100000)},
                  {"queue_timeout_ms", w.integer(&s.tunnel_queue_timeout_ms, 100, 3600000)},
                  {"first_byte_timeout_ms",
                   w.integer(&s.tunnel_first_byte_timeout_ms, 100, 3600000)},
                  {"max_answer_kb", w.integer(&s.tunnel_max_answer_kb, 1, 1 << 24)},
                  {"tunnels_per_key", w.integer(&s.tunnel_per_key, 1, 100000)},
                  {"max_concurrent", w.integer(&s.tunnel_max_concurrent, 1, 100000)},
                  {"answer_timeout_ms", w.integer(&s.tunnel_answer_timeout_ms, 100, 86400000)}});
           }},
          {"plugins",
           [&](const Value& v, const std::string& p) {
             w.object(
                 v, p,
                 {{"python", w.string(&s.plugins_python)},
                  {"require_sandbox", w.boolean(&s.plugins_require_sandbox)},
                  {"max_message_kb", w.integer(&s.plugins_max_message_kb, 64, 1 << 20)},
                  {"runtime_dir", w.string(&s.plugins_runtime_dir)},
                  {"max_tool_rounds", w.integer(&s.plugins_max_tool_rounds, 1, 100)},
                  {"stream_tool_events", w.boolean(&s.plugins_stream_tool_events)},
                  {"max_tool_result_kb", w.integer(&s.plugins_max_tool_result_kb, 1, 1 << 20)},
                  {"max_tool_answer_kb", w.integer(&s.plugins_max_tool_answer_kb, 64, 1 << 20)}});
           }},
          {"farm",
           [&](const Value& v, const std::string& p) {
             w.object(v, p,
                      {{"peers", w.stringList(&s.farm.peers)},
                       {"primary",
                        [&](const Value& pv, const std::string& pp) {
                          if (pv.IsBool()) {
                            s.farm.primary = pv.GetBool() ? "self" : "";
                          } else if (pv.IsString() && pv.GetStringLength() > 0) {
                            s.farm.primary.assign(pv.GetString(), pv.GetStringLength());
                          } else {
                            w.fail("field \"" + pp +
                                   "\" must be true (this member), false, or a member's "
                                   "host:port as in peers");
                          }
                        }},
                       {"port", w.integer(&s.farm.port, 1, 65535)},
                       {"secret_file", w.string(&s.farm.secret_file)},
                       {"controlplane_path", w.string(&s.farm.controlplane_path)},
                       {"sync_interval_ms", w.integer(&s.sync_interval_ms, 10, 3600000)},
                       {"control_plane", w.stringList(&s.farm.control_planes)},
                       {"control_plane_ca", w.string(&s.farm.ca_file)},
                       {"control_plane_cert", w.string(&s.farm.cert_file)},
                       {"control_plane_key", w.string(&s.farm.key_file)},
                       {"node_id", w.string(&s.farm.node_id)},
                       {"relay_url", w.string(&s.farm.relay_url)},
                       {"relay_ca", w.string(&s.farm.relay_ca_file)},
                       {"offline_policy",
                        w.string(&s.farm.offline_policy, {"local_share", "local_only"})}});
           }},
          {"limits",
           [&](const Value& v, const std::string& p) {
             w.object(v, p,
                      {{"max_header_bytes", w.integer(&s.max_header_bytes, 1024, 1 << 20)},
                       {"max_headers", w.integer(&s.max_headers, 8, 1000)},
                       {"max_body_bytes", w.integer(&s.max_body_bytes, 1, 1LL << 32)},
                       {"header_timeout_ms", w.integer(&s.header_timeout_ms, 100, 3600000)},
                       {"idle_timeout_ms", w.integer(&s.idle_timeout_ms, 100, 86400000)},
                       {"request_timeout_ms", w.integer(&s.request_timeout_ms, 100, 86400000)},
                       {"drain_timeout_ms", w.integer(&s.drain_timeout_ms, 0, 3600000)},
                       {"body_timeout_ms", w.integer(&s.body_timeout_ms, 100, 86400000)},
                       {"max_connections", w.integer(&s.max_connections, 1, 10000000)},
                       {"max_active_requests", w.integer(&s.max_active_requests, 1, 10000000)},
                       {"max_rss_mb", w.integer(&s.max_rss_mb, 0, 1 << 24)},
                       {"handshake_budget_us", w.integer(&s.handshake_budget_us, 0, 1000000)},
                       {"max_connections_per_worker",
                        w.integer(&s.max_connections_per_worker, 0, 10000000)}});
           }},
          {"upstream",
           [&](const Value& v, const std::string& p) {
             w.object(
                 v, p,
                 {{"connect_timeout_ms", w.integer(&s.connect_timeout_ms, 10, 600000)},
                  {"health_check_path", w.string(&s.health_path)},
                  {"health_check_interval_ms", w.integer(&s.health_interval_ms, 50, 3600000)},
                  {"health_check_timeout_ms", w.integer(&s.health_timeout_ms, 10, 600000)},
                  {"unhealthy_threshold", w.integer(&s.unhealthy_threshold, 1, 100)},
                  {"healthy_threshold", w.integer(&s.healthy_threshold, 1, 100)},
                  {"ejection_consecutive_failures", w.integer(&s.ejection_failures, 0, 1000)},
                  {"ejection_time_ms", w.integer(&s.ejection_time_ms, 100, 3600000)},
                  {"max_idle_connections", w.integer(&s.max_idle, 0, 100000)},
                  {"idle_connection_timeout_ms",
                   w.integer(&s.idle_connection_timeout_ms, 100, 3600000)},
                  {"retries", w.integer(&s.retries, 0, 10)},
                  {"dns_refresh_ms", w.integer(&s.dns_refresh_ms, 100, 86400000)},
                  {"controller_timeout_ms", w.integer(&s.controller_timeout_ms, 100, 86400000)}});
           }},
      });
}

bool parsePort(const std::string& flag, const std::string& v, int64_t* out, std::string* error) {
  char* end = nullptr;
  long n = strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < 0 || n > 65535) {
    *error = "flag " + flag + ": \"" + v + "\" is not a port number (0-65535)";
    return false;
  }
  *out = n;
  return true;
}

struct ParsedUrl {
  std::string host;
  uint16_t port = 80;
};

bool parseHttpUrl(const std::string& url, const std::string& what, ParsedUrl* out,
                  std::string* error) {
  if (url.compare(0, 7, "http://") != 0) {
    *error = what + " \"" + url +
             "\" must start with http:// (the cluster network is plaintext; TLS ends at the Edge)";
    return false;
  }
  network::Url u;
  std::string why;
  if (!network::parseUrl(url, &u, &why)) {
    *error = what + " \"" + url + "\" " + why;
    return false;
  }
  if (u.path != "/") {
    *error = what + " \"" + url + "\" must not have a path";
    return false;
  }
  out->host = u.host;
  out->port = u.port;
  return true;
}

bool validCidr(const std::string& text) {
  std::string ip = text.substr(0, text.find('/'));
  sockaddr_storage probe;
  if (!network::parseIpAddress(ip, 0, &probe)) return false;
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    char* end = nullptr;
    long p = strtol(text.c_str() + slash + 1, &end, 10);
    int max = probe.ss_family == AF_INET ? 32 : 128;
    if (*end || slash + 1 == text.size() || p < 0 || p > max) return false;
  }
  return true;
}

// A name a CA can issue for by HTTP-01: lowercase letters, digits and
// hyphens in dot-separated labels (no wildcard, no IP address).
}  // namespace

bool AcmeSettings::sameAs(const AcmeSettings& o) const {
  return enabled == o.enabled && directory_url == o.directory_url && email == o.email &&
         domains == o.domains && key_type == o.key_type &&
         renew_before_days == o.renew_before_days && ca_file == o.ca_file &&
         challenge == o.challenge && retry_initial_s == o.retry_initial_s &&
         retry_max_s == o.retry_max_s && http_port == o.http_port;
}

namespace {

// HSTS when tls.mode is "acme" and tls.hsts_max_age_s is not set.
constexpr int64_t kAcmeHstsMaxAgeSeconds = 31536000;

bool validAcmeDomain(const std::string& d) {
  if (d.empty() || d.size() > 253 || d.front() == '.' || d.back() == '.') return false;
  size_t label = 0;
  bool letter = false;
  for (size_t i = 0; i < d.size(); ++i) {
    char c = d[i];
    if (c == '.') {
      if (label == 0 || d[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    bool alpha = c >= 'a' && c <= 'z';
    if (!alpha && !(c >= '0' && c <= '9') && c != '-') return false;
    if (c == '-' && label == 0) return false;
    letter = letter || alpha;
    if (++label > 63) return false;
  }
  return letter && d.back() != '-';
}

bool checkAcme(const Settings& s, std::string* error) {
  const AcmeSettings& a = s.acme;
  if (a.domains.empty()) {
    *error = "tls.mode \"acme\" needs tls.acme.domains (the names to order a certificate for)";
    return false;
  }
  if (a.domains.size() > 100) {
    *error = "tls.acme.domains: at most 100 names in one certificate";
    return false;
  }
  std::set<std::string> seen;
  for (const auto& d : a.domains) {
    if (!validAcmeDomain(d)) {
      *error = "tls.acme.domains: \"" + d +
               "\" is not a DNS name a CA can validate over HTTP-01 (lowercase, no wildcard, no "
               "IP address)";
      return false;
    }
    if (!seen.insert(d).second) {
      *error = "tls.acme.domains: \"" + d + "\" is listed twice";
      return false;
    }
  }
  network::Url u;
  std::string why;
  if (!network::parseUrl(a.directory_url, &u, &why) || !u.https) {
    *error = "tls.acme.directory_url \"" + a.directory_url + "\" " +
             (why.empty() ? "must be https:// (RFC 8555 section 6.1)" : why);
    return false;
  }
  if (!a.email.empty() && (a.email.find('@') == std::string::npos ||
                           a.email.find_first_of(" ,;<>\r\n") != std::string::npos)) {
    *error = "tls.acme.email \"" + a.email + "\" is not an email address";
    return false;
  }
  if (a.retry_max_s < a.retry_initial_s) {
    *error = "tls.acme.retry_max_s must be at least retry_initial_s";
    return false;
  }
  std::string pem;
  if (!a.ca_file.empty() && !readFile(a.ca_file, "tls.acme.ca_file", &pem, error)) return false;
  return true;
}

google::protobuf::Duration duration(int64_t ms) {
  google::protobuf::Duration d;
  d.set_seconds(ms / 1000);
  d.set_nanos(static_cast<int32_t>((ms % 1000) * 1000000));
  return d;
}

bool applyFlags(const CommandLine& cli, Settings& s, std::string* error) {
  if (!cli.port.empty() && !parsePort("--port", cli.port, &s.https_port, error)) return false;
  if (!cli.http_port.empty() && !parsePort("--http-port", cli.http_port, &s.http_port, error))
    return false;
  if (!cli.bind.empty()) s.bind = cli.bind;
  if (!cli.routers.empty()) s.routers = splitList(cli.routers);
  if (!cli.cert.empty()) s.cert_file = cli.cert;
  if (!cli.key.empty()) s.key_file = cli.key;
  if (cli.no_tls) s.tls_enabled = false;
  if (!cli.mode.empty()) {
    if (cli.mode != "single" && cli.mode != "farm") {
      *error = "flag --mode: must be \"single\" or \"farm\" (got \"" + cli.mode + "\")";
      return false;
    }
    s.mode = cli.mode;
  }
  if (!cli.access_log.empty()) s.access_log = cli.access_log == "off" ? "" : cli.access_log;
  if (!cli.workers.empty()) {
    char* end = nullptr;
    long n = strtol(cli.workers.c_str(), &end, 10);
    if (*end || n < 1 || n > 256) {
      *error = "flag --workers: must be an integer from 1 to 256 (got \"" + cli.workers + "\")";
      return false;
    }
    s.workers = n;
  }
  if (!cli.api_key.empty()) {
    // The seed's --api-key: require keys, and this one is the operator's.
    s.require_api_key = true;
    Settings::Key k;
    k.key = cli.api_key;
    k.client = "operator";
    k.scopes = {"inference", "admin"};
    if (k.key.size() < 8) {
      *error = "flag --api-key: an API key must be at least 8 characters";
      return false;
    }
    s.keys.push_back(std::move(k));
  }
  if (!cli.data_dir.empty()) s.data_dir = cli.data_dir;
  if (!cli.plugins_dir.empty()) s.plugins_dir = cli.plugins_dir;
  if (!cli.peers.empty()) s.farm.peers = splitList(cli.peers);
  if (cli.primary) s.farm.primary = "self";
  if (!cli.farm_port.empty()) {
    int64_t port = 0;
    if (!parsePort("--farm-port", cli.farm_port, &port, error)) return false;
    if (port == 0) {
      *error = "flag --farm-port: the farm port must be fixed (1-65535): the members dial it";
      return false;
    }
    s.farm.port = port;
  }
  if (!cli.control_plane.empty()) s.farm.control_planes = splitList(cli.control_plane);
  if (!cli.control_plane_ca.empty()) s.farm.ca_file = cli.control_plane_ca;
  if (!cli.control_plane_cert.empty()) s.farm.cert_file = cli.control_plane_cert;
  if (!cli.control_plane_key.empty()) s.farm.key_file = cli.control_plane_key;
  if (!cli.node_id.empty()) s.farm.node_id = cli.node_id;
  return true;
}

// The seed's farm: the members in farm.peers, one of them running the
// control plane (farm_plan.h). Fills the parts of s.farm the plan and the
// primary's child need.
bool checkSupervisedFarm(const Settings& s, FarmOptions* farm, std::string* error) {
  FarmOptions& f = *farm;
  for (const auto& p : f.peers) {
    std::string host;
    uint16_t port = 0;
    if (!network::splitHostPort(p, &host, &port)) {
      *error = "farm peer \"" + p +
               "\" must be host:port (the port it serves on, e.g. edge2:443; IPv6 as [::1]:443)";
      return false;
    }
  }
  if (!f.primary.empty() && f.primary != "self") {
    std::string host;
    uint16_t port = 0;
    if (!network::splitHostPort(f.primary, &host, &port)) {
      *error = "farm.primary \"" + f.primary + "\" must be true or a member's host:port";
      return false;
    }
  }
  if (s.tls_enabled && s.tls_mode == "acme") {
    *error =
        "a farm of --peers serves its farm port with the Edge's certificate file, which tls.mode "
        "\"acme\" does not have: run eldric-controlplane yourself (--control-plane host:port) "
        "for an ACME farm";
    return false;
  }
  if (!s.tls_enabled) {
    // Plaintext stays on this host.
    for (const auto& p : f.peers) {
      std::string host;
      uint16_t port = 0;
      network::splitHostPort(p, &host, &port);
      if (!network::isLoopbackHost(host)) {
        *error = "farm peer \"" + p +
                 "\" is off this host, and without TLS the farm's snapshots (keys, session "
                 "secrets) would cross the network in plaintext: give the Edges a certificate "
                 "(--cert, --key) or keep a --no-tls farm on loopback";
        return false;
      }
    }
    if (f.secret_file.empty()) {
      *error =
          "a farm without TLS has no key to derive the members' secret from: set "
          "farm.secret_file (a file holding a shared secret of 16 characters or more)";
      return false;
    }
  }
  f.supervised = true;
  f.member_port = s.tls_enabled ? s.https_port : s.http_port;
  f.bind = s.bind;
  f.tls_cert_file = s.tls_enabled ? s.cert_file : std::string();
  f.tls_key_file = s.tls_enabled ? s.key_file : std::string();
  return true;
}

bool buildSnapshot(const Settings& s, const std::string& source, LoadResult* out,
                   std::string* error) {
  // What this build cannot do yet is refused or named, never silently
  // ignored: an operator who asked for API keys must not get an open door.
  if (s.mode == "farm") {
    if (s.farm.control_planes.empty() && s.farm.peers.empty()) {
      *error =
          "mode \"farm\" needs the members, --peers host:port,... (farm.peers: one of them runs "
          "the control plane), or --control-plane host:port (farm.control_plane: "
          "eldric-controlplane run separately)";
      return false;
    }
    for (const auto& cp : s.farm.control_planes) {
      size_t colon = cp.rfind(':');
      if (colon == std::string::npos || colon == 0 || colon + 1 == cp.size()) {
        *error = "control plane \"" + cp + "\" must be host:port";
        return false;
      }
    }
    if (!s.farm.control_planes.empty() && !s.farm.peers.empty()) {
      out->warnings.push_back(
          "farm.peers / --peers is ignored with --control-plane: members find each other through "
          "the control plane");
    }
    if (!s.farm.control_planes.empty() && !s.farm.primary.empty()) {
      out->warnings.push_back(
          "farm.primary / --primary is ignored with --control-plane: that control plane is run on "
          "its own");
    }
    if (s.farm.cert_file.empty() != s.farm.key_file.empty()) {
      *error = "control plane mTLS needs both control_plane_cert and control_plane_key";
      return false;
    }
    if (!s.farm.relay_url.empty()) {
      network::Url u;
      std::string why;
      if (!network::parseUrl(s.farm.relay_url, &u, &why) || u.path != "/") {
        *error = "farm.relay_url \"" + s.farm.relay_url + "\" " +
                 (why.empty() ? "must not have a path" : why) +
                 " (how the other members reach this one: https://10.0.0.5:443)";
        return false;
      }
    }
    out->farm = s.farm;
    if (out->farm.control_planes.empty() && !checkSupervisedFarm(s, &out->farm, error))
      return false;
    out->farm.enabled = true;
    out->farm.sync_interval_ms = static_cast<uint64_t>(s.sync_interval_ms);
  } else if (!s.farm.peers.empty() || !s.farm.control_planes.empty()) {
    out->warnings.push_back("farm settings have no effect in mode \"single\" (use --mode farm)");
  }
  if (s.tls_enabled && s.tls_mode == "acme" && !checkAcme(s, error)) return false;
  // In a farm the routers come with the control plane's snapshot.
  if (s.routers.empty() && s.mode != "farm") {
    *error =
        "no routers: give --routers http://host:8881[,...] or \"router_urls\" in the config file";
    return false;
  }

  edge::v1::Snapshot& snap = out->snapshot;
  snap.set_source(source);
  snap.set_worker_threads(static_cast<uint32_t>(s.workers));
  snap.mutable_access_log()->set_path(s.access_log);
  snap.set_data_dir(s.data_dir);
  out->plugins_dir = s.plugins_dir;
  auto* tunnel = snap.mutable_tunnel();
  if (s.tunnel_poll_timeout_ms)
    *tunnel->mutable_poll_timeout() = duration(s.tunnel_poll_timeout_ms);
  if (s.tunnel_queue_timeout_ms) {
    *tunnel->mutable_queue_timeout() = duration(s.tunnel_queue_timeout_ms);
  }
  if (s.tunnel_first_byte_timeout_ms) {
    *tunnel->mutable_first_byte_timeout() = duration(s.tunnel_first_byte_timeout_ms);
  }
  tunnel->set_queue_depth(static_cast<uint32_t>(s.tunnel_queue_depth));
  tunnel->set_max_answer_bytes(static_cast<uint64_t>(s.tunnel_max_answer_kb) * 1024);
  tunnel->set_tunnels_per_key(static_cast<uint32_t>(s.tunnel_per_key));
  tunnel->set_max_concurrent(static_cast<uint32_t>(s.tunnel_max_concurrent));
  auto* plugins = snap.mutable_plugins();
  plugins->set_python(s.plugins_python);
  plugins->set_require_sandbox(s.plugins_require_sandbox);
  plugins->set_max_message_bytes(static_cast<uint64_t>(s.plugins_max_message_kb) * 1024);
  plugins->set_runtime_dir(s.plugins_runtime_dir);
  plugins->set_max_tool_rounds(static_cast<uint32_t>(s.plugins_max_tool_rounds));
  plugins->set_stream_tool_events(s.plugins_stream_tool_events);
  plugins->set_max_tool_result_bytes(static_cast<uint64_t>(s.plugins_max_tool_result_kb) * 1024);
  plugins->set_max_tool_answer_bytes(static_cast<uint64_t>(s.plugins_max_tool_answer_kb) * 1024);
  if (s.mode == "farm" && !s.plugins_dir.empty()) {
    out->warnings.push_back(
        "plugins_dir is read by the control plane in a farm (its config's plugins_dir); this "
        "member ignores it");
  }
  *snap.mutable_farm()->mutable_sync_interval() = duration(s.sync_interval_ms);

  auto* auth = snap.mutable_auth();
  auth->set_require_api_key(s.require_api_key);
  *auth->mutable_rotation_overlap() = duration(s.rotation_overlap_s * 1000);
  *auth->mutable_session_ttl() = duration(s.session_ttl_s * 1000);
  std::set<std::string> seen_keys;
  for (const auto& k : s.keys) {
    if (!seen_keys.insert((k.certificate ? "cert:" : "key:") + k.key).second) {
      *error = k.certificate
                   ? "auth.certificate_clients: the subject \"" + k.key + "\" is listed twice"
                   : "the same API key is configured twice (for client \"" + k.client + "\")";
      return false;
    }
    auto* ak = auth->add_api_keys();
    if (k.certificate) {
      ak->set_certificate_subject(k.key);
    } else {
      unsigned char digest[32];
      crypto::sha256(k.key.data(), k.key.size(), digest);
      ak->set_sha256(std::string(reinterpret_cast<const char*>(digest), sizeof digest));
      ak->set_prefix(crypto::keyPrefix(k.key));
    }
    ak->set_client_id("cfg_" + k.client);
    ak->set_client_name(k.client);
    for (const auto& sc : k.scopes) {
      ak->add_scopes(sc == "admin"    ? edge::v1::SCOPE_ADMIN
                     : sc == "worker" ? edge::v1::SCOPE_WORKER
                     : sc == "router" ? edge::v1::SCOPE_ROUTER
                                      : edge::v1::SCOPE_INFERENCE);
    }
    ak->set_requests_per_minute(static_cast<uint32_t>(k.rpm));
    ak->set_tokens_per_minute(static_cast<uint32_t>(k.tpm));
    ak->set_max_concurrent_requests(static_cast<uint32_t>(k.max_concurrent));
    for (const auto& m : k.allowed_models) ak->add_allowed_models(m);
    for (const auto& t : k.tools) ak->add_tools(t);
  }

  if (s.client_ca.empty() && std::any_of(s.keys.begin(), s.keys.end(),
                                         [](const Settings::Key& k) { return k.certificate; }))
    out->warnings.push_back(
        "auth.certificate_clients names clients by certificate, but tls.client_ca is not set: no "
        "client certificate is asked for, so none of them can connect that way");

  auto* rl = snap.mutable_rate_limits();
  rl->set_global_requests(static_cast<uint32_t>(std::min<int64_t>(s.global_rpm, UINT32_MAX)));
  rl->set_per_ip_requests(static_cast<uint32_t>(std::min<int64_t>(s.per_ip_rpm, UINT32_MAX)));
  rl->set_per_key_requests(static_cast<uint32_t>(std::min<int64_t>(s.per_key_rpm, UINT32_MAX)));
  *rl->mutable_window() = duration(s.window_seconds * 1000);
  rl->set_per_key_tokens(static_cast<uint32_t>(std::min<int64_t>(s.per_key_tpm, UINT32_MAX)));
  rl->set_max_tokens_per_request(
      static_cast<uint32_t>(std::min<int64_t>(s.max_tokens_per_request, UINT32_MAX)));
  rl->set_per_key_max_concurrent(static_cast<uint32_t>(s.per_key_max_concurrent));
  for (const auto& t : s.trusted_proxies) {
    if (!validCidr(t)) {
      *error = "rate_limits.trusted_proxies: \"" + t + "\" is not an IP address or CIDR";
      return false;
    }
    rl->add_trusted_proxies(t);
  }
  rl->set_ipv6_prefix(static_cast<uint32_t>(s.ipv6_prefix));
  rl->set_max_ip_entries(static_cast<uint32_t>(s.max_ip_entries));
  rl->set_auth_failures_per_ip(
      static_cast<uint32_t>(std::min<int64_t>(s.auth_failures_per_ip, UINT32_MAX)));

  if (s.bind.empty()) {
    *error = "bind_address is empty";
    return false;
  }

  const bool acme = s.tls_enabled && s.tls_mode == "acme";
  if (acme) {
    out->acme = s.acme;
    out->acme.enabled = true;
    out->acme.http_port = s.http_port;
    if (!s.cert_file.empty() || !s.key_file.empty())
      out->warnings.push_back("tls.cert_file and tls.key_file are not used with tls.mode \"acme\"");
  }
  if (s.tls_enabled) {
    if (!acme && (s.cert_file.empty() || s.key_file.empty())) {
      *error = "TLS is on but " + std::string(s.cert_file.empty() ? "no certificate" : "no key") +
               " is configured: give --cert and --key (tls.cert_file, tls.key_file), or --no-tls";
      return false;
    }
    auto* https = snap.add_listeners();
    https->set_name("https");
    https->mutable_address()->set_address(s.bind);
    https->mutable_address()->set_port(static_cast<uint32_t>(s.https_port));
    https->set_role(edge::v1::Listener::ROLE_SERVE);
    auto* tls = https->mutable_tls();
    tls->add_alpn_protocols("http/1.1");
    *snap.mutable_session_tickets()->mutable_rotation() =
        duration(s.session_ticket_rotation_s * 1000);
    tls->set_profile(s.tls_profile == "modern" ? edge::v1::TlsContext::PROFILE_MODERN
                                               : edge::v1::TlsContext::PROFILE_INTERMEDIATE);
    int64_t hsts = s.hsts_max_age_s >= 0 ? s.hsts_max_age_s : acme ? kAcmeHstsMaxAgeSeconds : 0;
    if (hsts > 0) *tls->mutable_hsts_max_age() = duration(hsts * 1000);
    tls->set_hsts_include_subdomains(s.hsts_include_subdomains);
    if (!s.client_ca.empty()) {
      std::string pem;
      if (!readFile(s.client_ca, "tls.client_ca", &pem, error)) return false;
      if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos) {
        *error = "tls.client_ca " + s.client_ca + ": no PEM certificate in it";
        return false;
      }
      tls->set_client_ca_pem(pem);
      tls->set_client_ca_source(s.client_ca);
      tls->set_require_client_certificate(s.client_certificate == "required");
    }
    if (acme) {
      tls->set_acme(true);
    } else {
      auto* cert = tls->add_certificates();
      std::string pem;
      if (!readFile(s.cert_file, "tls.cert_file", &pem, error)) return false;
      cert->set_certificate_chain_pem(pem);
      cert->set_certificate_source(s.cert_file);
      if (!readFile(s.key_file, "tls.key_file", &pem, error)) return false;
      cert->set_private_key_pem(pem);
      cert->set_private_key_source(s.key_file);
    }
    auto* http = snap.add_listeners();
    http->set_name("http");
    http->mutable_address()->set_address(s.bind);
    http->mutable_address()->set_port(static_cast<uint32_t>(s.http_port));
    http->set_role(edge::v1::Listener::ROLE_REDIRECT_TO_HTTPS);
    http->set_redirect_port(static_cast<uint32_t>(s.https_port));
  } else {
    auto* http = snap.add_listeners();
    http->set_name("http");
    http->mutable_address()->set_address(s.bind);
    http->mutable_address()->set_port(static_cast<uint32_t>(s.http_port));
    http->set_role(edge::v1::Listener::ROLE_SERVE);
  }

  auto* limits = snap.mutable_limits();
  limits->set_max_request_header_bytes(static_cast<uint32_t>(s.max_header_bytes));
  limits->set_max_request_headers(static_cast<uint32_t>(s.max_headers));
  limits->set_max_request_body_bytes(static_cast<uint64_t>(s.max_body_bytes));
  *limits->mutable_header_timeout() = duration(s.header_timeout_ms);
  *limits->mutable_idle_timeout() = duration(s.idle_timeout_ms);
  *limits->mutable_request_timeout() = duration(s.request_timeout_ms);
  *limits->mutable_drain_timeout() = duration(s.drain_timeout_ms);
  limits->set_max_connections_per_worker(static_cast<uint32_t>(s.max_connections_per_worker));
  *limits->mutable_body_timeout() = duration(s.body_timeout_ms);
  limits->set_max_connections(static_cast<uint32_t>(s.max_connections));
  limits->set_max_active_requests(static_cast<uint32_t>(s.max_active_requests));
  limits->set_max_rss_bytes(static_cast<uint64_t>(s.max_rss_mb) << 20);
  limits->mutable_handshake_budget()->set_seconds(s.handshake_budget_us / 1000000);
  limits->mutable_handshake_budget()->set_nanos(
      static_cast<int32_t>((s.handshake_budget_us % 1000000) * 1000));

  auto addCluster = [&](const std::string& name, const std::vector<std::string>& urls,
                        const char* what, bool health) -> bool {
    auto* c = snap.add_clusters();
    c->set_name(name);
    std::set<std::string> seen;
    for (const auto& url : urls) {
      ParsedUrl u;
      if (!parseHttpUrl(url, what, &u, error)) return false;
      if (!seen.insert(url).second) {
        *error = std::string(what) + " \"" + url + "\" is listed twice";
        return false;
      }
      auto* e = c->add_endpoints();
      e->set_url(url);
      e->set_host(u.host);
      e->set_port(u.port);
    }
    *c->mutable_connect_timeout() = duration(s.connect_timeout_ms);
    if (health) {
      auto* hc = c->mutable_health_check();
      hc->set_path(s.health_path);
      *hc->mutable_interval() = duration(s.health_interval_ms);
      *hc->mutable_timeout() = duration(s.health_timeout_ms);
      hc->set_unhealthy_threshold(static_cast<uint32_t>(s.unhealthy_threshold));
      hc->set_healthy_threshold(static_cast<uint32_t>(s.healthy_threshold));
    }
    auto* od = c->mutable_outlier_detection();
    od->set_consecutive_failures(static_cast<uint32_t>(s.ejection_failures));
    *od->mutable_ejection_time() = duration(s.ejection_time_ms);
    c->set_max_idle_connections_per_endpoint(static_cast<uint32_t>(s.max_idle));
    *c->mutable_idle_connection_timeout() = duration(s.idle_connection_timeout_ms);
    c->set_max_retries(static_cast<uint32_t>(s.retries));
    *c->mutable_dns_refresh_interval() = duration(s.dns_refresh_ms);
    return true;
  };
  if (!addCluster("routers", s.routers, "router URL", true)) return false;
  if (!s.controller_url.empty() &&
      !addCluster("controller", {s.controller_url}, "controller_url", false)) {
    return false;
  }

  auto route = [&](const char* name, const char* path, bool exact,
                   std::initializer_list<const char*> methods) {
    auto* r = snap.add_routes();
    r->set_name(name);
    if (exact) {
      r->set_exact_path(path);
    } else {
      r->set_path_prefix(path);
    }
    for (const char* m : methods) r->add_methods(m);
    return r;
  };
  auto inference = [](edge::v1::Route* r, bool tokens) {
    r->set_required_scope(edge::v1::SCOPE_INFERENCE);
    r->set_rate_limited(true);
    r->set_count_tokens(tokens);
  };
  route("health", "/health", true, {"GET", "HEAD"})->set_builtin(edge::v1::BUILTIN_HANDLER_HEALTH);
  route("metrics", "/metrics", true, {"GET"})->set_builtin(edge::v1::BUILTIN_HANDLER_METRICS);
  {
    auto* r = route("upstreams", "/api/v1/upstreams", true, {"GET"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_UPSTREAMS);
    // Router addresses are internal: with keys required, only admins see them.
    if (s.require_api_key) r->set_required_scope(edge::v1::SCOPE_ADMIN);
  }
  // The admin REST API (controlplane/core/admin_rest): admin keys only.
  {
    auto* r = route("clients", "/api/v1/clients", false, {"GET", "POST", "DELETE"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_ADMIN);
    r->set_required_scope(edge::v1::SCOPE_ADMIN);
  }
  // The web chat's actions and widgets (before the admin plugins routes,
  // which would match it): any caller of the chat, by key or session.
  {
    auto* r = route("plugins_ui", "/api/v1/plugins/ui", true, {"GET"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_WEBCHAT);
    r->set_required_scope(edge::v1::SCOPE_INFERENCE);
  }
  {
    auto* r = route("plugins", "/api/v1/plugins", false, {"GET", "POST", "PUT"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_ADMIN);
    r->set_required_scope(edge::v1::SCOPE_ADMIN);
  }
  {
    auto* r = route("farm", "/api/v1/farm", true, {"GET"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_ADMIN);
    r->set_required_scope(edge::v1::SCOPE_ADMIN);
  }
  {
    auto* r = route("certificates", "/api/v1/certificates", false, {"GET", "POST"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_ADMIN);
    r->set_required_scope(edge::v1::SCOPE_ADMIN);
  }
  {
    auto* r = route("usage", "/api/v1/usage", true, {"GET"});
    r->set_builtin(edge::v1::BUILTIN_HANDLER_USAGE);
    r->set_required_scope(edge::v1::SCOPE_INFERENCE);
  }
  // The embedded web chat: pages and assets are public (the page itself
  // sends the browser to /login when keys are required); the session
  // endpoint (filters/auth/session_filter.h) logs a browser in and out.
  for (const char* p : {"/", "/chat", "/login"}) {
    route(p[1] ? p + 1 : "root", p, true, {"GET", "HEAD"})
        ->set_builtin(edge::v1::BUILTIN_HANDLER_WEBCHAT);
  }
  route("chat_assets", "/chat/assets/", false, {"GET", "HEAD"})
      ->set_builtin(edge::v1::BUILTIN_HANDLER_WEBCHAT);
  route("chat_plugins", "/chat/plugins/", false, {"GET", "HEAD"})
      ->set_builtin(edge::v1::BUILTIN_HANDLER_WEBCHAT);
  route("session", "/api/v1/session", true, {"GET", "POST", "DELETE"})
      ->set_builtin(edge::v1::BUILTIN_HANDLER_SESSION);
  auto* chat = route("chat_completions", "/v1/chat/completions", true, {"POST"});
  chat->set_cluster("routers");
  inference(chat, true);
  auto* completions = route("completions", "/v1/completions", true, {"POST"});
  completions->set_cluster("routers");
  inference(completions, true);
  auto* embeddings = route("embeddings", "/v1/embeddings", true, {"POST"});
  embeddings->set_cluster("routers");
  inference(embeddings, false);
  auto* models = route("models", "/v1/models", false, {"GET"});
  models->set_cluster("routers");
  inference(models, false);
  auto* other = route("openai_other", "/v1/", false, {});
  other->set_cluster("routers");
  inference(other, false);
  // The NAT tunnel: the handler checks each endpoint's scope (worker for
  // the worker's side, router or admin for forward and the list).
  auto* tunnel_route = route("tunnel", "/api/v1/tunnel/", false, {"GET", "POST"});
  tunnel_route->set_builtin(edge::v1::BUILTIN_HANDLER_TUNNEL);
  // A worker posts a whole streamed answer as one body.
  *tunnel_route->mutable_body_timeout() = duration(s.tunnel_answer_timeout_ms);
  if (!s.controller_url.empty()) {
    // Remote workers register through the Edge (the seed's proxy table).
    for (const char* p : {"/api/v1/workers/", "/api/v1/data-workers/", "/api/v1/science-workers/",
                          "/api/v1/training-workers/", "/api/v1/pipeline/"}) {
      std::string name = std::string("controller_") + (p + 8);
      for (char& ch : name) {
        if (ch == '/' || ch == '-') ch = '_';
      }
      while (!name.empty() && name.back() == '_') name.pop_back();
      auto* r = route(name.c_str(), p, false, {"GET", "POST"});
      r->set_cluster("controller");
      r->set_required_scope(edge::v1::SCOPE_WORKER);
      r->set_rate_limited(true);
      *r->mutable_timeout() = duration(s.controller_timeout_ms);
    }
  }
  out->log_level = s.log_level;
  snap.set_version(std::to_string(std::hash<std::string>{}(snap.SerializeAsString()) % 100000000));
  return true;
}

}  // namespace

std::vector<std::string> splitList(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    size_t b = item.find_first_not_of(" \t"), e = item.find_last_not_of(" \t");
    if (b != std::string::npos) out.push_back(item.substr(b, e - b + 1));
  }
  return out;
}

bool readFile(const std::string& path, const std::string& what, std::string* out,
              std::string* error) {
  if (readWholeFile(path, out, error)) return true;
  *error = what + " " + *error;
  return false;
}

bool readKeyFile(const std::string& path, const std::string& what, std::string* key,
                 std::string* error) {
  std::string text;
  if (!readFile(path, what, &text, error)) return false;
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && (text.back() == '\r' || text.back() == ' ' || text.back() == '\t'))
    text.pop_back();
  if (text.empty()) {
    *error = what + ": " + path + " holds no key";
    return false;
  }
  *key = std::move(text);
  return true;
}

const char* usage() {
  return R"(eldric-edge: the TLS gateway in front of an Eldric LLM cluster.

Usage: eldric-edge [flags]
  --port N            HTTPS port (default 443; 0 picks a free port)
  --http-port N       HTTP port (default 80): redirects to HTTPS, or serves with --no-tls
  --no-tls            serve plain HTTP only (testing, or behind a TLS proxy)
  --cert FILE         certificate chain (PEM)
  --key FILE          private key (PEM, RSA or ECDSA)
  --routers URLS      comma-separated router URLs, e.g. http://10.0.0.5:8881,http://10.0.0.6:8881
  --bind ADDR         listen address (default 0.0.0.0; "::" for IPv6)
  --workers N         worker threads (default: one per core)
  --config FILE       JSON config file (see deploy/edge.example.json); flags override it
  --access-log PATH   JSON access log: "-" for stdout (default), a file, or "off"
  --log-level LEVEL   debug, info, warn, error (default info)
  --mode MODE         single (default) or farm
  --peers LIST        farm: the members as they serve, host:port[,...] (this one may be
                      listed); one of them runs the farm's control plane for all
  --primary           farm: this member is the one (default: the first member's name in
                      byte order, which every member works out alike)
  --farm-port N       farm: the port the primary's control plane listens on (default 8870)
  --control-plane L   farm: eldric-controlplane run on its own, host:port[,host:port]
                      (instead of --peers; what a farm of more than a few members wants)
  --control-plane-ca F, --control-plane-cert F, --control-plane-key F
                      TLS (and mTLS) to the control plane
  --node-id ID        this member's name in the farm (default: hostname:port)
  --api-key KEY       require API keys; KEY is the operator's (inference + admin scopes)
  --api-key-file F    the same, the key read from F's first line (or set ELDRIC_API_KEY)
  --data-dir DIR      where registered clients are kept (default /var/lib/eldric-edge)
  --plugins-dir DIR   installed plugins, one folder each with a manifest.json (default: none)
  --help, --version

Signals: SIGHUP re-reads the config file and certificates without dropping
connections; SIGTERM drains in-flight requests, then exits.
)";
}

bool parseCommandLine(int argc, char** argv, CommandLine* out, std::string* error) {
  FlagParser flags(argc, argv);
  std::string arg;
  while (flags.next(&arg)) {
    if (arg == "--help" || arg == "-h") {
      out->help = true;
    } else if (arg == "--version") {
      out->version = true;
    } else if (arg == "--no-tls") {
      out->no_tls = true;
    } else if (arg == "--config") {
      if (!flags.value(&out->config_file, error)) return false;
    } else if (arg == "--port") {
      if (!flags.value(&out->port, error)) return false;
    } else if (arg == "--http-port") {
      if (!flags.value(&out->http_port, error)) return false;
    } else if (arg == "--bind") {
      if (!flags.value(&out->bind, error)) return false;
    } else if (arg == "--routers") {
      if (!flags.value(&out->routers, error)) return false;
    } else if (arg == "--cert") {
      if (!flags.value(&out->cert, error)) return false;
    } else if (arg == "--key") {
      if (!flags.value(&out->key, error)) return false;
    } else if (arg == "--workers") {
      if (!flags.value(&out->workers, error)) return false;
    } else if (arg == "--mode") {
      if (!flags.value(&out->mode, error)) return false;
    } else if (arg == "--peers") {
      if (!flags.value(&out->peers, error)) return false;
    } else if (arg == "--primary") {
      out->primary = true;
    } else if (arg == "--farm-port") {
      if (!flags.value(&out->farm_port, error)) return false;
    } else if (arg == "--api-key") {
      if (!flags.value(&out->api_key, error)) return false;
    } else if (arg == "--api-key-file") {
      std::string path;
      if (!flags.value(&path, error)) return false;
      if (!readKeyFile(path, "flag --api-key-file", &out->api_key, error)) return false;
    } else if (arg == "--access-log") {
      if (!flags.value(&out->access_log, error)) return false;
    } else if (arg == "--log-level") {
      if (!flags.value(&out->log_level, error)) return false;
    } else if (arg == "--control-plane-ca") {
      if (!flags.value(&out->control_plane_ca, error)) return false;
    } else if (arg == "--control-plane-cert") {
      if (!flags.value(&out->control_plane_cert, error)) return false;
    } else if (arg == "--control-plane-key") {
      if (!flags.value(&out->control_plane_key, error)) return false;
    } else if (arg == "--node-id") {
      if (!flags.value(&out->node_id, error)) return false;
    } else if (arg == "--data-dir") {
      if (!flags.value(&out->data_dir, error)) return false;
    } else if (arg == "--plugins-dir") {
      if (!flags.value(&out->plugins_dir, error)) return false;
    } else if (arg == "--control-plane") {
      if (!flags.value(&out->control_plane, error)) return false;
    } else {
      *error = "unknown flag " + arg + " (see --help)";
      return false;
    }
  }
  // The environment, for units and containers that pass secrets that way;
  // a flag wins.
  if (out->api_key.empty()) {
    if (const char* env = getenv("ELDRIC_API_KEY"); env && *env) out->api_key = env;
  }
  return true;
}

std::vector<std::string> commandLineArgs(const CommandLine& cli) {
  std::vector<std::string> out;
  auto add = [&](const char* flag, const std::string& v) {
    if (v.empty()) return;
    out.push_back(flag);
    out.push_back(v);
  };
  add("--config", cli.config_file);
  add("--log-level", cli.log_level);
  add("--port", cli.port);
  add("--http-port", cli.http_port);
  add("--bind", cli.bind);
  add("--routers", cli.routers);
  add("--cert", cli.cert);
  add("--key", cli.key);
  add("--workers", cli.workers);
  add("--mode", cli.mode);
  add("--peers", cli.peers);
  add("--access-log", cli.access_log);
  add("--control-plane", cli.control_plane);
  add("--data-dir", cli.data_dir);
  add("--control-plane-ca", cli.control_plane_ca);
  add("--control-plane-cert", cli.control_plane_cert);
  add("--control-plane-key", cli.control_plane_key);
  add("--node-id", cli.node_id);
  add("--plugins-dir", cli.plugins_dir);
  add("--farm-port", cli.farm_port);
  if (cli.no_tls) out.push_back("--no-tls");
  if (cli.primary) out.push_back("--primary");
  return out;
}

bool loadFromText(const std::string& text, const std::string& source, const CommandLine& cli,
                  LoadResult* out, std::string* error) {
  Settings s;
  if (!text.empty()) {
    rapidjson::Document doc;
    json::ParseOptions relaxed;
    relaxed.relaxed = true;
    std::string jerr;
    size_t off = 0;
    if (!json::parse(doc, text, &jerr, relaxed, &off)) {
      size_t line = 1 + static_cast<size_t>(std::count(
                            text.begin(), text.begin() + std::min(off, text.size()), '\n'));
      *error = source + ": " + jerr + (off ? " (line " + std::to_string(line) + ")" : "");
      return false;
    }
    std::string werr;
    Walker w(&werr);
    walkFile(w, doc, s);
    if (!werr.empty()) {
      *error = source + ": " + werr;
      return false;
    }
  }
  if (!applyFlags(cli, s, error)) return false;
  if (!cli.log_level.empty()) s.log_level = cli.log_level;
  if (!buildSnapshot(s, source, out, error)) return false;
  return true;
}

bool load(const CommandLine& cli, LoadResult* out, std::string* error) {
  std::string text;
  std::string source = "flags";
  if (!cli.config_file.empty()) {
    if (!readFile(cli.config_file, "config file", &text, error)) return false;
    source = cli.config_file;
    if (text.find_first_not_of(" \t\r\n") == std::string::npos) {
      *error = "config file " + cli.config_file + " is empty";
      return false;
    }
  }
  return loadFromText(text, source, cli, out, error);
}

}  // namespace eldric::config
