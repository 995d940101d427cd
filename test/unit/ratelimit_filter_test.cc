// The rate limiter's filters on a fake stream: the per-IP tier (before
// authentication), the global and per-key request tiers, tokens per key
// (counted by the usage filter), requests in flight per key, the 429s
// they answer and the x-ratelimit-* headers on what they admit.
//
// The limiter reads the real monotonic clock in whole seconds. Every test
// runs well inside one window (60 s) except one, which uses a 1-second
// window and waits for the next second (at most 1 s) to see it slide.

#include "filters/ratelimit/ratelimit_filter.h"

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "filters/auth/auth_filter.h"
#include "filters/ratelimit/limiter.h"
#include "filters/usage/usage_filter.h"
#include "test/unit/fake_stream.h"

namespace eldric::filters::ratelimit {
namespace {

using test::FakeStream;

std::shared_ptr<const http::ClientIdentity> client(const std::string& name, uint32_t requests = 0,
                                                   uint32_t tokens = 0, uint32_t concurrent = 0) {
  auto id = std::make_shared<http::ClientIdentity>();
  id->client_id = "id-" + name;
  id->client_name = name;
  id->scopes = 1u << edge::v1::SCOPE_INFERENCE;
  id->requests_per_window = requests;
  id->tokens_per_window = tokens;
  id->max_concurrent = concurrent;
  return id;
}

// A 429 from `tier` (below).
void expect429(const FakeStream& s, const std::string& tier, int max_retry = 60);

class RateLimitFilterTest : public ::testing::Test {
 protected:
  // A stream on a rate-limited route with both rate-limit filters, as the
  // registry orders them (the auth filter would sit between the two; a
  // test that wants it adds it with `chain`). `who` stands for what the
  // auth filter would have left.
  std::unique_ptr<FakeStream> stream(std::shared_ptr<const http::ClientIdentity> who = nullptr,
                                     const std::string& ip = "192.0.2.10") {
    auto s = std::make_unique<FakeStream>();
    s->matched_route.rate_limited = true;
    s->peer_ip = ip;
    s->info.identity = std::move(who);
    s->addFilters(makeIpFactory(config, state));
    s->addFilters(makeFactory(config, state));
    return s;
  }
  // A request through the filters, answered 200 by the "handler" if they
  // let it through. The stream is left open (requests in flight).
  std::unique_ptr<FakeStream> open(std::shared_ptr<const http::ClientIdentity> who = nullptr,
                                   const std::string& ip = "192.0.2.10") {
    auto s = stream(std::move(who), ip);
    s->decodeHeaders(true);
    if (s->headers_passed_chain) s->respond(200, "{}", {{"content-type", "application/json"}});
    return s;
  }
  // The same, and the stream ends.
  int send(std::shared_ptr<const http::ClientIdentity> who = nullptr,
           const std::string& ip = "192.0.2.10") {
    auto s = open(std::move(who), ip);
    s->destroyFilters();
    return s->responseStatus();
  }
  // A key allowed one request per window sends two: the second, refused.
  std::unique_ptr<FakeStream> secondOfOnePerWindow() {
    setConfig([](RateLimitConfig& c) { c.per_key = 1; });
    auto a = client("alice");
    EXPECT_EQ(send(a), 200);
    auto s = open(a);
    expect429(*s, "key");
    return s;
  }
  void setConfig(const std::function<void(RateLimitConfig&)>& edit) {
    auto c = std::make_shared<RateLimitConfig>(*config);
    edit(*c);
    config = c;
  }

