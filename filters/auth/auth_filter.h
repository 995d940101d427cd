#pragma once

// API key authentication. A key comes as `Authorization: Bearer sk-...` or
// `X-API-Key: sk-...`; it is hashed (SHA-256) and looked up by hash, and
// the stored hash is compared in constant time. Keys exist in the config
// only as hashes. An unknown, expired or revoked key is refused alike
// (401); a key without the route's scope gets 403.

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "dataplane/http/filter.h"
#include "eldric/edge/v1/snapshot.pb.h"
#include "filters/auth/key_attempts.h"
#include "filters/ratelimit/ratelimit_filter.h"

namespace eldric::filters::auth {

// Auth failures by reason, process-wide (bounded label set).
struct AuthStats {
  std::atomic<uint64_t> missing{0}, invalid{0}, expired{0}, forbidden{0}, ok{0};
  // Key attempts refused (429) for too many failures from one address.
  std::atomic<uint64_t> throttled{0};
};
AuthStats& stats();

// Compiled from Snapshot.auth; shared by every stream of a config.
class AuthConfig {
 public:
  explicit AuthConfig(const edge::v1::Auth& auth);
  bool requireKey() const { return require_key_; }
  // Null if the key is unknown. `expired` is set if known but expired.
  std::shared_ptr<const http::ClientIdentity> lookup(std::string_view key, int64_t now_s,
                                                     bool* expired) const;
  // The same by the key's raw SHA-256 (sessions carry the hash, not the key).
  std::shared_ptr<const http::ClientIdentity> lookupHash(std::string_view sha256, int64_t now_s,
                                                         bool* expired) const;
  // The client a verified certificate's subject common name stands for
  // (auth.certificate_clients); null if none.
  std::shared_ptr<const http::ClientIdentity> lookupCertificate(std::string_view subject,
                                                                int64_t now_s) const;
  size_t keyCount() const { return keys_.size(); }
  const std::vector<std::string>& sessionKeys() const { return session_keys_; }
  int64_t sessionTtlSeconds() const { return session_ttl_s_; }
  // A session logged out on any farm member (by the token's raw SHA-256).
  bool loggedOut(std::string_view digest) const {
    return logged_out_.contains(absl::string_view(digest.data(), digest.size()));
  }

 private:
  bool require_key_;
  std::vector<std::string> session_keys_;
  int64_t session_ttl_s_ = 12 * 3600;
  struct Stored {
    std::string sha256;  // raw 32 bytes
    std::shared_ptr<const http::ClientIdentity> identity;
  };
  // By raw hash. absl's map takes a string_view key for find(): looking a
  // presented key up needs no std::string of its digest.
  absl::flat_hash_map<std::string, Stored> keys_;
  absl::flat_hash_set<std::string> logged_out_;
  absl::flat_hash_map<std::string, std::shared_ptr<const http::ClientIdentity>>
      certificate_clients_;
};
using AuthConfigSharedPtr = std::shared_ptr<const AuthConfig>;

// The key a request presents, or empty.
std::string_view presentedKey(const http::RequestHeaders& headers);

// The key that passed is kept as http::kClientCredential on a route that
// needs the admin scope (a farm member hands it to the control plane,
// which checks it again: a member's own certificate may not administer)
// and on one that keeps it (Route::keeps_credential). Nowhere else is a
// key kept past the auth filter.

// A session cookie that verified (signature, expiry, not logged out): what
// a logout at /api/v1/session revokes (SessionFilter).
struct VerifiedSession {
  std::string digest;  // raw SHA-256 of the token's payload
  int64_t expires_at = 0;
};
inline constexpr http::FilterStateKey<VerifiedSession> kVerifiedSession{"auth.session"};

// An OpenAI-shaped refusal (401s carry WWW-Authenticate: Bearer).
void refuse(http::DecoderFilterCallbacks& callbacks, int status, const char* message,
            const char* code);

// Who is calling, by an API key or a web chat session cookie; refuses what
// the route's scope does not allow. Answers nothing itself on success.
class AuthFilter : public http::StreamDecoderFilter {
 public:
  AuthFilter(AuthConfigSharedPtr config, ratelimit::RateLimitConfigSharedPtr limits,
             ratelimit::StateSharedPtr state)
      : config_(std::move(config)), attempts_(std::move(limits), std::move(state)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer&, bool) override {
    return http::FilterDataStatus::Continue;
  }

 private:
  // Authenticates by the session cookie; false if the request must stop.
  bool sessionAuth(http::RequestHeaders& headers, std::string_view token, int scope,
                   bool* authenticated);
  AuthConfigSharedPtr config_;
  KeyAttempts attempts_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

http::FilterFactory makeFactory(AuthConfigSharedPtr config,
                                ratelimit::RateLimitConfigSharedPtr limits,
                                ratelimit::StateSharedPtr state);

}  // namespace eldric::filters::auth
