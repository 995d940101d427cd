#include "filters/auth/auth_filter.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <time.h>

#include "absl/strings/string_view.h"
#include "dataplane/http/route.h"
#include "filters/auth/session.h"

namespace eldric::filters::auth {

AuthStats& stats() {
  static AuthStats* s = new AuthStats();
  return *s;
}

AuthConfig::AuthConfig(const edge::v1::Auth& auth) : require_key_(auth.require_api_key()) {
  session_keys_.assign(auth.session_signing_keys().begin(), auth.session_signing_keys().end());
  if (auth.session_ttl().seconds() > 0) session_ttl_s_ = auth.session_ttl().seconds();
  for (const auto& k : auth.api_keys()) {
    bool by_certificate = !k.certificate_subject().empty();
    if (!by_certificate && k.sha256().size() != SHA256_DIGEST_LENGTH) continue;
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
    id->tools.assign(k.tools().begin(), k.tools().end());
    id->expires_at = k.expires_at();
    if (by_certificate) {
      certificate_clients_[k.certificate_subject()] = std::move(id);
      continue;
    }
    keys_[k.sha256()] = Stored{k.sha256(), std::move(id)};
  }
  for (const auto& l : auth.logged_out_sessions()) {
    if (l.token_sha256().size() == SHA256_DIGEST_LENGTH) logged_out_.insert(l.token_sha256());
  }
}

std::shared_ptr<const http::ClientIdentity> AuthConfig::lookupCertificate(std::string_view subject,
                                                                          int64_t now_s) const {
  auto it = certificate_clients_.find(absl::string_view(subject.data(), subject.size()));
  if (it == certificate_clients_.end()) return nullptr;
  if (it->second->expires_at > 0 && it->second->expires_at <= now_s) return nullptr;
  return it->second;
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

void refuse(http::DecoderFilterCallbacks& callbacks, int status, const char* message,
            const char* code) {
  callbacks.sendLocalReply(http::ErrorReply{status, message, http::defaultErrorType(status), code},
                           [status](http::ResponseHeaders& h) {
                             if (status == 401) h.headers.add("www-authenticate", "Bearer");
                           });
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
  callbacks_->streamInfo().filter_state.set(
      kVerifiedSession,
      std::make_shared<VerifiedSession>(VerifiedSession{std::move(digest), expires}));
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
      refuse(*callbacks_, 403,
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

http::FilterHeadersStatus AuthFilter::decodeHeaders(http::RequestHeaders& headers, bool) {
  const http::Route* route = callbacks_->route();
  int scope = route ? route->required_scope : 0;
  std::string_view key = presentedKey(headers);
  auto& st = stats();
  if (!key.empty()) {
    if (!attempts_.allowed(*callbacks_, headers)) return http::FilterHeadersStatus::StopIteration;
    bool expired = false;
    auto id = config_->lookup(key, static_cast<int64_t>(time(nullptr)), &expired);
    // Never echo the key: not in the message, not in a log.
    if (!id) {
      (expired ? st.expired : st.invalid).fetch_add(1, std::memory_order_relaxed);
      attempts_.failed();
      refuse(*callbacks_, 401, "invalid API key", "invalid_api_key");
      return http::FilterHeadersStatus::StopIteration;
    }
    if (scope != 0 && !id->hasScope(scope)) {
      st.forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(*callbacks_, 403, "this API key may not use this endpoint", "insufficient_scope");
      return http::FilterHeadersStatus::StopIteration;
    }
    st.ok.fetch_add(1, std::memory_order_relaxed);
    auto& info = callbacks_->streamInfo();
    info.client_name = id->client_name;
    info.identity = std::move(id);
    if (scope == edge::v1::SCOPE_ADMIN || (route && route->keeps_credential))
      info.filter_state.set(http::kClientCredential, std::make_shared<std::string>(key));
    // The key has done its job; do not forward it to the cluster, nor a
    // session cookie that came along (the router drops every cookie too).
    headers.headers.remove("authorization");
    headers.headers.remove("x-api-key");
    if (std::optional<std::string_view> cookie = headers.headers.get("cookie")) {
      if (!cookieValue(*cookie, kSecureSessionCookie).empty() ||
          !cookieValue(*cookie, kSessionCookie).empty()) {
        headers.headers.remove("cookie");
      }
    }
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
      refuse(*callbacks_, 403, "this API key may not use this endpoint", "insufficient_scope");
      return http::FilterHeadersStatus::StopIteration;
    }
    // The cluster has no use for the Edge's cookie.
    if (!token.empty()) headers.headers.remove("cookie");
  }
  if (callbacks_->streamInfo().identity) return http::FilterHeadersStatus::Continue;
  // No key, no session: a client certificate the listener verified may
  // name a client (auth.certificate_clients). A key, when given, wins.
  if (const std::string& subject = callbacks_->peerCertificateSubject(); !subject.empty()) {
    if (auto id = config_->lookupCertificate(subject, static_cast<int64_t>(time(nullptr)))) {
      if (scope != 0 && !id->hasScope(scope)) {
        st.forbidden.fetch_add(1, std::memory_order_relaxed);
        refuse(*callbacks_, 403, "this client certificate may not use this endpoint",
               "insufficient_scope");
        return http::FilterHeadersStatus::StopIteration;
      }
      st.ok.fetch_add(1, std::memory_order_relaxed);
      auto& info = callbacks_->streamInfo();
      info.client_name = id->client_name;
      info.identity = std::move(id);
      return http::FilterHeadersStatus::Continue;
    }
  }
  bool needs_key = scope == edge::v1::SCOPE_ADMIN || scope == edge::v1::SCOPE_WORKER ||
                   (scope != 0 && config_->requireKey());
  if (needs_key) {
    st.missing.fetch_add(1, std::memory_order_relaxed);
    refuse(*callbacks_, 401, "missing API key: send Authorization: Bearer sk-... or X-API-Key",
           "missing_api_key");
    return http::FilterHeadersStatus::StopIteration;
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterFactory makeFactory(AuthConfigSharedPtr config,
                                ratelimit::RateLimitConfigSharedPtr limits,
                                ratelimit::StateSharedPtr state) {
  return [config, limits, state](http::FilterChainBuilder& builder) {
    builder.addDecoderFilter(std::make_unique<AuthFilter>(config, limits, state));
  };
}

}  // namespace eldric::filters::auth