  RateLimitConfigSharedPtr config = std::make_shared<RateLimitConfig>();
  StateSharedPtr state = std::make_shared<State>(60);
};

// A 429 from `tier`, OpenAI-shaped, with Retry-After in 1..max_retry.
void expect429(const FakeStream& s, const std::string& tier, int max_retry) {
  EXPECT_EQ(s.responseStatus(), 429);
  auto error = s.responseError();
  ASSERT_TRUE(error) << s.response_body;
  EXPECT_EQ(error->type, "rate_limit_error");
  EXPECT_EQ(error->code, tier + "_rate_limit_exceeded");
  EXPECT_NE(error->message.find("(" + tier + " tier, limit "), std::string::npos) << error->message;
  EXPECT_EQ(s.responseHeader("x-ratelimit-tier"), tier);
  int retry = std::stoi(s.responseHeader("retry-after").value_or("0"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, max_retry);
  EXPECT_NE(error->message.find("retry after " + std::to_string(retry) + "s"), std::string::npos);
  EXPECT_FALSE(s.headers_passed_chain);
}

TEST_F(RateLimitFilterTest, RouteWithoutRateLimitIsNotCounted) {
  setConfig([](RateLimitConfig& c) { c.global = c.per_ip = c.per_key = 1; });
  for (int i = 0; i < 5; ++i) {
    auto s = stream(client("a"));
    s->matched_route.rate_limited = false;
    s->decodeHeaders(true);
    s->respond(200);
    EXPECT_TRUE(s->headers_passed_chain);
    EXPECT_FALSE(s->responseHeader("x-ratelimit-limit-requests"));
    EXPECT_EQ(s->info.client_ip, "");
  }
  EXPECT_EQ(state->global.count(nowSeconds()), 0u);
}

TEST_F(RateLimitFilterTest, GlobalTierCountsEveryClientTogether) {
  setConfig([](RateLimitConfig& c) { c.global = 3; });
  EXPECT_EQ(send(nullptr, "192.0.2.1"), 200);
  EXPECT_EQ(send(client("a"), "192.0.2.2"), 200);
  EXPECT_EQ(send(client("b"), "192.0.2.3"), 200);
  auto s = open(client("c"), "192.0.2.4");
  expect429(*s, "global");
  EXPECT_NE(s->responseError()->message.find("global request limit"), std::string::npos);
  EXPECT_EQ(state->refused_global.load(), 1u);
}

TEST_F(RateLimitFilterTest, PerIpTierRefusesOneAddressOnly) {
  setConfig([](RateLimitConfig& c) { c.per_ip = 2; });
  EXPECT_EQ(send(), 200);
  EXPECT_EQ(send(), 200);
  auto s = open();
  expect429(*s, "ip");
  EXPECT_NE(s->responseError()->message.find("too many requests from this address"),
            std::string::npos);
  EXPECT_EQ(state->refused_ip.load(), 1u);
  EXPECT_EQ(send(nullptr, "192.0.2.11"), 200);
}

TEST_F(RateLimitFilterTest, PerIpTierCountsRequestsTheAuthFilterRefuses) {
  setConfig([](RateLimitConfig& c) {
    c.per_ip = 3;
    c.auth_failures_per_ip = 0;
  });
  edge::v1::Auth auth;
  auth.set_require_api_key(true);
  auto through = [&](const char* key) {
    FakeStream s;
    s.matched_route.rate_limited = true;
    s.matched_route.required_scope = edge::v1::SCOPE_INFERENCE;
    s.peer_ip = "192.0.2.10";
    s.request.headers.add("authorization", std::string("Bearer ") + key);
    // The registry's order: ratelimit.ip, auth, ratelimit.
    s.addFilters(makeIpFactory(config, state));
    s.addFilters(auth::makeFactory(std::make_shared<const auth::AuthConfig>(auth), config, state));
    s.addFilters(makeFactory(config, state));
    s.decodeHeaders(true);
    return s.responseStatus();
  };
  EXPECT_EQ(through("sk-bad-1"), 401);
  EXPECT_EQ(through("sk-bad-2"), 401);
  EXPECT_EQ(through("sk-bad-3"), 401);
  EXPECT_EQ(through("sk-bad-4"), 429);
}

TEST_F(RateLimitFilterTest, PerIpTierBelievesForwardedForOnlyFromTrustedProxies) {
  setConfig([](RateLimitConfig& c) {
    c.per_ip = 1;
    Cidr proxy;
    ASSERT_TRUE(parseCidr("10.0.0.0/8", &proxy));
    c.trusted_proxies.push_back(proxy);
  });
  auto via = [&](const std::string& peer, const std::string& xff) {
    auto s = stream(nullptr, peer);
    s->request.headers.add("x-forwarded-for", xff);
    s->decodeHeaders(true);
    return s;
  };
  // Behind the proxy: each forwarded client has its own budget; the
  // right-most address that is not a trusted proxy is the client.
  EXPECT_TRUE(via("10.0.0.1", "203.0.113.1")->headers_passed_chain);
  auto second = via("10.0.0.2", "198.51.100.1, 203.0.113.2, 10.0.0.9");
  EXPECT_TRUE(second->headers_passed_chain);
  EXPECT_EQ(second->info.client_ip, "203.0.113.2");
  expect429(*via("10.0.0.1", "203.0.113.1"), "ip");
  // Garbage in the chain: the proxy itself is the client.
  EXPECT_EQ(via("10.0.0.3", "not-an-ip")->info.client_ip, "10.0.0.3");
  // Not a trusted proxy: its X-Forwarded-For is ignored.
  auto direct = via("192.0.2.50", "203.0.113.77");
  EXPECT_EQ(direct->info.client_ip, "192.0.2.50");
  expect429(*via("192.0.2.50", "203.0.113.78"), "ip");
}

TEST_F(RateLimitFilterTest, PerIpTierCountsAnIpv6PrefixAsOneClient) {
  setConfig([](RateLimitConfig& c) { c.per_ip = 2; });
  EXPECT_EQ(send(nullptr, "2001:db8:aa:1::1"), 200);
  EXPECT_EQ(send(nullptr, "2001:db8:aa:1:ffff::2"), 200);
  expect429(*open(nullptr, "2001:db8:aa:1::3"), "ip");
  EXPECT_EQ(send(nullptr, "2001:db8:aa:2::1"), 200);  // another /64
  // An IPv4-mapped address is its IPv4 client.
  EXPECT_EQ(send(nullptr, "::ffff:192.0.2.99"), 200);
  EXPECT_EQ(send(nullptr, "192.0.2.99"), 200);
  expect429(*open(nullptr, "::ffff:192.0.2.99"), "ip");
}

TEST_F(RateLimitFilterTest, WithoutAnIpTierTheClientIpIsStillRecorded) {
  setConfig([](RateLimitConfig& c) { c.global = 10; });
  auto s = stream(nullptr, "192.0.2.77");
  EXPECT_EQ(s->decoderFilterCount(), 1u);  // no IpLimitFilter at all
  s->decodeHeaders(true);
  EXPECT_EQ(s->info.client_ip, "192.0.2.77");
}

TEST_F(RateLimitFilterTest, PerKeyTierRefusesOneClientOnly) {
  setConfig([](RateLimitConfig& c) { c.per_key = 2; });
  auto a = client("alice");
  EXPECT_EQ(send(a), 200);
  EXPECT_EQ(send(a, "192.0.2.20"), 200);  // the key, wherever it comes from
  auto s = open(a, "192.0.2.21");
  expect429(*s, "key");
  EXPECT_NE(s->responseError()->message.find("client \"alice\" is over its request limit"),
            std::string::npos);
  EXPECT_EQ(state->refused_key.load(), 1u);
  EXPECT_EQ(send(client("bob")), 200);
  // Anonymous requests have no key tier.
  for (int i = 0; i < 5; ++i) EXPECT_EQ(send(), 200);
}

TEST_F(RateLimitFilterTest, KeyOverrideReplacesTheDefaultLimit) {
  setConfig([](RateLimitConfig& c) { c.per_key = 10; });
  auto strict = client("strict", /*requests=*/1);
  EXPECT_EQ(send(strict), 200);
  expect429(*open(strict), "key");
  auto generous = client("generous", /*requests=*/20);
  for (int i = 0; i < 15; ++i) EXPECT_EQ(send(generous), 200);
}

TEST_F(RateLimitFilterTest, RequestRefusedByTheGlobalTierIsNotChargedToTheKey) {
  setConfig([](RateLimitConfig& c) {
    c.global = 1;
    c.per_key = 5;
  });
  EXPECT_EQ(send(), 200);
  auto a = client("alice");
  expect429(*open(a), "global");
  expect429(*open(a), "global");
  EXPECT_EQ(state->keys.get(a->client_id, nowSeconds())->requests.count(nowSeconds()), 0u);
}

TEST_F(RateLimitFilterTest, SuccessCarriesTheHeadersOfTheTierWithLeastLeft) {
  setConfig([](RateLimitConfig& c) {
    c.global = 100;
    c.per_ip = 50;
    c.per_key = 3;
  });
  auto s = open(client("alice"));
  EXPECT_EQ(s->responseStatus(), 200);
  EXPECT_EQ(s->responseHeader("x-ratelimit-limit-requests"), "3");
  EXPECT_EQ(s->responseHeader("x-ratelimit-remaining-requests"), "2");
  std::string reset = s->responseHeader("x-ratelimit-reset-requests").value_or("");
  EXPECT_TRUE(reset == "60s" || reset == "59s") << reset;
  EXPECT_FALSE(s->responseHeader("x-ratelimit-limit-tokens"));

  // Anonymous: the per-IP tier is the tightest left.
  auto anon = open(nullptr, "192.0.2.30");
  EXPECT_EQ(anon->responseHeader("x-ratelimit-limit-requests"), "50");
  EXPECT_EQ(anon->responseHeader("x-ratelimit-remaining-requests"), "49");
}

TEST_F(RateLimitFilterTest, RemainingCountsDownToTheRefusal) {
  setConfig([](RateLimitConfig& c) { c.global = 3; });
  for (const char* left : {"2", "1", "0"}) {
    auto s = open();
    EXPECT_EQ(s->responseHeader("x-ratelimit-remaining-requests"), left);
  }
  auto refused = open();
  expect429(*refused, "global");
  // The 429 names its tier, when to retry, and that nothing is left.
  EXPECT_EQ(refused->responseHeader("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(refused->responseHeader("x-ratelimit-limit-requests"), "3");
}

TEST_F(RateLimitFilterTest, RetryAfterSaysWhenTheWindowAdmitsAgain) {
  auto s = secondOfOnePerWindow();
  // Everything was admitted within the last second or two of a 60 s window.
  EXPECT_GE(std::stoi(s->responseHeader("retry-after").value_or("0")), 58);
}

TEST_F(RateLimitFilterTest, AnAdmissionSlidesOutOfASmallWindow) {
  state = std::make_shared<State>(1);
  setConfig([](RateLimitConfig& c) {
    c.window_s = 1;
    c.per_key = 1;
  });
  auto a = client("alice");
  EXPECT_EQ(send(a), 200);
  // The admission's second, or a later one: read after it.
  uint64_t admitted_by = nowSeconds();
  auto second = open(a);
  if (second->responseStatus() == 200) {
    admitted_by = nowSeconds();  // the clock ticked in between: that one slid out
  } else {
    expect429(*second, "key", 1);
  }
  while (nowSeconds() <= admitted_by) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(send(a), 200);
}

TEST_F(RateLimitFilterTest, TokenTierRefusesAKeyThatUsedItsTokens) {
  setConfig([](RateLimitConfig& c) { c.per_key_tokens = 100; });
  auto a = client("alice");
  auto first = open(a);
  EXPECT_EQ(first->responseHeader("x-ratelimit-limit-tokens"), "100");
  EXPECT_EQ(first->responseHeader("x-ratelimit-remaining-tokens"), "100");
  EXPECT_EQ(first->responseHeader("x-ratelimit-reset-tokens"), "0s");
  state->keys.get(a->client_id, nowSeconds())->tokens.add(nowSeconds(), 60);
  auto second = open(a);
  EXPECT_EQ(second->responseHeader("x-ratelimit-remaining-tokens"), "40");
  // Usage is counted after the fact and may overshoot; the next request is
  // refused.
  state->keys.get(a->client_id, nowSeconds())->tokens.add(nowSeconds(), 50);
  auto s = open(a);
  expect429(*s, "tokens");
  EXPECT_NE(s->responseError()->message.find("client \"alice\" used 110 tokens in 60s"),
            std::string::npos);
  // The refusal's own count headers, once each (not the admitted set too).
  EXPECT_EQ(s->response_headers->headers.count("x-ratelimit-remaining-tokens"), 1u);
  EXPECT_EQ(s->responseHeader("x-ratelimit-remaining-tokens"), "0");
  EXPECT_EQ(s->response_headers->headers.count("x-ratelimit-remaining-requests"), 0u);
  EXPECT_EQ(state->refused_tokens.load(), 1u);
  // Another key is not affected; nor is a key with its own larger budget.
  EXPECT_EQ(send(client("bob")), 200);
}

TEST_F(RateLimitFilterTest, KeyTokenBudgetOverridesTheDefault) {
  setConfig([](RateLimitConfig& c) { c.per_key_tokens = 1000; });
  auto a = client("alice", 0, /*tokens=*/10);
  state->keys.get(a->client_id, nowSeconds())->tokens.add(nowSeconds(), 10);
  expect429(*open(a), "tokens");
}

TEST_F(RateLimitFilterTest, TokensTheUsageFilterCountsAreChargedToTheKey) {
  setConfig([](RateLimitConfig& c) { c.per_key_tokens = 100; });
  auto a = client("alice");
  auto chat = [&](std::string_view answer) {
    auto s = std::make_unique<FakeStream>();
    s->matched_route.rate_limited = true;
    s->matched_route.count_tokens = true;
    s->info.identity = a;
    s->request.headers.add("content-type", "application/json");
    s->addFilters(makeFactory(config, state));
    s->addFilters(usage::makeFactory(config, state));
    s->decodeHeaders(false);
    s->decodeData(R"({"model":"m","messages":[]})", true);
    if (s->end_stream_passed_chain) {
      s->respond(200, answer, {{"content-type", "application/json"}});
    }
    s->destroyFilters();
    return s;
  };
  auto first = chat(R"({"choices":[],"usage":{"prompt_tokens":70,"completion_tokens":40,)"
                    R"("total_tokens":110}})");
  EXPECT_EQ(first->responseStatus(), 200);
  EXPECT_EQ(state->keys.get(a->client_id, nowSeconds())->tokens.count(nowSeconds()), 110u);
  expect429(*chat("{}"), "tokens");
}

TEST_F(RateLimitFilterTest, ConcurrencyLimitHoldsUntilTheStreamEnds) {
  setConfig([](RateLimitConfig& c) { c.per_key_max_concurrent = 2; });
  auto a = client("alice");
  auto one = open(a);
  auto two = open(a);
  EXPECT_EQ(two->responseStatus(), 200);
  auto three = open(a);
  expect429(*three, "concurrency", 1);
  EXPECT_NE(three->responseError()->message.find("already has 2 requests in flight"),
            std::string::npos);
  EXPECT_EQ(state->refused_concurrency.load(), 1u);
  // Another key has its own slots.
  EXPECT_EQ(open(client("bob"))->responseStatus(), 200);

  one->destroyFilters();
  auto four = open(a);
  EXPECT_EQ(four->responseStatus(), 200);
  EXPECT_EQ(state->keys.get(a->client_id, nowSeconds())->in_flight.load(), 2);
}

TEST_F(RateLimitFilterTest, ConcurrencySlotIsReleasedOnceOnResetOrDestroy) {
  setConfig([](RateLimitConfig& c) { c.per_key_max_concurrent = 1; });
  auto a = client("alice", 0, 0, /*concurrent=*/1);
  auto entry = [&] { return state->keys.get(a->client_id, nowSeconds())->in_flight.load(); };
  auto s = open(a);
  EXPECT_EQ(entry(), 1);
  s->resetStream("client_disconnected");
  EXPECT_EQ(entry(), 0);
  // The manager calls onDestroy on both chains, and again at deletion.
  s->destroyFilters();
  EXPECT_EQ(entry(), 0);

  auto again = open(a);
  EXPECT_EQ(again->responseStatus(), 200);
  auto over = open(a);
  expect429(*over, "concurrency", 1);
  over->destroyFilters();  // a refused stream held no slot
  EXPECT_EQ(entry(), 1);
}

TEST_F(RateLimitFilterTest, StreamDeletedWithoutEndingReleasesItsSlot) {
  // The stream's destructor destroys the filters (as ActiveStream's does).
  setConfig([](RateLimitConfig& c) { c.per_key_max_concurrent = 1; });
  auto a = client("alice");
  open(a);  // destroyed at once
  EXPECT_EQ(open(a)->responseStatus(), 200);
}

TEST_F(RateLimitFilterTest, FarmMemberEnforcesItsShareAndReportsTheFarmWideLimit) {
  setConfig([](RateLimitConfig& c) { c.per_key = 4; });
  state->farm_members.store(2);
  auto a = client("alice");
  auto first = open(a);
  EXPECT_EQ(first->responseHeader("x-ratelimit-limit-requests"), "4");
  EXPECT_EQ(send(a), 200);
  auto s = open(a);
  expect429(*s, "key");
  // The message names the farm-wide limit, not the share.
  EXPECT_NE(s->responseError()->message.find("limit 4)"), std::string::npos);
  // The control plane gives this member a larger ceiling.
  state->keys.get(a->client_id, nowSeconds())->ceiling.store(3);
  EXPECT_EQ(send(a), 200);
}

TEST_F(RateLimitFilterTest, OtherMembersCountsShowInRemaining) {
  setConfig([](RateLimitConfig& c) { c.global = 10; });
  state->remote_global.store(6);
  auto s = open();
  EXPECT_EQ(s->responseHeader("x-ratelimit-remaining-requests"), "3");
}

// Every response on a rate-limited route carries the x-ratelimit-*
// headers, a refusal too (for the tier that refused).
TEST_F(RateLimitFilterTest, RefusalCarriesTheRateLimitHeadersToo) {
  auto s = secondOfOnePerWindow();
  EXPECT_EQ(s->responseHeader("x-ratelimit-limit-requests"), "1");
  EXPECT_EQ(s->responseHeader("x-ratelimit-remaining-requests"), "0");
  EXPECT_EQ(s->responseHeader("x-ratelimit-reset-requests"),
            s->responseHeader("retry-after").value_or("") + "s");
  EXPECT_FALSE(s->responseHeader("x-ratelimit-limit-tokens").has_value());
}

}  // namespace
}  // namespace eldric::filters::ratelimit
