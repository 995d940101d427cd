#include "test/bench/sse.h"

#include <gtest/gtest.h>

#include <string>

namespace loadgen {
namespace {

// An event as the fake router writes it.
std::string Tok(int i) {
  return "data: "
         "{\"id\":\"chatcmpl-fake-0-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"tok" +
         std::to_string(i) + " \"},\"logprobs\":null,\"finish_reason\":null}]}\n\n";
}
const std::string kRole =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const std::string kFinish =
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
const std::string kDone = "data: [DONE]\n\n";

SseScanner::Counts Feed(SseScanner& s, const std::string& b) { return s.Feed(b.data(), b.size()); }

TEST(SseScanner, TokenOfFindsTheFakeRoutersNumbering) {
  std::string t = Tok(17);
  EXPECT_EQ(SseScanner::TokenOf(t.data(), t.size()), 17);
  EXPECT_EQ(SseScanner::TokenOf(kRole.data(), kRole.size()), -1);
  EXPECT_EQ(SseScanner::TokenOf(kDone.data(), kDone.size()), -1);
  std::string not_a_token = "data: {\"content\":\"token \"}\n\n";
  EXPECT_EQ(SseScanner::TokenOf(not_a_token.data(), not_a_token.size()), -1);
}

TEST(SseScanner, OneEventPerFeedIsNotMerged) {
  SseScanner s;
  EXPECT_EQ(Feed(s, kRole).events, 1);
  EXPECT_EQ(Feed(s, kRole).tokens, 0);
  for (int i = 0; i < 3; i++) {
    SseScanner::Counts c = Feed(s, Tok(i));
    EXPECT_EQ(c.events, 1);
    EXPECT_EQ(c.tokens, 1);
  }
  // The fake router writes the last token, the finish event and [DONE]
  // together: one token event, so nothing merged.
  SseScanner::Counts c = Feed(s, Tok(3) + kFinish + kDone);
  EXPECT_EQ(c.events, 3);
  EXPECT_EQ(c.tokens, 1);
  s.End(4);
  EXPECT_TRUE(s.done());
  EXPECT_EQ(s.lost(), 0u);
  EXPECT_EQ(s.tokens(), 4u);
  EXPECT_EQ(s.events(), 8u);  // the role event twice, 4 tokens, finish, [DONE]
}

TEST(SseScanner, TwoTokensInOneFeedAreReported) {
  SseScanner s;
  SseScanner::Counts c = Feed(s, Tok(0) + Tok(1));
  EXPECT_EQ(c.events, 2);
  EXPECT_EQ(c.tokens, 2);  // the caller counts 2 - 1 merged
}

TEST(SseScanner, EventSplitAcrossFeedsCountsWhereItEnds) {
  SseScanner s;
  std::string t = Tok(0);
  for (size_t cut : {size_t(1), size_t(10), t.size() - 2, t.size() - 1}) {
    SseScanner r;
    SseScanner::Counts a = r.Feed(t.data(), cut);
    SseScanner::Counts b = r.Feed(t.data() + cut, t.size() - cut);
    EXPECT_EQ(a.events, 0) << cut;
    EXPECT_EQ(b.events, 1) << cut;
    EXPECT_EQ(b.tokens, 1) << cut;
  }
  // Byte by byte: still one event each, no more.
  std::string all = Tok(0) + Tok(1) + kDone;
  int events = 0, tokens = 0;
  for (char ch : all) {
    SseScanner::Counts c = s.Feed(&ch, 1);
    events += c.events;
    tokens += c.tokens;
  }
  EXPECT_EQ(events, 3);
  EXPECT_EQ(tokens, 2);
  EXPECT_TRUE(s.done());
}

TEST(SseScanner, TailOfOneEventAndWholeNextInOneFeed) {
  SseScanner s;
  std::string a = Tok(0), b = Tok(1);
  Feed(s, a.substr(0, 20));
  SseScanner::Counts c = Feed(s, a.substr(20) + b);
  EXPECT_EQ(c.events, 2);
  EXPECT_EQ(c.tokens, 2);
  EXPECT_EQ(s.lost(), 0u);
}

TEST(SseScanner, CrLfSeparatedEvents) {
  SseScanner s;
  std::string t = Tok(0);
  t.replace(t.size() - 2, 2, "\r\n\r\n");
  SseScanner::Counts c = Feed(s, t + "data: [DONE]\r\n\r\n");
  EXPECT_EQ(c.events, 2);
  EXPECT_EQ(c.tokens, 1);
  EXPECT_TRUE(s.done());
}

TEST(SseScanner, SkippedAndMissingTokensAreLost) {
  SseScanner s;
  Feed(s, Tok(0));
  Feed(s, Tok(3));  // 1 and 2 lost
  EXPECT_EQ(s.lost(), 2u);
  Feed(s, Tok(2));  // late or repeated
  EXPECT_EQ(s.out_of_order(), 1u);
  s.End(6);  // 4 and 5 never came
  EXPECT_EQ(s.lost(), 4u);
  EXPECT_FALSE(s.done());
}

}  // namespace
}  // namespace loadgen
