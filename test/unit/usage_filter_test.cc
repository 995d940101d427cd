// The usage filter's SSE path on its own: events split at any byte, both
// blank-line forms, the usage event it injected removed again, the token
// cap, and a chunk of whole events passed on without a copy.

#include "filters/usage/usage_filter.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "dataplane/http/route.h"
#include "test/unit/fake_stream.h"

namespace eldric::filters::usage {
namespace {

struct Harness {
  explicit Harness(uint64_t cap = 0, bool client_asked_usage = true) {
    stream.matched_route.count_tokens = true;
    auto cfg = std::make_shared<ratelimit::RateLimitConfig>();
    cfg->max_tokens_per_request = cap;
    filter = std::make_unique<UsageFilter>(cfg, std::make_shared<ratelimit::State>(60));
    filter->setDecoderFilterCallbacks(stream);
    filter->setEncoderFilterCallbacks(stream);
    filter->decodeHeaders(stream.request, false);
    Buffer body;
    body.add(
        client_asked_usage
            ? R"({"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[]})"
            : R"({"model":"m","stream":true,"messages":[]})");
    filter->decodeData(body, true);
    http::ResponseHeaders rh;
    rh.headers.add("content-type", "text/event-stream");
    filter->encodeHeaders(rh, false);
  }
  // Passes `chunk` through; returns what the filter let out.
  std::string send(std::string_view chunk, bool end = false) {
    Buffer b;
    b.add(chunk);
    last_status = filter->encodeData(b, end);
    return b.toString();
  }
  test::FakeStream stream;
  std::unique_ptr<UsageFilter> filter;
  http::FilterDataStatus last_status = http::FilterDataStatus::Continue;
};

std::string delta(const std::string& text) {
  return R"(data: {"choices":[{"index":0,"delta":{"content":")" + text + R"("}}]})";
}
const char* kUsage =
    R"(data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}})";

TEST(UsageFilterTest, WholeEventsInOneSlicePassUntouchedAndAreCounted) {
  Harness h;
  std::string chunk = delta("a") + "\n\n" + delta("b") + "\r\n\r\n";
  Buffer b;
  b.add(chunk);
  const char* before = b.slice(0).data();
  EXPECT_EQ(h.filter->encodeData(b, false), http::FilterDataStatus::Continue);
  ASSERT_EQ(b.sliceCount(), 1u);
  EXPECT_EQ(b.slice(0).data(), before);  // the same bytes, not a copy
  EXPECT_EQ(b.toString(), chunk);
  std::string usage = std::string(kUsage) + "\n\n";
  EXPECT_EQ(h.send(usage + "data: [DONE]\n\n", true), usage + "data: [DONE]\n\n");
  EXPECT_EQ(h.stream.info.prompt_tokens, 3u);
  EXPECT_EQ(h.stream.info.completion_tokens, 4u);
}

TEST(UsageFilterTest, EventsSplitAtEveryByteComeOutWhole) {
  std::string stream =
      delta("one") + "\n\n" + delta("two") + "\r\n\r\n" + kUsage + "\n\n" + "data: [DONE]\n\n";
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    Harness h;
    std::string out = h.send(stream.substr(0, cut));
    out += h.send(stream.substr(cut), true);
    ASSERT_EQ(out, stream) << "cut at " << cut;
    ASSERT_EQ(h.stream.info.completion_tokens, 4u) << "cut at " << cut;
  }
}

TEST(UsageFilterTest, AnEventIsOnlyLetOutWhenComplete) {
  Harness h;
  std::string first = delta("x") + "\n\n";
  EXPECT_EQ(h.send(first + "data: {\"choices\""), first);
  EXPECT_EQ(h.send(":[]}\n"), "");
  EXPECT_EQ(h.send("\n"), "data: {\"choices\":[]}\n\n");
  // An unterminated event is let out when the stream ends.
  EXPECT_EQ(h.send("data: tail", true), "data: tail");
}

TEST(UsageFilterTest, InjectedUsageEventIsRemovedWhereverItFalls) {
  std::string usage = std::string(kUsage) + "\n\n";
  std::string before = delta("a") + "\n\n";
  std::string after = "data: [DONE]\n\n";
  std::string stream = before + usage + after;
  for (size_t cut = 0; cut <= stream.size(); ++cut) {
    Harness h(0, /*client_asked_usage=*/false);
    std::string out = h.send(stream.substr(0, cut));
    out += h.send(stream.substr(cut), true);
    ASSERT_EQ(out, before + after) << "cut at " << cut;
    ASSERT_EQ(h.stream.info.prompt_tokens, 3u) << "cut at " << cut;
  }
}

TEST(UsageFilterTest, TokenCapEndsTheStreamWithAnErrorEvent) {
  Harness h(2);
  std::string events =
      delta("a") + "\n\n" + delta("b") + "\n\n" + delta("c") + "\n\n" + delta("d") + "\n\n";
  EXPECT_EQ(h.send(events), "");
  EXPECT_EQ(h.last_status, http::FilterDataStatus::StopIterationNoBuffer);
  EXPECT_TRUE(h.stream.response_complete);
  // The three events up to and including the one past the cap, then the error and [DONE].
  EXPECT_EQ(
      h.stream.injected.rfind(delta("a") + "\n\n" + delta("b") + "\n\n" + delta("c") + "\n\n", 0),
      0u);
  EXPECT_NE(h.stream.injected.find("max_tokens_per_request_exceeded"), std::string::npos);
  EXPECT_EQ(h.stream.injected.find(delta("d")), std::string::npos);
  EXPECT_NE(h.stream.injected.find("data: [DONE]\n\n"), std::string::npos);
}

}  // namespace
}  // namespace eldric::filters::usage
