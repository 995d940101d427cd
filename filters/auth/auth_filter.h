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
};
using AuthConfigSharedPtr = std::shared_ptr<const AuthConfig>;

// The key a request presents, or empty.
std::string_view presentedKey(const http::RequestHeaders& headers);

// On a route that needs the admin scope, the key that passed: a farm
// member hands it to the control plane, which checks it again (a member's
// own certificate may not administer). Nowhere else is a key kept past
// the auth filter.
inline constexpr http::FilterStateKey<std::string> kAdminCredential{"auth.admin_credential"};

// Also answers /api/v1/session (log in with a key, who am I, log out): the
// session is the auth filter's own business.
class AuthFilter : public http::StreamDecoderFilter {
 public:
  AuthFilter(AuthConfigSharedPtr config, ratelimit::RateLimitConfigSharedPtr limits,
             ratelimit::StateSharedPtr state)
      : config_(std::move(config)), limits_(std::move(limits)), state_(std::move(state)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;

 private:
  void refuse(int status, const char* message, const char* code);
  // Key guessing: false (and a 429 sent) when this client's IP is past its
  // failed attempts for the window; failedAttempt() counts one.
  bool attemptAllowed(const http::RequestHeaders& headers);
  void failedAttempt();
  ratelimit::Entry* failureEntry(const http::RequestHeaders& headers);
  // Authenticates by the session cookie; false if the request must stop.
  bool sessionAuth(http::RequestHeaders& headers, std::string_view token, int scope,
                   bool* authenticated);
  void handleSession(const std::string& body);
  void reply(int status, std::string body,
             std::vector<std::pair<std::string, std::string>> headers);
  // The scheme the client used: TLS here, or X-Forwarded-Proto: https
  // from a trusted proxy.
  bool clientUsesHttps(const http::RequestHeaders& req);
  bool session_route_ = false;
  int64_t session_expires_ = 0;  // once verified
  std::string session_digest_;   // once verified: what a logout revokes
  AuthConfigSharedPtr config_;
  ratelimit::RateLimitConfigSharedPtr limits_;
  ratelimit::StateSharedPtr state_;
  ratelimit::Entry* failures_ = nullptr;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

// The handler name (http::Route::handler) of /api/v1/session, which this
// filter answers itself: login with a key, logout.
inline constexpr std::string_view kSessionHandler = "session";

http::FilterFactory makeFactory(const edge::v1::Auth& auth,
                                ratelimit::RateLimitConfigSharedPtr limits,
                                ratelimit::StateSharedPtr state);

}  // namespace eldric::filters::auth
