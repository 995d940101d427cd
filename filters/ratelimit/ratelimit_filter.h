#pragma once

// The request tiers: global, per client IP, per key (with per-client
// overrides), tokens per key and requests in flight per key. A request
// over any tier gets 429 with a Retry-After that says when that tier
// admits again; every response on a rate-limited route carries
// OpenAI-style x-ratelimit-* headers.
//
// Two filters: the per-IP tier runs before authentication (IpLimitFilter),
// so it counts every request an address sends, with a valid key or not: it
// is the guard against one address flooding the gateway, bad keys
// included. The global and per-key tiers run after it (RateLimitFilter)
// and count only requests they admit.

#include <memory>
#include <string>
#include <vector>

#include "dataplane/http/filter.h"
#include "eldric/edge/v1/snapshot.pb.h"
#include "filters/ratelimit/limiter.h"

namespace eldric::filters::ratelimit {

struct Cidr {
  uint8_t family = 0;  // AF_INET or AF_INET6
  uint8_t bytes[16] = {0};
  uint8_t prefix = 0;
  bool contains(const std::string& ip) const;
};
// Parses "10.0.0.0/8", "::1", "192.168.1.7". False if malformed.
bool parseCidr(const std::string& text, Cidr* out);

struct RateLimitConfig {
  uint64_t global = 0, per_ip = 0, per_key = 0, per_key_tokens = 0, max_tokens_per_request = 0,
           per_key_max_concurrent = 0;
  uint32_t window_s = 60;
  std::vector<Cidr> trusted_proxies;
  uint32_t ipv6_prefix = 64;
  size_t max_ip_entries = kDefaultMaxIpEntries;
  uint64_t auth_failures_per_ip = 20;  // 0: off
};
using RateLimitConfigSharedPtr = std::shared_ptr<const RateLimitConfig>;

RateLimitConfigSharedPtr compileConfig(const edge::v1::RateLimits& limits);

// True if `ip` is one of the trusted proxies.
bool isTrustedProxy(const std::string& ip, const std::vector<Cidr>& list);

// The client's address for the per-IP tier: the socket peer, or, when the
// peer is a trusted proxy, the right-most X-Forwarded-For entry that is not
// itself a trusted proxy.
std::string clientIp(const std::string& peer, const http::RequestHeaders& headers,
                     const std::vector<Cidr>& trusted);

// The stream's counters for its client IP and its API key: the first
// filter that needs them looks them up and leaves them in the stream's
// filter state for the later ones (the key tier, the usage counter).
inline constexpr http::FilterStateKey<Entry> kIpCounters{"ratelimit.ip"};
inline constexpr http::FilterStateKey<Entry> kKeyCounters{"ratelimit.key"};
// The counters under `slot` for this stream: kept ones, or `table`'s for
// `key` (then kept).
Entry& streamCounters(http::StreamInfo& info, const http::FilterStateKey<Entry>& slot,
                      KeyedTable& table, const std::string& key, uint64_t now_s);

// Sends the 429 for `tier` (shared by both filters).
void sendRefusal(http::DecoderFilterCallbacks& decoder, const char* tier, uint64_t limit,
                 uint32_t retry_after, const std::string& what);

class RateLimitFilter : public http::StreamDecoderFilter, public http::StreamEncoderFilter {
 public:
  RateLimitFilter(RateLimitConfigSharedPtr config, StateSharedPtr state)
      : config_(std::move(config)), state_(std::move(state)) {}

  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer&, bool) override {
    return http::FilterDataStatus::Continue;
  }
  void setEncoderFilterCallbacks(http::EncoderFilterCallbacks&) override {}
  http::FilterHeadersStatus encodeHeaders(http::ResponseHeaders& headers, bool end_stream) override;
  http::FilterDataStatus encodeData(Buffer&, bool) override {
    return http::FilterDataStatus::Continue;
  }
  void onDestroy() override;

 private:
  void refuse(const char* tier, uint64_t limit, uint32_t retry_after, const std::string& what) {
    sendRefusal(*decoder_, tier, limit, retry_after, what);
  }

  RateLimitConfigSharedPtr config_;
  StateSharedPtr state_;
  http::DecoderFilterCallbacks* decoder_ = nullptr;
  Entry* key_entry_ = nullptr;  // in the stream's filter state
  bool holds_concurrency_ = false;
  bool applied_ = false;
  // For the x-ratelimit-* headers: the tier with the least left.
  uint64_t header_limit_ = 0, header_remaining_ = 0;
  uint32_t header_reset_s_ = 0;
  uint64_t token_limit_ = 0, token_remaining_ = 0;
  uint32_t token_reset_s_ = 0;
};

// The per-IP tier, before authentication. Also sets the stream's client_ip.
class IpLimitFilter : public http::StreamDecoderFilter {
 public:
  IpLimitFilter(RateLimitConfigSharedPtr config, StateSharedPtr state)
      : config_(std::move(config)), state_(std::move(state)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer&, bool) override {
    return http::FilterDataStatus::Continue;
  }
  void onDestroy() override {}

 private:
  RateLimitConfigSharedPtr config_;
  StateSharedPtr state_;
  http::DecoderFilterCallbacks* decoder_ = nullptr;
};

// The state is owned by the process and survives reloads (unless the
// window size changes); the config comes from each snapshot.
// makeIpFactory goes before the auth filter, makeFactory after it.
http::FilterFactory makeIpFactory(RateLimitConfigSharedPtr config, StateSharedPtr state);
http::FilterFactory makeFactory(RateLimitConfigSharedPtr config, StateSharedPtr state);

}  // namespace eldric::filters::ratelimit
