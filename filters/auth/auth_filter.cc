#include "filters/auth/auth_filter.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <time.h>

#include "absl/strings/string_view.h"
#include "common/json.h"
#include "common/log.h"
#include "dataplane/http/reply.h"
#include "dataplane/http/route.h"
#include "filters/auth/session.h"
#include "rapidjson/document.h"

namespace eldric::filters::auth {

AuthStats& stats() {
  static AuthStats* s = new AuthStats();
  return *s;
}

AuthConfig::AuthConfig(const edge::v1::Auth& auth) : require_key_(auth.require_api_key()) {
  session_keys_.assign(auth.session_signing_keys().begin(), auth.session_signing_keys().end());
  if (auth.session_ttl().seconds() > 0) session_ttl_s_ = auth.session_ttl().seconds();
  for (const auto& k : auth.api_keys()) {
    if (k.sha256().size() != SHA256_DIGEST_LENGTH) continue;
    auto id = std::make_shared<http::ClientIdentity>();
    id->client_id = k.client_id();
    id->client_name = k.client_name();
    id->key_prefix = k.prefix();
    // Only scopes the enum names: proto3 carries any int32, and a shift by
    // 34 wraps to bit 2 (admin) on x86. An unknown scope grants nothing.
    for (int s : k.scopes()) {
      if (edge::v1::Scope_IsValid(s) && s > 0 && s < 32) id->scopes |= 1u << s;
    }
    id->requests_per_window = k.requests_per_minute();
    id->tokens_per_window = k.tokens_per_minute();
    id->max_concurrent = k.max_concurrent_requests();
    id->allowed_models.assign(k.allowed_models().begin(), k.allowed_models().end());
    id->expires_at = k.expires_at();
    keys_[k.sha256()] = Stored{k.sha256(), std::move(id)};
  }
  for (const auto& l : auth.logged_out_sessions()) {
    if (l.token_sha256().size() == SHA256_DIGEST_LENGTH) logged_out_.insert(l.token_sha256());
  }
}

std::shared_ptr<const http::ClientIdentity> AuthConfig::lookup(std::string_view key, int64_t now_s,
                                                               bool* expired) const {
  *expired = false;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(key.data()), key.size(), digest);
  return lookupHash(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest), now_s,
                    expired);
}

std::shared_ptr<const http::ClientIdentity> AuthConfig::lookupHash(std::string_view hash,
                                                                   int64_t now_s,
                                                                   bool* expired) const {
  *expired = false;
  if (hash.size() != SHA256_DIGEST_LENGTH) return nullptr;
  const unsigned char* digest = reinterpret_cast<const unsigned char*>(hash.data());
  // absl's own string_view (this absl does not alias std::string_view).
  auto it = keys_.find(absl::string_view(hash.data(), hash.size()));
  // The map finds the candidate by hash; the comparison that decides is
  // constant-time over the whole digest.
  if (it == keys_.end() ||
      CRYPTO_memcmp(it->second.sha256.data(), digest, SHA256_DIGEST_LENGTH) != 0) {
    return nullptr;
  }
  const auto& id = it->second.identity;
  if (id->expires_at != 0 && id->expires_at <= now_s) {
    *expired = true;
    return nullptr;
  }
  return id;
}

std::string_view presentedKey(const http::RequestHeaders& headers) {
  if (std::optional<std::string_view> auth = headers.headers.get("authorization")) {
    std::string_view v = *auth;
    if (v.size() > 7 && http::equalsIgnoreCase(v.substr(0, 7), "bearer ")) {
      v.remove_prefix(7);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      return v;
    }
  }
  if (std::optional<std::string_view> k = headers.headers.get("x-api-key")) return *k;
  return {};
}

