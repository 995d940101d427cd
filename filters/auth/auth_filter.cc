#include "filters/auth/auth_filter.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <time.h>

#include "dataplane/config/runtime_config.h"

namespace eldric::filters::auth {

AuthStats& stats() {
  static AuthStats* s = new AuthStats();
  return *s;
}

AuthConfig::AuthConfig(const edge::v1::Auth& auth) : require_key_(auth.require_api_key()) {
  for (const auto& k : auth.api_keys()) {
    if (k.sha256().size() != SHA256_DIGEST_LENGTH) continue;
    auto id = std::make_shared<http::ClientIdentity>();
    id->client_id = k.client_id();
    id->client_name = k.client_name();
    id->key_prefix = k.prefix();
    for (int s : k.scopes()) id->scopes |= 1u << s;
    id->requests_per_window = k.requests_per_minute();
    id->tokens_per_window = k.tokens_per_minute();
    id->max_concurrent = k.max_concurrent_requests();
    id->allowed_models.assign(k.allowed_models().begin(), k.allowed_models().end());
    id->expires_at = k.expires_at();
    keys_[k.sha256()] = Stored{k.sha256(), std::move(id)};
  }
}

std::shared_ptr<const http::ClientIdentity> AuthConfig::lookup(std::string_view key, int64_t now_s,
                                                               bool* expired) const {
  *expired = false;
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(key.data()), key.size(), digest);
  std::string hash(reinterpret_cast<const char*>(digest), sizeof digest);
  auto it = keys_.find(hash);
  // The map finds the candidate by hash; the comparison that decides is
  // constant-time over the whole digest.
  if (it == keys_.end() || CRYPTO_memcmp(it->second.sha256.data(), digest, sizeof digest) != 0) return nullptr;
  const auto& id = it->second.identity;
  if (id->expires_at != 0 && id->expires_at <= now_s) {
    *expired = true;
    return nullptr;
  }
  return id;
}

std::string_view presentedKey(const http::RequestHeaders& headers) {
  if (const std::string* auth = headers.headers.get("authorization")) {
    std::string_view v = *auth;
    if (v.size() > 7 && http::equalsIgnoreCase(v.substr(0, 7), "bearer ")) {
      v.remove_prefix(7);
      while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
      while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
      return v;
    }
  }
  if (const std::string* k = headers.headers.get("x-api-key")) return *k;
  return {};
}

void AuthFilter::refuse(int status, const char* message, const char* code) {
  callbacks_->sendLocalReply(http::ErrorReply{status, message, http::defaultErrorType(status), code},
                             [status](http::ResponseHeaders& h) {
                               if (status == 401) h.headers.add("www-authenticate", "Bearer");
                             });
}

http::FilterHeadersStatus AuthFilter::decodeHeaders(http::RequestHeaders& headers, bool) {
  const config::CompiledRoute* route = callbacks_->route();
  int scope = route ? route->required_scope : 0;
  std::string_view key = presentedKey(headers);
  auto& st = stats();
  if (!key.empty()) {
    bool expired = false;
    auto id = config_->lookup(key, static_cast<int64_t>(time(nullptr)), &expired);
    // Never echo the key: not in the message, not in a log.
    if (!id) {
      (expired ? st.expired : st.invalid).fetch_add(1, std::memory_order_relaxed);
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
    // The key has done its job; do not forward it to the cluster.
    headers.headers.remove("authorization");
    headers.headers.remove("x-api-key");
    return http::FilterHeadersStatus::Continue;
  }
  bool needs_key = scope == edge::v1::SCOPE_ADMIN || scope == edge::v1::SCOPE_WORKER ||
                   (scope != 0 && config_->requireKey());
  if (needs_key) {
    st.missing.fetch_add(1, std::memory_order_relaxed);
    refuse(401, "missing API key: send Authorization: Bearer sk-... or X-API-Key", "missing_api_key");
    return http::FilterHeadersStatus::StopIteration;
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterFactory makeFactory(const edge::v1::Auth& auth) {
  auto config = std::make_shared<const AuthConfig>(auth);
  return [config](http::FilterChainBuilder& builder) {
    builder.addDecoderFilter(std::make_unique<AuthFilter>(config));
  };
}

}  // namespace eldric::filters::auth
