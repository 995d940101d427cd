#include "filters/ratelimit/ratelimit_filter.h"

#include <arpa/inet.h>

#include <charconv>
#include <cstring>

#include "common/address.h"
#include "dataplane/http/route.h"

namespace eldric::filters::ratelimit {

bool parseCidr(const std::string& text, Cidr* out) {
  std::string ip = text;
  int prefix = -1;
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    ip = text.substr(0, slash);
    char* end = nullptr;
    long p = strtol(text.c_str() + slash + 1, &end, 10);
    if (*end || slash + 1 == text.size() || p < 0 || p > 128) return false;
    prefix = static_cast<int>(p);
  }
  if (inet_pton(AF_INET, ip.c_str(), out->bytes) == 1) {
    out->family = AF_INET;
    if (prefix > 32) return false;
    out->prefix = static_cast<uint8_t>(prefix < 0 ? 32 : prefix);
    return true;
  }
  if (inet_pton(AF_INET6, ip.c_str(), out->bytes) == 1) {
    out->family = AF_INET6;
    out->prefix = static_cast<uint8_t>(prefix < 0 ? 128 : prefix);
    return true;
  }
  return false;
}

bool Cidr::contains(const std::string& ip) const {
  uint8_t b[16];
  int fam = ip.find(':') == std::string::npos ? AF_INET : AF_INET6;
  if (fam != family || inet_pton(fam, ip.c_str(), b) != 1) return false;
  int full = prefix / 8, rest = prefix % 8;
  if (memcmp(b, bytes, static_cast<size_t>(full)) != 0) return false;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (b[full] & mask) == (bytes[full] & mask);
}

RateLimitConfigSharedPtr compileConfig(const edge::v1::RateLimits& limits) {
  auto c = std::make_shared<RateLimitConfig>();
  c->global = limits.global_requests();
  c->per_ip = limits.per_ip_requests();
  c->per_key = limits.per_key_requests();
  c->per_key_tokens = limits.per_key_tokens();
  c->max_tokens_per_request = limits.max_tokens_per_request();
  c->per_key_max_concurrent = limits.per_key_max_concurrent();
  c->window_s =
      limits.window().seconds() > 0 ? static_cast<uint32_t>(limits.window().seconds()) : 60;
  if (limits.has_ipv6_prefix()) c->ipv6_prefix = std::min<uint32_t>(limits.ipv6_prefix(), 128);
  if (limits.has_max_ip_entries() && limits.max_ip_entries())
    c->max_ip_entries = limits.max_ip_entries();
  if (limits.has_auth_failures_per_ip()) c->auth_failures_per_ip = limits.auth_failures_per_ip();
  for (const auto& t : limits.trusted_proxies()) {
    Cidr cidr;
    if (parseCidr(t, &cidr)) c->trusted_proxies.push_back(cidr);
  }
  return c;
}

bool isTrustedProxy(const std::string& ip, const std::vector<Cidr>& list) {
  for (const auto& c : list) {
    if (c.contains(ip)) return true;
  }
  return false;
}

namespace {
std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}
}  // namespace

std::string clientIp(const std::string& peer, const http::RequestHeaders& headers,
                     const std::vector<Cidr>& trusted_list) {
  if (trusted_list.empty() || !isTrustedProxy(peer, trusted_list)) return peer;
  // Walk X-Forwarded-For from the right: skip our own trusted proxies;
  // the first other address is the client as the last trusted hop saw it.
  std::vector<std::string> hops;
  for (const auto& [name, value] : headers.headers.entries()) {
    if (name != "x-forwarded-for") continue;
    std::string_view v = value;
    while (!v.empty()) {
      size_t comma = v.find(',');
      hops.push_back(trim(v.substr(0, comma)));
      if (comma == std::string_view::npos) break;
      v.remove_prefix(comma + 1);
    }
  }
  for (auto it = hops.rbegin(); it != hops.rend(); ++it) {
    sockaddr_storage probe;
    if (!network::parseIpAddress(*it, 0, &probe)) return peer;  // garbage: trust nothing
    if (!isTrustedProxy(*it, trusted_list)) return *it;
  }
  return peer;
}

Entry& streamCounters(http::StreamInfo& info, const http::FilterStateKey<Entry>& slot,
                      KeyedTable& table, const std::string& key, uint64_t now_s) {
  if (Entry* kept = info.filter_state.get(slot)) return *kept;
  EntrySharedPtr e = table.get(key, now_s);
  Entry& ref = *e;
  info.filter_state.set(slot, std::move(e));
  return ref;
}

