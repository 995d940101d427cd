#pragma once

// A sliding-window counter with one-second buckets, shared by every worker
// and lock-free: admission is one fetch_add on the window's total (exact
// under any concurrency), and buckets that slide out of the window are
// subtracted once, by whichever thread sees them first. Unlike fixed
// buckets, it never admits 2x the limit across a window boundary: at any
// moment the admitted count over the last `window` whole seconds is at
// most the limit.

#include <atomic>
#include <cstdint>
#include <memory>

namespace eldric::filters::ratelimit {

class SlidingWindow {
 public:
  explicit SlidingWindow(uint32_t window_seconds);

  // Admits `cost` if the window's count stays within `limit`.
  bool tryAdmit(uint64_t now_s, uint64_t limit, uint64_t cost = 1);
  // Takes back an admission made in second `at_s` (a later tier refused).
  void refund(uint64_t at_s, uint64_t cost = 1);
  // Counts usage after the fact (tokens): may go over any limit.
  void add(uint64_t now_s, uint64_t n);
  // What the window holds now.
  uint64_t count(uint64_t now_s);
  // Whole seconds until the count drops to at most `limit - need`, i.e.
  // until `need` more units would be admitted. At least 1.
  uint32_t secondsUntilAvailable(uint64_t now_s, uint64_t limit, uint64_t need = 1);
  // Seconds until the window is empty of what it holds now.
  uint32_t secondsUntilEmpty(uint64_t now_s);
  uint32_t windowSeconds() const { return window_; }

 private:
  static uint64_t pack(uint64_t second, uint64_t count) { return (second << 24) | count; }
  static uint64_t secondOf(uint64_t v) { return v >> 24; }
  static uint64_t countOf(uint64_t v) { return v & ((1u << 24) - 1); }
  void expire(uint64_t now_s);
  void addToBucket(uint64_t now_s, uint64_t n);

  const uint32_t window_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<int64_t> total_{0};
  std::atomic<uint64_t> expired_at_{0};
};

}  // namespace eldric::filters::ratelimit