// The stream's entry in the failed-attempts table for its client's IP (or
// IPv6 prefix), looked up once.
ratelimit::Entry* AuthFilter::failureEntry(const http::RequestHeaders& headers) {
  if (!limits_ || !state_ || limits_->auth_failures_per_ip == 0) return nullptr;
  if (failures_) return failures_;
  auto& info = callbacks_->streamInfo();
  if (info.client_ip.empty()) {
    info.client_ip = ratelimit::clientIp(callbacks_->peerIp(), headers, limits_->trusted_proxies);
  }
  static constexpr http::FilterStateKey<ratelimit::Entry> kFailures{"auth.failures"};
  failures_ = &ratelimit::streamCounters(info, kFailures, state_->auth_failures,
                                         ratelimit::ipKey(info.client_ip, limits_->ipv6_prefix),
                                         ratelimit::nowSeconds());
  return failures_;
}

bool AuthFilter::attemptAllowed(const http::RequestHeaders& headers) {
  ratelimit::Entry* e = failureEntry(headers);
  if (!e) return true;
  uint64_t now = ratelimit::nowSeconds();
  uint64_t limit = limits_->auth_failures_per_ip;
  if (e->requests.count(now) < limit) return true;
  stats().throttled.fetch_add(1, std::memory_order_relaxed);
  ratelimit::sendRefusal(*callbacks_, "auth", limit, e->requests.secondsUntilAvailable(now, limit),
                         "too many failed API key attempts from this address");
  return false;
}

void AuthFilter::failedAttempt() {
  if (failures_) failures_->requests.add(ratelimit::nowSeconds(), 1);
}

void AuthFilter::refuse(int status, const char* message, const char* code) {
  callbacks_->sendLocalReply(
      http::ErrorReply{status, message, http::defaultErrorType(status), code},
      [status](http::ResponseHeaders& h) {
        if (status == 401) h.headers.add("www-authenticate", "Bearer");
      });
}

void AuthFilter::reply(int status, std::string body,
                       std::vector<std::pair<std::string, std::string>> extra) {
  http::sendJsonReply(*callbacks_, status, std::move(body), extra);
}

bool AuthFilter::sessionAuth(http::RequestHeaders& headers, std::string_view token, int scope,
                             bool* authenticated) {
  *authenticated = false;
  std::string hash;
  int64_t expires = 0;
  int64_t now = static_cast<int64_t>(time(nullptr));
  // A bad or stale cookie is no credential at all: the request goes on as
  // anonymous (and meets the 401 below if it needs a key).
  std::string digest;
  if (!verifySession(token, config_->sessionKeys(), now, &hash, &expires, &digest)) return true;
  if (sessionRevoked(digest) || config_->loggedOut(digest))
    return true;  // here, or on another member
  session_expires_ = expires;
  session_digest_ = std::move(digest);
  bool expired = false;
  auto id = config_->lookupHash(hash, now, &expired);
  if (!id) return true;  // the key was revoked or expired: so is the session
  if (id->hasScope(edge::v1::SCOPE_ADMIN)) {
    // A session is for the web chat: it never carries the admin scope (a
    // stolen cookie or a cross-site slip must not reach the admin API).
    // Admin calls take the key itself.
    auto chat_only = std::make_shared<http::ClientIdentity>(*id);
    chat_only->scopes &= ~(1u << edge::v1::SCOPE_ADMIN);
    id = std::move(chat_only);
  }
  // A cookie rides along on any request the browser makes; only the page's
  // own requests may use it (SameSite=Strict already keeps it off most
  // cross-site ones; this covers the rest).
  if (scope != 0) {
    std::optional<std::string_view> site = headers.headers.get("sec-fetch-site");
    std::optional<std::string_view> origin = headers.headers.get("origin");
    bool same = true;
    if (site) {
      same = *site == "same-origin";
    } else if (origin) {
      std::optional<std::string_view> host = headers.headers.get("host");
      same = host && *origin == std::string(callbacks_->scheme()).append("://").append(*host);
    }
    if (!same) {
      stats().forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(403,
             "cross-site request refused: the session cookie is only for this site's own pages",
             "cross_site_request");
      return false;
    }
  }
  auto& info = callbacks_->streamInfo();
  info.client_name = id->client_name;
  info.identity = std::move(id);
  *authenticated = true;
  return true;
}

