#pragma once

// Web chat sessions: a cookie that holds no API key, only the SHA-256 of
// the key it was made from and an expiry, signed with HMAC-SHA256. Every
// request re-checks the key hash against the live key table, so revoking
// a key ends its sessions at once.

#include <cstdint>
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

// Logged-out sessions, refused until they would have expired anyway.
// Process-wide and bounded; a farm member knows only its own logouts (the
// key behind a session is still checked on every request everywhere).
void revokeSession(std::string_view token, int64_t expires_at, int64_t now_s);
bool sessionRevoked(std::string_view token);

// `key_sha256` is the raw 32-byte digest.
std::string signSession(const std::string& signing_key, const std::string& key_sha256, int64_t expires_at);
// Checks the signature against every accepted key and the expiry. On
// success fills `key_sha256` and `expires_at`.
bool verifySession(std::string_view token, const std::vector<std::string>& signing_keys, int64_t now_s,
                   std::string* key_sha256, int64_t* expires_at);
// The value of cookie `name` in a Cookie header, or empty.
std::string_view cookieValue(std::string_view cookie_header, std::string_view name);

}  // namespace eldric::filters::auth