void sendRefusal(http::DecoderFilterCallbacks& decoder, const char* tier, uint64_t limit,
                 uint32_t retry_after, const std::string& what) {
  uint32_t ra = retry_after < 1 ? 1 : retry_after;
  std::string message = "rate limit exceeded: " + what + " (" + tier + " tier, limit " +
                        std::to_string(limit) + "); retry after " + std::to_string(ra) + "s";
  std::string code = std::string(tier) + "_rate_limit_exceeded";
  std::string tier_name = tier;
  // The refusal carries the same x-ratelimit-* headers as an admitted
  // answer, for the tier that refused: nothing left until the reset. The
  // concurrency tier and failed key attempts have no window to report.
  std::string_view unit = tier_name == "tokens" ? "tokens" : "requests";
  bool windowed = tier_name != "concurrency" && tier_name != "auth";
  decoder.sendLocalReply(http::ErrorReply{429, message, "rate_limit_error", code},
                         [ra, limit, unit, windowed, tier_name](http::ResponseHeaders& h) {
                           h.headers.add("retry-after", std::to_string(ra));
                           h.headers.add("x-ratelimit-tier", tier_name);
                           if (!windowed) return;
                           std::string suffix(unit);
                           h.headers.add("x-ratelimit-limit-" + suffix, std::to_string(limit));
                           h.headers.add("x-ratelimit-remaining-" + suffix, "0");
                           h.headers.add("x-ratelimit-reset-" + suffix, std::to_string(ra) + "s");
                         });
}

