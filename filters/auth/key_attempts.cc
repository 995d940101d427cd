#include "filters/auth/key_attempts.h"

#include "filters/auth/auth_filter.h"

namespace eldric::filters::auth {

// The stream's entry in the failed-attempts table for its client's IP,
// looked up once per stream (the slot is shared by every filter of the
// stream that counts attempts).
ratelimit::Entry* KeyAttempts::entry(http::DecoderFilterCallbacks& callbacks,
                                     const http::RequestHeaders& headers) {
  if (!limits_ || !state_ || limits_->auth_failures_per_ip == 0) return nullptr;
  if (entry_) return entry_;
  auto& info = callbacks.streamInfo();
  if (info.client_ip.empty()) {
    info.client_ip = ratelimit::clientIp(callbacks.peerIp(), headers, limits_->trusted_proxies);
  }
  static constexpr http::FilterStateKey<ratelimit::Entry> kFailures{"auth.failures"};
  entry_ = &ratelimit::streamCounters(info, kFailures, state_->auth_failures,
                                      ratelimit::ipKey(info.client_ip, limits_->ipv6_prefix),
                                      ratelimit::nowSeconds());
  return entry_;
}

bool KeyAttempts::allowed(http::DecoderFilterCallbacks& callbacks,
                          const http::RequestHeaders& headers) {
  ratelimit::Entry* e = entry(callbacks, headers);
  if (!e) return true;
  uint64_t now = ratelimit::nowSeconds();
  uint64_t limit = limits_->auth_failures_per_ip;
  if (e->requests.count(now) < limit) return true;
  stats().throttled.fetch_add(1, std::memory_order_relaxed);
  ratelimit::sendRefusal(callbacks, "auth", limit, e->requests.secondsUntilAvailable(now, limit),
                         "too many failed API key attempts from this address");
  return false;
}

void KeyAttempts::failed() {
  if (entry_) entry_->requests.add(ratelimit::nowSeconds(), 1);
}

}  // namespace eldric::filters::auth