http::FilterHeadersStatus AuthFilter::decodeHeaders(http::RequestHeaders& headers,
                                                    bool end_stream) {
  const http::Route* route = callbacks_->route();
  int scope = route ? route->required_scope : 0;
  session_route_ = route && route->handler == kSessionHandler;
  std::string_view key = presentedKey(headers);
  auto& st = stats();
  if (!key.empty()) {
    if (!attemptAllowed(headers)) return http::FilterHeadersStatus::StopIteration;
    bool expired = false;
    auto id = config_->lookup(key, static_cast<int64_t>(time(nullptr)), &expired);
    // Never echo the key: not in the message, not in a log.
    if (!id) {
      (expired ? st.expired : st.invalid).fetch_add(1, std::memory_order_relaxed);
      failedAttempt();
      refuse(401, "invalid API key", "invalid_api_key");
      return http::FilterHeadersStatus::StopIteration;
    }
    if (scope != 0 && !id->hasScope(scope)) {
      st.forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(403, "this API key may not use this endpoint", "insufficient_scope");
      return http::FilterHeadersStatus::StopIteration;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    auto& info = callbacks_->streamInfo();
    info.client_name = id->client_name;
    info.identity = std::move(id);
    if (scope == edge::v1::SCOPE_ADMIN)
      info.filter_state.set(kAdminCredential, std::make_shared<std::string>(key));
    // The key has done its job; do not forward it to the cluster.
    headers.headers.remove("authorization");
    headers.headers.remove("x-api-key");
  } else if (std::optional<std::string_view> cookie = headers.headers.get("cookie")) {
    std::string_view token = cookieValue(*cookie, kSecureSessionCookie);
    if (token.empty()) token = cookieValue(*cookie, kSessionCookie);
    bool authenticated = false;
    if (!token.empty() && !sessionAuth(headers, token, scope, &authenticated)) {
      return http::FilterHeadersStatus::StopIteration;
    }
    const auto& id = callbacks_->streamInfo().identity;
    if (authenticated && scope != 0 && !id->hasScope(scope)) {
      st.forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(403, "this API key may not use this endpoint", "insufficient_scope");
      return http::FilterHeadersStatus::StopIteration;
    }
    // The cluster has no use for the Edge's cookie.
    if (!token.empty()) headers.headers.remove("cookie");
  }
  if (session_route_) {
    if (!end_stream) return http::FilterHeadersStatus::Continue;
    handleSession("");
    return http::FilterHeadersStatus::StopIteration;
  }
  if (callbacks_->streamInfo().identity) return http::FilterHeadersStatus::Continue;
  bool needs_key = scope == edge::v1::SCOPE_ADMIN || scope == edge::v1::SCOPE_WORKER ||
                   (scope != 0 && config_->requireKey());
  if (needs_key) {
    st.missing.fetch_add(1, std::memory_order_relaxed);
    refuse(401, "missing API key: send Authorization: Bearer sk-... or X-API-Key",
           "missing_api_key");
    return http::FilterHeadersStatus::StopIteration;
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterDataStatus AuthFilter::decodeData(Buffer& data, bool end_stream) {
  if (!session_route_) return http::FilterDataStatus::Continue;
  if (!end_stream) return http::FilterDataStatus::StopIterationAndBuffer;
  handleSession(data.toString());
  data.clear();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

bool AuthFilter::clientUsesHttps(const http::RequestHeaders& req) {
  if (callbacks_->scheme() == "https") return true;
  // TLS ended at a trusted proxy in front: its word for the scheme.
  if (!limits_ || limits_->trusted_proxies.empty()) return false;
  if (!ratelimit::isTrustedProxy(callbacks_->peerIp(), limits_->trusted_proxies)) return false;
  std::optional<std::string_view> proto = req.headers.get("x-forwarded-proto");
  return proto && http::equalsIgnoreCase(*proto, "https");
}

void AuthFilter::handleSession(const std::string& body) {
  const auto& req = callbacks_->requestHeaders();
  const auto& id = callbacks_->streamInfo().identity;
  bool secure = clientUsesHttps(req);
  std::string_view cookie_name = secure ? kSecureSessionCookie : kSessionCookie;
  std::string require = config_->requireKey() ? "true" : "false";
  if (req.method == "GET") {
    std::string out = "{\"authenticated\":" + std::string(id ? "true" : "false") +
                      ",\"auth_required\":" + require;
    if (id) {
      out += ",\"client\":";
      log::appendJsonString(out, id->client_name);
    }
    out += "}";
    reply(200, out, {});
    return;
  }
  std::string clear = std::string(cookie_name) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" +
                      (secure ? "; Secure" : "");
  if (req.method == "DELETE") {
    // Logged out on the server too: the cookie's token is refused from now
    // on, even if a copy of it outlives the browser's.
    if (!session_digest_.empty() && session_expires_) {
      revokeSession(session_digest_, session_expires_, static_cast<int64_t>(time(nullptr)));
    }
    reply(200, "{\"authenticated\":false,\"auth_required\":" + require + "}",
          {{"set-cookie", clear}});
    return;
  }
  if (req.method != "POST") {
    refuse(405, "use GET, POST or DELETE on /api/v1/session", "method_not_allowed");
    return;
  }
  // Login CSRF: a page elsewhere must not log the browser in with the
  // attacker's key. A cross-site form cannot send a JSON content type
  // without a CORS preflight (which is never granted), and a browser's
  // Origin must be this site.
  std::optional<std::string_view> ct = req.headers.get("content-type");
  if (!ct || ct->find("application/json") == std::string_view::npos) {
    refuse(415, "send the key as JSON: Content-Type: application/json", "unsupported_media_type");
    return;
  }
  if (std::optional<std::string_view> origin = req.headers.get("origin")) {
    std::optional<std::string_view> host = req.headers.get("host");
    std::string self =
        std::string(secure ? "https" : "http") + "://" + std::string(host.value_or(""));
    if (!host || *origin != self) {
      stats().forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(403, "cross-site login refused: Origin is not this site", "cross_site_request");
      return;
    }
  }
  rapidjson::Document doc;
  if (!json::parse(doc, body, nullptr) || !doc.IsObject() || !doc.HasMember("api_key") ||
      !doc["api_key"].IsString()) {
    refuse(400, "send {\"api_key\": \"sk-...\"}", "invalid_json");
    return;
  }
  if (!attemptAllowed(callbacks_->requestHeaders())) return;
  std::string key(doc["api_key"].GetString(), doc["api_key"].GetStringLength());
  int64_t now = static_cast<int64_t>(time(nullptr));
  bool expired = false;
  auto who = config_->lookup(key, now, &expired);
  if (!who || config_->sessionKeys().empty()) {
    stats().invalid.fetch_add(1, std::memory_order_relaxed);
    if (!who) failedAttempt();
    callbacks_->sendLocalReply(
        http::ErrorReply{401, "invalid API key", "authentication_error", "invalid_api_key"},
        [clear](http::ResponseHeaders& h) { h.headers.add("set-cookie", clear); });
    return;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(key.data()), key.size(), digest);
  int64_t expires = now + config_->sessionTtlSeconds();
  if (who->expires_at != 0 && who->expires_at < expires) expires = who->expires_at;
  std::string token =
      signSession(config_->sessionKeys()[0],
                  std::string(reinterpret_cast<const char*>(digest), sizeof digest), expires);
  std::string cookie = std::string(cookie_name) + "=" + token +
                       "; Path=/; Max-Age=" + std::to_string(expires - now) +
                       "; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "");
  callbacks_->streamInfo().client_name = who->client_name;
  std::string out = "{\"authenticated\":true,\"client\":";
  log::appendJsonString(out, who->client_name);
  out += ",\"expires_at\":" + std::to_string(expires) + "}";
  reply(200, out, {{"set-cookie", cookie}});
}

http::FilterFactory makeFactory(const edge::v1::Auth& auth,
                                ratelimit::RateLimitConfigSharedPtr limits,
                                ratelimit::StateSharedPtr state) {
  auto config = std::make_shared<const AuthConfig>(auth);
  return [config, limits, state](http::FilterChainBuilder& builder) {
    builder.addDecoderFilter(std::make_unique<AuthFilter>(config, limits, state));
  };
}

}  // namespace eldric::filters::auth
