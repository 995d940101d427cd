#include "filters/ratelimit/sliding_window.h"

#include <vector>

namespace eldric::filters::ratelimit {

SlidingWindow::SlidingWindow(uint32_t window_seconds)
    : window_(window_seconds == 0 ? 1 : window_seconds),
      buckets_(new std::atomic<uint64_t>[window_]) {
  for (uint32_t i = 0; i < window_; ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void SlidingWindow::expire(uint64_t now_s) {
  // Once per second per window is enough; the thread that moves the mark
  // does the sweep. Others may briefly see a total that still includes
  // expired buckets: that refuses, never over-admits.
  uint64_t last = expired_at_.load(std::memory_order_relaxed);
  if (last >= now_s || !expired_at_.compare_exchange_strong(last, now_s, std::memory_order_acq_rel))
    return;
  for (uint32_t i = 0; i < window_; ++i) {
    uint64_t v = buckets_[i].load(std::memory_order_acquire);
    while (countOf(v) > 0 && secondOf(v) + window_ <= now_s) {
      if (buckets_[i].compare_exchange_weak(v, pack(secondOf(v), 0), std::memory_order_acq_rel)) {
        total_.fetch_sub(static_cast<int64_t>(countOf(v)), std::memory_order_acq_rel);
        break;
      }
    }
  }
}

void SlidingWindow::addToBucket(uint64_t now_s, uint64_t n) {
  std::atomic<uint64_t>& b = buckets_[now_s % window_];
  uint64_t v = b.load(std::memory_order_acquire);
  for (;;) {
    if (secondOf(v) == now_s) {
      if (b.compare_exchange_weak(v, v + n, std::memory_order_acq_rel)) return;
    } else if (secondOf(v) > now_s) {
      // Another thread already moved to a later second (clock read just
      // before ours); count it there: it expires a little later, which is
      // conservative.
      if (b.compare_exchange_weak(v, v + n, std::memory_order_acq_rel)) return;
    } else {
      // The slot holds a second that left the window (same slot, at least
      // `window_` seconds ago): expire its count as we take the slot.
      if (b.compare_exchange_weak(v, pack(now_s, n), std::memory_order_acq_rel)) {
        if (countOf(v) > 0)
          total_.fetch_sub(static_cast<int64_t>(countOf(v)), std::memory_order_acq_rel);
        return;
      }
    }
  }
}

bool SlidingWindow::tryAdmit(uint64_t now_s, uint64_t limit, uint64_t cost) {
  expire(now_s);
  int64_t before = total_.fetch_add(static_cast<int64_t>(cost), std::memory_order_acq_rel);
  if (before + static_cast<int64_t>(cost) > static_cast<int64_t>(limit)) {
    total_.fetch_sub(static_cast<int64_t>(cost), std::memory_order_acq_rel);
    return false;
  }
  addToBucket(now_s, cost);
  return true;
}

void SlidingWindow::refund(uint64_t at_s, uint64_t cost) {
  std::atomic<uint64_t>& b = buckets_[at_s % window_];
  uint64_t v = b.load(std::memory_order_acquire);
  while (secondOf(v) == at_s && countOf(v) >= cost) {
    if (b.compare_exchange_weak(v, v - cost, std::memory_order_acq_rel)) {
      total_.fetch_sub(static_cast<int64_t>(cost), std::memory_order_acq_rel);
      return;
    }
  }
  // The bucket already slid out (its count was expired): nothing to undo.
}

void SlidingWindow::add(uint64_t now_s, uint64_t n) {
  if (n == 0) return;
  expire(now_s);
  total_.fetch_add(static_cast<int64_t>(n), std::memory_order_acq_rel);
  addToBucket(now_s, n);
}

uint64_t SlidingWindow::count(uint64_t now_s) {
  expire(now_s);
  int64_t t = total_.load(std::memory_order_acquire);
  return t < 0 ? 0 : static_cast<uint64_t>(t);
}

uint32_t SlidingWindow::secondsUntilAvailable(uint64_t now_s, uint64_t limit, uint64_t need) {
  expire(now_s);
  // Walk the window from its oldest second; once enough has slid out for
  // `need` more to fit, that second's exit time is the answer.
  int64_t total = total_.load(std::memory_order_acquire);
  int64_t must_leave = total + static_cast<int64_t>(need) - static_cast<int64_t>(limit);
  if (must_leave <= 0) return 0;
  uint64_t oldest = now_s + 1 >= window_ ? now_s + 1 - window_ : 0;
  int64_t left = 0;
  for (uint64_t s = oldest; s <= now_s; ++s) {
    uint64_t v = buckets_[s % window_].load(std::memory_order_acquire);
    if (secondOf(v) != s) continue;
    left += static_cast<int64_t>(countOf(v));
    if (left >= must_leave) return static_cast<uint32_t>(s + window_ - now_s);
  }
  return window_;
}

uint32_t SlidingWindow::secondsUntilEmpty(uint64_t now_s) {
  expire(now_s);
  uint64_t oldest = now_s + 1 >= window_ ? now_s + 1 - window_ : 0;
  for (uint64_t s = now_s + 1; s-- > oldest;) {
    uint64_t v = buckets_[s % window_].load(std::memory_order_acquire);
    if (secondOf(v) == s && countOf(v) > 0) return static_cast<uint32_t>(s + window_ - now_s);
  }
  return 0;
}

}  // namespace eldric::filters::ratelimit
