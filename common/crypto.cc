// SHA-256, constant-time comparison and API key generation without a TLS
// library. This library is linked both into a binary that carries BoringSSL
// and into one that carries OpenSSL 3 (through gRPC); depending on either
// would give one of them two libcrypto symbol sets, so the few primitives the
// store needs are written here.

#include "common/crypto.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/crypto_internal.h"

namespace eldric::crypto {

namespace {

// FIPS 180-4, section 4.2.2: the first 32 bits of the fractional parts of the
// cube roots of the first 64 primes.
constexpr uint32_t kK[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

inline uint32_t rotr(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

// Section 6.2.2: one 64-byte block into the running hash value.
void compress(uint32_t h[8], const unsigned char* block) {
  uint32_t w[64];
  for (int t = 0; t < 16; ++t) {
    w[t] = (uint32_t{block[4 * t]} << 24) | (uint32_t{block[4 * t + 1]} << 16) |
           (uint32_t{block[4 * t + 2]} << 8) | uint32_t{block[4 * t + 3]};
  }
  for (int t = 16; t < 64; ++t) {
    uint32_t s0 = rotr(w[t - 15], 7) ^ rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
    uint32_t s1 = rotr(w[t - 2], 17) ^ rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
    w[t] = w[t - 16] + s0 + w[t - 7] + s1;
  }
  uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
  for (int t = 0; t < 64; ++t) {
    uint32_t s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25);
    uint32_t ch = (e & f) ^ (~e & g);
    uint32_t t1 = hh + s1 + ch + kK[t] + w[t];
    uint32_t s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22);
    uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
    uint32_t t2 = s0 + maj;
    hh = g;
    g = f;
    f = e;
    e = d + t1;
    d = c;
    c = b;
    b = a;
    a = t1 + t2;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
  h[5] += f;
  h[6] += g;
  h[7] += hh;
}

// Fills `out` entirely from the kernel CSPRNG. getrandom(2) without flags
// blocks only until the pool is initialised once after boot, then never.
// /dev/urandom is a fallback for sandboxes whose seccomp filter refuses the
// syscall (old container runtimes answer EPERM or ENOSYS). With neither,
// aborting is the only safe answer: a key from a weak source must never be
// handed out, and the callers have no error path for it.
void fillRandom(unsigned char* out, size_t len) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = getrandom(out + done, len - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    break;
  }
  if (done == len) return;

  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    while (done < len) {
      ssize_t n = ::read(fd, out + done, len - done);
      if (n > 0) {
        done += static_cast<size_t>(n);
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else {
        break;
      }
    }
    ::close(fd);
  }
  if (done == len) return;
  std::fprintf(stderr, "eldric: no kernel random source (getrandom and /dev/urandom failed)\n");
  std::abort();
}

constexpr char kBase62[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr size_t kApiKeyRandomChars = 48;
constexpr size_t kKeyPrefixLen = 10;

}  // namespace

void sha256(const void* data, size_t len, unsigned char out[32]) {
  // Section 5.3.3: the initial hash value.
  uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  const auto* p = static_cast<const unsigned char*>(data);
  size_t full = len / 64;
  for (size_t i = 0; i < full; ++i) compress(h, p + 64 * i);

  // Section 5.1.1 padding: a 1 bit, zeros, then the length in bits as a
  // 64-bit big-endian number, ending on a block boundary. The tail needs two
  // blocks when fewer than 9 bytes remain for the 0x80 and the length.
  unsigned char tail[128] = {};
  size_t rest = len - 64 * full;
  if (rest > 0) std::memcpy(tail, p + 64 * full, rest);
  tail[rest] = 0x80;
  size_t tail_len = rest + 9 <= 64 ? 64 : 128;
  uint64_t bits = static_cast<uint64_t>(len) * 8;
  for (int i = 0; i < 8; ++i) tail[tail_len - 1 - i] = static_cast<unsigned char>(bits >> (8 * i));
  compress(h, tail);
  if (tail_len == 128) compress(h, tail + 64);

  for (int i = 0; i < 8; ++i) {
    out[4 * i] = static_cast<unsigned char>(h[i] >> 24);
    out[4 * i + 1] = static_cast<unsigned char>(h[i] >> 16);
    out[4 * i + 2] = static_cast<unsigned char>(h[i] >> 8);
    out[4 * i + 3] = static_cast<unsigned char>(h[i]);
  }
}

std::string sha256Hex(const std::string& data) {
  unsigned char digest[32];
  sha256(data.data(), data.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex(64, '0');
  for (int i = 0; i < 32; ++i) {
    hex[2 * i] = kHex[digest[i] >> 4];
    hex[2 * i + 1] = kHex[digest[i] & 0xf];
  }
  return hex;
}

bool constantTimeEquals(const std::string& a, const std::string& b) {
  // The running time depends on the lengths only, never on where the first
  // differing byte is. Lengths are not secret here: keys have a fixed format
  // and are compared as fixed-length hashes by the callers that matter.
  size_t n = a.size() > b.size() ? a.size() : b.size();
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < n; ++i) {
    unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= x ^ y;
    // An empty asm that "may change" diff keeps the optimiser from turning
    // the loop into an early exit once diff becomes non-zero.
    __asm__ __volatile__("" : "+r"(diff));
  }
  return diff == 0;
}

std::string generateApiKey() {
  // Rejection sampling: 248 = 4 * 62 is the largest multiple of 62 that fits
  // in a byte, so taking b % 62 only for b < 248 gives each character exactly
  // 4/248 probability; bytes 248..255 are thrown away (3% of draws).
  std::string key = "sk-";
  key.reserve(3 + kApiKeyRandomChars);
  unsigned char buf[64];
  while (key.size() < 3 + kApiKeyRandomChars) {
    fillRandom(buf, sizeof(buf));
    for (unsigned char b : buf) {
      if (b >= 248) continue;
      key.push_back(kBase62[b % 62]);
      if (key.size() == 3 + kApiKeyRandomChars) break;
    }
  }
  std::memset(buf, 0, sizeof(buf));
  return key;
}

std::string keyPrefix(const std::string& key) {
  // Ten characters of a generated 51-character key; never more than a
  // quarter of a short one (an operator's key from a config file), so a
  // prefix in a listing or a log never gives most of a key away.
  return key.substr(0, std::min<size_t>(kKeyPrefixLen, key.size() / 4));
}

namespace internal {

std::string randomHex(size_t bytes) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string raw(bytes, '\0');
  fillRandom(reinterpret_cast<unsigned char*>(&raw[0]), bytes);
  std::string hex;
  hex.reserve(2 * bytes);
  for (unsigned char c : raw) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 0xf]);
  }
  return hex;
}

}  // namespace internal

}  // namespace eldric::crypto