http::FilterHeadersStatus IpLimitFilter::decodeHeaders(http::RequestHeaders& headers, bool) {
  const http::Route* route = decoder_->route();
  if (!route || !route->rate_limited) return http::FilterHeadersStatus::Continue;
  const RateLimitConfig& cfg = *config_;
  auto& info = decoder_->streamInfo();
  info.client_ip = clientIp(decoder_->peerIp(), headers, cfg.trusted_proxies);
  if (!cfg.per_ip) return http::FilterHeadersStatus::Continue;
  State& st = *state_;
  uint64_t now = nowSeconds();
  Entry& e = streamCounters(info, kIpCounters, st.ips, ipKey(info.client_ip, cfg.ipv6_prefix), now);
  uint64_t limit = st.effectiveLimit(cfg.per_ip, e.ceiling.load(std::memory_order_relaxed));
  if (!e.requests.tryAdmit(now, limit)) {
    st.refused_ip.fetch_add(1, std::memory_order_relaxed);
    e.refused.fetch_add(1, std::memory_order_relaxed);
    sendRefusal(*decoder_, "ip", cfg.per_ip,
                e.requests.secondsUntilAvailable(now, std::max<uint64_t>(limit, 1)),
                "too many requests from this address");
    return http::FilterHeadersStatus::StopIteration;
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterHeadersStatus RateLimitFilter::decodeHeaders(http::RequestHeaders& headers, bool) {
  const http::Route* route = decoder_->route();
  if (!route || !route->rate_limited) return http::FilterHeadersStatus::Continue;
  applied_ = true;
  const RateLimitConfig& cfg = *config_;
  State& st = *state_;
  uint64_t now = nowSeconds();
  auto& info = decoder_->streamInfo();
  if (info.client_ip.empty())
    info.client_ip = clientIp(decoder_->peerIp(), headers, cfg.trusted_proxies);
  const http::ClientIdentity* id = info.identity.get();
  uint32_t window = st.windowSeconds();
  header_limit_ = 0;

  auto note = [&](uint64_t limit, SlidingWindow& w, uint64_t remote) {
    uint64_t used = w.count(now) + remote;
    uint64_t remaining = used >= limit ? 0 : limit - used;
    if (header_limit_ == 0 || remaining < header_remaining_) {
      header_limit_ = limit;
      header_remaining_ = remaining;
      header_reset_s_ = w.secondsUntilEmpty(now);
    }
  };

  uint64_t key_limit = 0;
  if (id) {
    key_entry_ = &streamCounters(info, kKeyCounters, st.keys, id->client_id, now);
    Entry& e = *key_entry_;
    uint64_t tpm = id->tokens_per_window ? id->tokens_per_window : cfg.per_key_tokens;
    if (tpm) {
      uint64_t used = e.tokens.count(now) + e.remote_tokens.load(std::memory_order_relaxed);
      token_limit_ = tpm;
      token_remaining_ = used >= tpm ? 0 : tpm - used;
      token_reset_s_ = e.tokens.secondsUntilEmpty(now);
      if (used >= tpm) {
        st.refused_tokens.fetch_add(1, std::memory_order_relaxed);
        refuse("tokens", tpm, e.tokens.secondsUntilAvailable(now, tpm),
               "client \"" + id->client_name + "\" used " + std::to_string(used) + " tokens in " +
                   std::to_string(window) + "s");
        return http::FilterHeadersStatus::StopIteration;
      }
    }
    uint64_t max_conc = id->max_concurrent ? id->max_concurrent : cfg.per_key_max_concurrent;
    if (max_conc) {
      if (static_cast<uint64_t>(e.in_flight.fetch_add(1, std::memory_order_acq_rel)) >= max_conc) {
        e.in_flight.fetch_sub(1, std::memory_order_acq_rel);
        st.refused_concurrency.fetch_add(1, std::memory_order_relaxed);
        refuse("concurrency", max_conc, 1,
               "client \"" + id->client_name + "\" already has " + std::to_string(max_conc) +
                   " requests in flight");
        return http::FilterHeadersStatus::StopIteration;
      }
      holds_concurrency_ = true;
    }
    key_limit = id->requests_per_window ? id->requests_per_window : cfg.per_key;
    uint64_t key_local = st.effectiveLimit(key_limit, e.ceiling.load(std::memory_order_relaxed));
    if (key_limit && !e.requests.tryAdmit(now, key_local)) {
      st.refused_key.fetch_add(1, std::memory_order_relaxed);
      e.refused.fetch_add(1, std::memory_order_relaxed);
      refuse("key", key_limit,
             e.requests.secondsUntilAvailable(now, std::max<uint64_t>(key_local, 1)),
             "client \"" + id->client_name + "\" is over its request limit");
      return http::FilterHeadersStatus::StopIteration;
    }
  }
  // The per-IP tier admitted this request before authentication
  // (IpLimitFilter); here it only takes part in the headers.
  Entry* ip_entry = nullptr;
  if (cfg.per_ip && !info.client_ip.empty()) {
    ip_entry =
        &streamCounters(info, kIpCounters, st.ips, ipKey(info.client_ip, cfg.ipv6_prefix), now);
  }
  uint64_t global_local =
      st.effectiveLimit(cfg.global, st.global_ceiling.load(std::memory_order_relaxed));
  if (cfg.global && !st.global.tryAdmit(now, global_local)) {
    if (key_limit) key_entry_->requests.refund(now);
    st.refused_global.fetch_add(1, std::memory_order_relaxed);
    st.global_refused.fetch_add(1, std::memory_order_relaxed);
    refuse("global", cfg.global,
           st.global.secondsUntilAvailable(now, std::max<uint64_t>(global_local, 1)),
           "the gateway is at its global request limit");
    return http::FilterHeadersStatus::StopIteration;
  }
  if (key_limit)
    note(key_limit, key_entry_->requests,
         key_entry_->remote_requests.load(std::memory_order_relaxed));
  if (ip_entry)
    note(cfg.per_ip, ip_entry->requests, ip_entry->remote_requests.load(std::memory_order_relaxed));
  if (cfg.global) note(cfg.global, st.global, st.remote_global.load(std::memory_order_relaxed));
  return http::FilterHeadersStatus::Continue;
}

http::FilterHeadersStatus RateLimitFilter::encodeHeaders(http::ResponseHeaders& headers, bool) {
  if (!applied_) return http::FilterHeadersStatus::Continue;
  // Our own refusal (sendRefusal) carries the refusing tier's headers.
  if (headers.status == 429 && headers.headers.get("x-ratelimit-tier"))
    return http::FilterHeadersStatus::Continue;
  // Formatted on the stack; the header map copies values into its arena.
  char buf[24];
  auto num = [&buf](uint64_t v, const char* unit = "") {
    char* end = std::to_chars(buf, buf + 20, v).ptr;
    while (*unit) *end++ = *unit++;
    return std::string_view(buf, static_cast<size_t>(end - buf));
  };
  if (header_limit_) {
    headers.headers.add("x-ratelimit-limit-requests", num(header_limit_));
    headers.headers.add("x-ratelimit-remaining-requests", num(header_remaining_));
    headers.headers.add("x-ratelimit-reset-requests", num(header_reset_s_, "s"));
  }
  if (token_limit_) {
    headers.headers.add("x-ratelimit-limit-tokens", num(token_limit_));
    headers.headers.add("x-ratelimit-remaining-tokens", num(token_remaining_));
    headers.headers.add("x-ratelimit-reset-tokens", num(token_reset_s_, "s"));
  }
  return http::FilterHeadersStatus::Continue;
}

void RateLimitFilter::onDestroy() {
  // The stream's filter state, and with it the entry, outlives onDestroy.
  if (holds_concurrency_ && key_entry_) {
    key_entry_->in_flight.fetch_sub(1, std::memory_order_acq_rel);
    holds_concurrency_ = false;
  }
}

http::FilterFactory makeIpFactory(RateLimitConfigSharedPtr config, StateSharedPtr state) {
  return [config, state](http::FilterChainBuilder& builder) {
    if (!config->per_ip) return;  // client_ip is then set after authentication
    builder.addDecoderFilter(std::make_unique<IpLimitFilter>(config, state));
  };
}

http::FilterFactory makeFactory(RateLimitConfigSharedPtr config, StateSharedPtr state) {
  return [config, state](http::FilterChainBuilder& builder) {
    auto f = std::make_shared<RateLimitFilter>(config, state);
    builder.addStreamFilter(f, f);
  };
}

}  // namespace eldric::filters::ratelimit
