// The tunnel agent's pieces that need no network: the poll answer's
// parse, URL parsing for its flags, the backoff's range.

#include <gtest/gtest.h>

#include "common/address.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/tunnel_agent/agent.h"
#include "dataplane/tunnel_agent/work.h"

namespace eldric::tunnel_agent {
namespace {

TEST(TunnelWork, AWholeRequestParses) {
  Work w;
  std::string error;
  ASSERT_TRUE(parseWork(
      R"({"id":"ab12","method":"POST","path":"/v1/chat/completions?x=1",)"
      R"("headers":{"content-type":"application/json","accept":"text/event-stream"},"body":"{}"})",
      &w, &error))
      << error;
  EXPECT_EQ(w.id, "ab12");
  EXPECT_EQ(w.method, "POST");
  EXPECT_EQ(w.path, "/v1/chat/completions?x=1");
  EXPECT_EQ(w.content_type, "application/json");
  EXPECT_EQ(w.accept, "text/event-stream");
  EXPECT_EQ(w.body, "{}");
}

TEST(TunnelWork, DefaultsForWhatIsLeftOut) {
  Work w;
  std::string error;
  ASSERT_TRUE(parseWork(R"({"id":"a","path":"/v1/models"})", &w, &error)) << error;
  EXPECT_EQ(w.method, "POST");
  EXPECT_EQ(w.content_type, "application/json");
  EXPECT_TRUE(w.accept.empty());
  EXPECT_TRUE(w.body.empty());
}

TEST(TunnelWork, NothingThatWouldSplitARequestLineOrHeader) {
  for (const char* bad : {
           R"({"id":"a","path":"/x y"})",                 // space in the path
           R"({"id":"a","path":"/x\r\nHost: evil"})",     // CRLF in the path
           R"({"id":"a","path":"http://evil/"})",         // absolute form
           R"({"id":"a/../b","path":"/x"})",              // an id that is a path
           R"({"id":"a","method":"GET /","path":"/x"})",  // a method with a space
           R"({"id":"a","path":"/x","headers":{"content-type":"a\r\nb: c"}})",
           R"({"id":"a","path":"/x","headers":{"accept":5}})",
           R"({"id":"a","path":"/x","body":{}})",
           R"({"path":"/x"})",
           R"([1,2])",
           R"({"id":"a","id":"b","path":"/x"})",  // duplicate members
           "not json",
       }) {
    Work w;
    std::string error;
    EXPECT_FALSE(parseWork(bad, &w, &error)) << bad;
    EXPECT_FALSE(error.empty()) << bad;
    EXPECT_EQ(error.find("evil"), std::string::npos) << "the error quotes no request bytes";
  }
}

TEST(AgentUrl, HttpAndHttpsWithTheirDefaultPorts) {
  network::Url u;
  std::string error;
  ASSERT_TRUE(network::parseUrl("https://edge.example.com", &u, &error)) << error;
  EXPECT_TRUE(u.https);
  EXPECT_EQ(u.host, "edge.example.com");
  EXPECT_EQ(u.port, 443);
  EXPECT_EQ(u.path, "/");
  ASSERT_TRUE(network::parseUrl("http://[::1]:11434/ollama", &u, &error)) << error;
  EXPECT_FALSE(u.https);
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, 11434);
  EXPECT_EQ(u.path, "/ollama");
  for (const char* bad : {"ftp://x", "http://", "http://:80", "http://h:0", "http://h:99999",
                          "http://h:", "http://h:8x", "http://[::1", "http://[::1]x",
                          "http://user@h/", "http://h/a b"}) {
    EXPECT_FALSE(network::parseUrl(bad, &u, &error)) << bad;
  }
}

TEST(AgentBackoff, JitteredDoublingToTheMaximum) {
  Dispatcher d;
  AgentOptions o;
  o.backoff_initial_ms = 400;
  o.backoff_max_ms = 3000;
  Agent agent(d, o);
  for (int i = 0; i < 200; ++i) {
    uint64_t first = agent.backoffMs(1);
    EXPECT_GE(first, 200u);
    EXPECT_LE(first, 400u);
    uint64_t third = agent.backoffMs(3);
    EXPECT_GE(third, 800u);
    EXPECT_LE(third, 1600u);
    uint64_t late = agent.backoffMs(40);
    EXPECT_GE(late, 1500u);
    EXPECT_LE(late, 3000u);
  }
}

}  // namespace
}  // namespace eldric::tunnel_agent
