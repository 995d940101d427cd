#include "dataplane/common/random.h"

#include <sys/random.h>

#include <ctime>

namespace eldric::random {
namespace {

struct State {
  uint64_t s[4];
  State() {
    if (getrandom(s, sizeof s, 0) != sizeof s) {
      uint64_t seed = static_cast<uint64_t>(time(nullptr)) ^ reinterpret_cast<uintptr_t>(this);
      for (auto& v : s) {
        seed += 0x9e3779b97f4a7c15ULL;
        uint64_t z = seed;
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        v = z ^ (z >> 31);
      }
    }
  }
};

inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
thread_local State t_state;

}  // namespace

uint64_t next() {
  uint64_t* s = t_state.s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

std::string uuid() {
  static constexpr char kHex[] = "0123456789abcdef";
  uint64_t a = next(), b = next();
  // Version 4, variant 1, as RFC 9562 lays out random UUIDs.
  a = (a & ~0xf000ULL) | 0x4000ULL;
  b = (b & ~(3ULL << 62)) | (2ULL << 62);
  // 8-4-4-4-12: a fills the first three groups, b the last two.
  std::string out(36, '-');
  char* p = out.data();
  auto put = [](char* dst, uint64_t v, int nibbles) {
    for (int i = nibbles - 1; i >= 0; --i, v >>= 4) dst[i] = kHex[v & 15];
  };
  put(p, a >> 32, 8);
  put(p + 9, a >> 16, 4);
  put(p + 14, a, 4);
  put(p + 19, b >> 48, 4);
  put(p + 24, b, 12);
  return out;
}

}  // namespace eldric::random
