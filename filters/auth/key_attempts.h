#pragma once

// Key guessing, throttled: failed API key attempts are counted per client
// IP (or IPv6 prefix) in the rate limiter's table, and once an address is
// past `auth_failures_per_ip` in the window every further key it presents
// is refused with 429 before it is looked up. Both the auth filter (a key
// in a header) and the session endpoint (a key in a login body) count here.

#include "dataplane/http/filter.h"
#include "filters/ratelimit/ratelimit_filter.h"

namespace eldric::filters::auth {

class KeyAttempts {
 public:
  // Either may be null: nothing is counted then.
  KeyAttempts(ratelimit::RateLimitConfigSharedPtr limits, ratelimit::StateSharedPtr state)
      : limits_(std::move(limits)), state_(std::move(state)) {}

  // False, with a 429 sent, when this stream's client is past its failed
  // attempts for the window.
  bool allowed(http::DecoderFilterCallbacks& callbacks, const http::RequestHeaders& headers);
  // Counts one failed attempt for the client allowed() looked up.
  void failed();

  const ratelimit::RateLimitConfigSharedPtr& limits() const { return limits_; }

 private:
  ratelimit::Entry* entry(http::DecoderFilterCallbacks& callbacks,
                          const http::RequestHeaders& headers);

  ratelimit::RateLimitConfigSharedPtr limits_;
  ratelimit::StateSharedPtr state_;
  ratelimit::Entry* entry_ = nullptr;
};

}  // namespace eldric::filters::auth
