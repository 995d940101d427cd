#include "test/bench/sse.h"

#include <algorithm>
#include <cstring>

namespace loadgen {

namespace {
// The end of the first blank line in [p, p+n) (the index just past it), or 0.
size_t EventEnd(const char* p, size_t n, size_t from) {
  for (size_t i = from; i + 1 < n; i++) {
    if (p[i] != '\n') continue;
    if (p[i + 1] == '\n') return i + 2;
    if (p[i + 1] == '\r' && i + 2 < n && p[i + 2] == '\n') return i + 3;
  }
  return 0;
}
}  // namespace

int64_t SseScanner::TokenOf(const char* p, size_t n) {
  static const char kTok[] = "\"tok";
  const char* end = p + n;
  for (const char* q = p; q + 4 < end;) {
    const char* hit = static_cast<const char*>(memmem(q, size_t(end - q), kTok, 4));
    if (!hit) return -1;
    const char* d = hit + 4;
    int64_t v = 0;
    const char* digits = d;
    while (d < end && *d >= '0' && *d <= '9' && d - digits < 18) v = v * 10 + (*d++ - '0');
    if (d > digits && d < end && *d == ' ') return v;  // "tok17 "
    q = hit + 1;
  }
  return -1;
}

void SseScanner::Event(const char* p, size_t n, Counts* c) {
  // Blank-line runs between events (and a leading one) are not events.
  bool blank = true;
  for (size_t i = 0; i < n && blank; i++) blank = p[i] == '\n' || p[i] == '\r';
  if (blank) return;
  c->events++;
  events_++;
  static const char kDone[] = "data: [DONE]";
  if (n >= sizeof kDone - 1 && memcmp(p, kDone, sizeof kDone - 1) == 0) done_ = true;
  int64_t t = TokenOf(p, n);
  if (t < 0) return;
  c->tokens++;
  tokens_++;
  uint64_t u = uint64_t(t);
  if (u < next_) {
    misordered_++;
    return;
  }
  lost_ += u - next_;
  next_ = u + 1;
}

SseScanner::Counts SseScanner::Feed(const char* p, size_t n) {
  Counts c;
  if (!carry_.empty()) {
    // Finish the pending event first; look for its end from a little before
    // the old data ends (a "\n" | "\n" split across feeds).
    size_t from = carry_.size() >= 3 ? carry_.size() - 3 : 0;
    carry_.append(p, n);
    size_t e = EventEnd(carry_.data(), carry_.size(), from);
    if (!e) return c;
    Event(carry_.data(), e, &c);
    size_t used = e - (carry_.size() - n);  // bytes of this feed consumed
    carry_.clear();
    p += used;
    n -= used;
  }
  size_t off = 0;
  for (;;) {
    size_t e = EventEnd(p + off, n - off, 0);
    if (!e) break;
    Event(p + off, e, &c);
    off += e;
  }
  carry_.assign(p + off, n - off);
  return c;
}

void SseScanner::End(uint64_t expected_tokens) {
  if (next_ < expected_tokens) lost_ += expected_tokens - next_;
  next_ = std::max<uint64_t>(next_, expected_tokens);
}

}  // namespace loadgen
