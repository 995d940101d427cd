#pragma once

// Web chat sessions: a cookie that holds no API key, only the SHA-256 of
// the key it was made from, an expiry and a random session id, signed with
// HMAC-SHA256. Every
// request re-checks the key hash against the live key table, so revoking
// a key ends its sessions at once.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace eldric::filters::auth {

// Over HTTPS the cookie takes the __Host- prefix: the browser then only
// accepts it Secure, for Path=/ and for this host alone (no Domain), so a
// sibling subdomain cannot set or shadow it. Plain HTTP (a test or a
// loopback setup) keeps the bare name, which browsers accept there.
constexpr std::string_view kSessionCookie = "eldric_session";
constexpr std::string_view kSecureSessionCookie = "__Host-eldric_session";

// Sessions logged out here, refused until they would have expired anyway,
// known by the SHA-256 of the token's signed payload (verifySession's
// `session_digest`): the token itself is not kept, nor sent anywhere.
// Process-wide and bounded (kMaxLocalLogouts). In a farm each member sends
// its logouts to the control plane, whose snapshot lists them for every
// member (Auth.logged_out_sessions); this set covers the time until then.
constexpr size_t kMaxLocalLogouts = 100000;
void revokeSession(std::string_view digest, int64_t expires_at, int64_t now_s);
bool sessionRevoked(std::string_view digest);
struct LoggedOutSession {
  std::string digest;  // raw SHA-256 of the token's payload
  int64_t expires_at = 0;
};
// Up to `max` logouts made here that have not expired at `now_s` and that
// `known` (the farm's list) does not hold.
std::vector<LoggedOutSession> localLogouts(
    int64_t now_s, size_t max, const std::function<bool(std::string_view digest)>& known);

// `key_sha256` is the raw 32-byte digest.
std::string signSession(const std::string& signing_key, const std::string& key_sha256,
                        int64_t expires_at);
// Checks the encoding (canonical base64url only), the signature against
// every accepted key and the expiry. On success fills `key_sha256`,
// `expires_at` and, if given, `session_digest`: the raw SHA-256 of the
// signed payload, the session's identity however the token is spelled.
bool verifySession(std::string_view token, const std::vector<std::string>& signing_keys,
                   int64_t now_s, std::string* key_sha256, int64_t* expires_at,
                   std::string* session_digest = nullptr);
// The value of cookie `name` in a Cookie header, or empty.
std::string_view cookieValue(std::string_view cookie_header, std::string_view name);

}  // namespace eldric::filters::auth
