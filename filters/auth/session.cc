#include "filters/auth/session.h"

#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <cstring>
#include <mutex>
#include <unordered_map>

#include "common/base64url.h"

namespace eldric::filters::auth {
namespace {

std::string mac(const std::string& key, const std::string& payload) {
  unsigned char out[SHA256_DIGEST_LENGTH];
  unsigned int len = 0;
  HMAC(EVP_sha256(), key.data(), key.size(), reinterpret_cast<const uint8_t*>(payload.data()),
       payload.size(), out, &len);
  return std::string(reinterpret_cast<const char*>(out), len);
}

}  // namespace

// Payload: "v2", the key's SHA-256 (32), the expiry (8, big-endian) and a
// random session id (16), so that two logins with one key in the same
// second are two sessions (one's logout leaves the other alone). "v1"
// tokens, without the id, still verify until they expire.
constexpr size_t kSessionIdBytes = 16;

std::string signSession(const std::string& signing_key, const std::string& key_sha256,
                        int64_t expires_at) {
  std::string payload = "v2";
  payload += key_sha256;
  for (int i = 7; i >= 0; --i)
    payload.push_back(static_cast<char>((static_cast<uint64_t>(expires_at) >> (i * 8)) & 0xff));
  uint8_t id[kSessionIdBytes];
  RAND_bytes(id, sizeof id);
  payload.append(reinterpret_cast<const char*>(id), sizeof id);
  return base64UrlEncode(payload) + "." + base64UrlEncode(mac(signing_key, payload));
}

bool verifySession(std::string_view token, const std::vector<std::string>& signing_keys,
                   int64_t now_s, std::string* key_sha256, int64_t* expires_at,
                   std::string* session_digest) {
  size_t dot = token.find('.');
  if (dot == std::string_view::npos || token.size() > 512) return false;
  std::string payload, sig;
  if (!base64UrlDecode(token.substr(0, dot), &payload) ||
      !base64UrlDecode(token.substr(dot + 1), &sig))
    return false;
  bool v1 = payload.size() == 2 + 32 + 8 && payload.compare(0, 2, "v1") == 0;
  bool v2 = payload.size() == 2 + 32 + 8 + kSessionIdBytes && payload.compare(0, 2, "v2") == 0;
  if ((!v1 && !v2) || sig.size() != SHA256_DIGEST_LENGTH) return false;
  bool ok = false;
  for (const auto& k : signing_keys) {
    std::string want = mac(k, payload);
    ok |= CRYPTO_memcmp(want.data(), sig.data(), want.size()) == 0;
  }
  if (!ok) return false;
  uint64_t exp = 0;
  for (int i = 0; i < 8; ++i) exp = (exp << 8) | static_cast<uint8_t>(payload[2 + 32 + i]);
  if (static_cast<int64_t>(exp) <= now_s) return false;
  *key_sha256 = payload.substr(2, 32);
  *expires_at = static_cast<int64_t>(exp);
  if (session_digest) {
    unsigned char d[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(payload.data()), payload.size(), d);
    session_digest->assign(reinterpret_cast<const char*>(d), sizeof d);
  }
  return true;
}

namespace {

struct Revoked {
  std::mutex mutex;
  std::unordered_map<std::string, int64_t> until;  // digest -> its expiry
};

Revoked& revoked() {
  static Revoked* r = new Revoked();
  return *r;
}

}  // namespace

void revokeSession(std::string_view digest, int64_t expires_at, int64_t now_s) {
  Revoked& r = revoked();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.until.size() >= kMaxLocalLogouts) {
    for (auto it = r.until.begin(); it != r.until.end();) {
      it = it->second <= now_s ? r.until.erase(it) : std::next(it);
    }
    // Still full of live ones: the oldest entry in hash order goes; the
    // key check on every request still ends a revoked key's sessions.
    if (r.until.size() >= kMaxLocalLogouts) r.until.erase(r.until.begin());
  }
  r.until[std::string(digest)] = expires_at;
}

bool sessionRevoked(std::string_view digest) {
  Revoked& r = revoked();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (r.until.empty()) return false;
  return r.until.count(std::string(digest)) != 0;
}

std::vector<LoggedOutSession> localLogouts(
    int64_t now_s, size_t max, const std::function<bool(std::string_view digest)>& known) {
  std::vector<LoggedOutSession> out;
  Revoked& r = revoked();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& [digest, expires] : r.until) {
    if (out.size() == max) break;
    if (expires <= now_s || known(digest)) continue;
    out.push_back({digest, expires});
  }
  return out;
}

std::string_view cookieValue(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    size_t semi = header.find(';');
    std::string_view item = header.substr(0, semi);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    if (item.size() > name.size() && item.substr(0, name.size()) == name &&
        item[name.size()] == '=') {
      return item.substr(name.size() + 1);
    }
    if (semi == std::string_view::npos) break;
    header.remove_prefix(semi + 1);
  }
  return {};
}

}  // namespace eldric::filters::auth
