#pragma once

// Base64url without padding (RFC 4648 section 5), as JWS (RFC 7515) and
// the Edge's session cookies spell bytes.

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace eldric {

inline constexpr char kBase64UrlAlphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

inline std::string base64UrlEncode(std::string_view in) {
  const char* a = kBase64UrlAlphabet;
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8) | uint8_t(in[i + 2]);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    out += a[(v >> 6) & 63];
    out += a[v & 63];
  }
  if (i + 1 == in.size()) {
    uint32_t v = uint8_t(in[i]) << 16;
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
  } else if (i + 2 == in.size()) {
    uint32_t v = (uint8_t(in[i]) << 16) | (uint8_t(in[i + 1]) << 8);
    out += a[v >> 18];
    out += a[(v >> 12) & 63];
    out += a[(v >> 6) & 63];
  }
  return out;
}

// Canonical spellings only: no padding, no dangling character (6 bits
// that make no byte) and no set bits past the last byte, so that one value
// has one spelling.
inline bool base64UrlDecode(std::string_view in, std::string* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    const char* p = static_cast<const char*>(memchr(kBase64UrlAlphabet, c, 64));
    if (!p || c == '\0') return false;
    acc = (acc << 6) | static_cast<uint32_t>(p - kBase64UrlAlphabet);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return bits < 6 && (acc & ((1u << bits) - 1)) == 0;
}

}  // namespace eldric
