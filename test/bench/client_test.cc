#include "test/bench/client.h"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <vector>

namespace loadgen {
namespace {

TEST(ParseUrl, SchemesPortsPathsAndV6) {
  Target t;
  std::string err;
  ASSERT_TRUE(ParseUrl("https://127.0.0.1:19443/v1/models", &t, &err));
  EXPECT_TRUE(t.tls);
  EXPECT_EQ(t.host, "127.0.0.1");
  EXPECT_EQ(t.port, "19443");
  EXPECT_EQ(t.path, "/v1/models");
  EXPECT_EQ(t.host_header, "127.0.0.1:19443");
  ASSERT_TRUE(ParseUrl("http://localhost", &t, &err));
  EXPECT_FALSE(t.tls);
  EXPECT_EQ(t.port, "80");
  EXPECT_EQ(t.path, "/");
  ASSERT_TRUE(ParseUrl("https://[::1]:8443/x", &t, &err));
  EXPECT_EQ(t.host, "::1");
  EXPECT_EQ(t.port, "8443");
  EXPECT_FALSE(ParseUrl("ftp://x/", &t, &err));
  EXPECT_FALSE(ParseUrl("http:///x", &t, &err));
  EXPECT_FALSE(ParseUrl("http://[::1/x", &t, &err));
}

TEST(ResolveLoopback, RefusesOtherAddresses) {
  Target t;
  std::string err;
  sockaddr_storage a;
  socklen_t len;
  ASSERT_TRUE(ParseUrl("http://127.0.0.2:1/", &t, &err));
  EXPECT_TRUE(ResolveLoopback(t, &a, &len, &err));
  ASSERT_TRUE(ParseUrl("http://10.1.2.3:1/", &t, &err));
  EXPECT_FALSE(ResolveLoopback(t, &a, &len, &err));
}

TEST(BuildRequest, AddsHostAndLengthUnlessGiven) {
  Target t;
  std::string err;
  ASSERT_TRUE(ParseUrl("http://127.0.0.1:8080/v1/chat/completions", &t, &err));
  EXPECT_EQ(BuildRequest("POST", t, {"Content-Type: application/json"}, "{}"),
            "POST /v1/chat/completions HTTP/1.1\r\nContent-Type: application/json\r\n"
            "Host: 127.0.0.1:8080\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(BuildRequest("GET", t, {"host: h", "Connection: close"}, ""),
            "GET /v1/chat/completions HTTP/1.1\r\nhost: h\r\nConnection: close\r\n\r\n");
}

struct Seen {
  std::string body;
  std::vector<std::string> chunks;
  std::string current;
};
void OnBody(void* ctx, const char* p, size_t n) {
  auto* s = static_cast<Seen*>(ctx);
  s->body.append(p, n);
  s->current.append(p, n);
}
void OnChunkEnd(void* ctx) {
  auto* s = static_cast<Seen*>(ctx);
  s->chunks.push_back(s->current);
  s->current.clear();
}

TEST(ResponseParser, ChunkedBodyByteByByte) {
  const std::string r =
      "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
      "d\r\ndata: [one]\n\n\r\nd\r\ndata: [two]\n\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n";
  Seen seen;
  ResponseParser p;
  p.Reset(false, OnBody, &seen, OnChunkEnd);
  size_t i = 0;
  for (; i < r.size() && !p.complete(); i++) ASSERT_TRUE(p.Feed(&r[i], 1)) << i;
  EXPECT_TRUE(p.complete());
  EXPECT_EQ(p.status(), 200);
  EXPECT_TRUE(p.keep_alive());
  EXPECT_EQ(seen.body, "data: [one]\n\ndata: [two]\n\n");
  // The last-chunk (size 0) ends a chunk too; the two with data come first.
  ASSERT_GE(seen.chunks.size(), 2u);
  EXPECT_EQ(seen.chunks[0], "data: [one]\n\n");
  EXPECT_EQ(seen.chunks[1], "data: [two]\n\n");
  // It stopped at the end of the message: what follows is not parsed.
  EXPECT_LT(i, r.size());
}

TEST(ResponseParser, ConnectionCloseAndCloseDelimitedBody) {
  ResponseParser p;
  std::string r = "HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
  p.Reset();
  ASSERT_TRUE(p.Feed(r.data(), r.size()));
  EXPECT_TRUE(p.complete());
  EXPECT_EQ(p.status(), 404);
  EXPECT_FALSE(p.keep_alive());

  Seen seen;
  p.Reset(false, OnBody, &seen);
  r = "HTTP/1.0 200 OK\r\n\r\nuntil the end";
  ASSERT_TRUE(p.Feed(r.data(), r.size()));
  EXPECT_FALSE(p.complete());
  p.Finish();
  EXPECT_TRUE(p.complete());
  EXPECT_FALSE(p.keep_alive());
  EXPECT_EQ(seen.body, "until the end");
}

TEST(ResponseParser, HeadHasNoBodyAndGarbageFails) {
  ResponseParser p;
  p.Reset(/*head=*/true);
  std::string r = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
  ASSERT_TRUE(p.Feed(r.data(), r.size()));
  EXPECT_TRUE(p.complete());
  p.Reset();
  r = "NOT HTTP\r\n\r\n";
  EXPECT_FALSE(p.Feed(r.data(), r.size()));
  EXPECT_FALSE(p.complete());
}

[[noreturn]] void Throw(const std::string& err) { throw std::runtime_error(err); }

TEST(FlagReader, InlineSeparateAndPositional) {
  const char* argv[] = {"x",  "--rate=5", "--url",  "http://a/", "pos",
                        "-c", "3",        "--rate", "-1",        nullptr};
  FlagReader f(9, const_cast<char**>(argv), Throw);
  ASSERT_TRUE(f.Next());
  EXPECT_EQ(f.name(), "--rate");
  EXPECT_EQ(f.Num(), 5);
  ASSERT_TRUE(f.Next());
  EXPECT_EQ(f.Value(), "http://a/");
  ASSERT_TRUE(f.Next());
  EXPECT_EQ(f.name(), "pos");
  ASSERT_TRUE(f.Next());
  EXPECT_EQ(f.name(), "-c");
  EXPECT_EQ(f.Num(), 3);
  ASSERT_TRUE(f.Next());
  EXPECT_THROW(f.Num(), std::runtime_error);  // negative
  EXPECT_FALSE(f.Next());
}

}  // namespace
}  // namespace loadgen
