// http::SseSplitter and sseData: an upstream's event stream cut into
// events whatever its segments were.

#include "dataplane/http/sse.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace eldric::http {
namespace {

std::vector<std::string> split(SseSplitter& s, std::initializer_list<std::string_view> pieces,
                               bool* ok = nullptr) {
  std::vector<std::string> out;
  bool all = true;
  for (std::string_view p : pieces) {
    Buffer b;
    b.add(p);
    all &= s.feed(b, [&](std::string_view ev) {
      out.emplace_back(ev);
      return true;
    });
  }
  if (ok) *ok = all;
  return out;
}

TEST(SseTest, EventsAcrossSegmentsAndBlankLineKinds) {
  SseSplitter s(1024);
  auto evs = split(s, {"data: {\"a\":1}\n", "\ndata: {\"b\"", ":2}\r\n\r",
                       "\n: comment\n\ndata: [DO", "NE]\n\n"});
  ASSERT_EQ(evs.size(), 4u);
  EXPECT_EQ(evs[0], "data: {\"a\":1}\n\n");
  EXPECT_EQ(evs[1], "data: {\"b\":2}\r\n\r\n");
  EXPECT_EQ(evs[2], ": comment\n\n");
  EXPECT_EQ(evs[3], "data: [DONE]\n\n");
  EXPECT_EQ(sseData(evs[0]), "{\"a\":1}");
  EXPECT_EQ(sseData(evs[1]), "{\"b\":2}");
  EXPECT_EQ(sseData(evs[2]), "");
  EXPECT_EQ(sseData(evs[3]), "[DONE]");
  EXPECT_TRUE(s.pending().empty());
}

TEST(SseTest, ManyEventsInOneSegmentAndAPartialOneLeft) {
  SseSplitter s(1024);
  auto evs = split(s, {"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4"});
  ASSERT_EQ(evs.size(), 3u);
  EXPECT_EQ(s.pending(), "data: 4");
  evs = split(s, {"\n\n"});
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0], "data: 4\n\n");
}

TEST(SseTest, AnEventPastTheLimitSpendsTheSplitter) {
  SseSplitter s(16);
  bool ok = true;
  split(s, {"data: 0123456789abcdef"}, &ok);
  EXPECT_FALSE(ok);
  auto evs = split(s, {"\n\ndata: x\n\n"}, &ok);
  EXPECT_FALSE(ok);
  EXPECT_TRUE(evs.empty());
}

// Found by tool_stream_fuzz: an event that arrives whole in one read is
// bounded too, not only one still pending.
TEST(SseTest, AWholeEventPastTheLimitIsRefusedToo) {
  SseSplitter s(16);
  bool ok = true;
  auto evs = split(s, {"data: 0123456789abcdef\n\ndata: x\n\n"}, &ok);
  EXPECT_FALSE(ok);
  EXPECT_TRUE(evs.empty());
  SseSplitter exact(16);
  evs = split(exact, {"data: 0123456789\n\n"}, &ok);  // 16 bytes: the limit
  EXPECT_TRUE(ok);
  EXPECT_EQ(evs.size(), 1u);
}

TEST(SseTest, AnEventReadsAsAClientReadsIt) {
  SseEvent e = readSseEvent("data: {\"a\":\r\ndata:1}\r\n\r\n");
  EXPECT_TRUE(e.has_data);
  EXPECT_EQ(e.data, "{\"a\":\n1}");
  EXPECT_EQ(e.other, "");
  e = readSseEvent(": ping\rid: 7\revent: x\rdata\rdata:  two\r\r");
  EXPECT_EQ(e.data, "\n two");
  EXPECT_EQ(e.other, ": ping\nid: 7\nevent: x\n");
  e = readSseEvent(": keep-alive\n\n");
  EXPECT_FALSE(e.has_data);
  EXPECT_EQ(e.other, ": keep-alive\n");
  EXPECT_FALSE(readSseEvent("database: x\n\n").has_data);
  EXPECT_EQ(sseData("data: a\rb\n\n"), "");  // a lone CR ends a line too
}

TEST(SseTest, DataIsOneLineOnly) {
  EXPECT_EQ(sseData("data:{}\n\n"), "{}");
  EXPECT_EQ(sseData("event: x\ndata: {}\n\n"), "");
  EXPECT_EQ(sseData("data: {}\ndata: {}\n\n"), "");
  EXPECT_EQ(sseData("data: \n\n"), "");
}

}  // namespace
}  // namespace eldric::http
