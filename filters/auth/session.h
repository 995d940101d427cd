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

constexpr std::string_view kSessionCookie = "eldric_session";

// `key_sha256` is the raw 32-byte digest.
std::string signSession(const std::string& signing_key, const std::string& key_sha256, int64_t expires_at);
// Checks the signature against every accepted key and the expiry. On
// success fills `key_sha256` and `expires_at`.
bool verifySession(std::string_view token, const std::vector<std::string>& signing_keys, int64_t now_s,
                   std::string* key_sha256, int64_t* expires_at);
// The value of cookie `name` in a Cookie header, or empty.
std::string_view cookieValue(std::string_view cookie_header, std::string_view name);

}  // namespace eldric::filters::auth
