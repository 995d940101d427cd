#include "dataplane/http/headers.h"

#include <gtest/gtest.h>

#include "dataplane/http/errors.h"

namespace eldric::http {
namespace {

TEST(HeadersTest, RemoveHopByHopIncludingConnectionNamed) {
  HeaderMap h;
  h.add("connection", "keep-alive, x-secret-hop");
  h.add("keep-alive", "timeout=5");
  h.add("transfer-encoding", "chunked");
  h.add("x-secret-hop", "1");
  h.add("upgrade", "websocket");
  h.add("content-type", "application/json");
  removeHopByHop(h);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h.entries()[0].first, "content-type");
}

TEST(HeadersTest, RemoveHopByHopEveryNameAndNothingElse) {
  HeaderMap h;
  for (const char* n : {"te", "trailer", "upgrade", "keep-alive", "proxy-connection",
                        "transfer-encoding", "proxy-authenticate", "proxy-authorization"}) {
    h.add(n, "x");
  }
  // Same lengths as hop-by-hop names, but end-to-end.
  h.add("tx", "1");
  h.add("trailex", "2");
  h.add("x-forwarded-proto", "3");
  removeHopByHop(h);
  ASSERT_EQ(h.size(), 3u);
  EXPECT_EQ(h.entries()[0].first, "tx");
  EXPECT_EQ(h.entries()[1].first, "trailex");
  EXPECT_EQ(h.entries()[2].first, "x-forwarded-proto");
}

TEST(HeadersTest, RemoveHopByHopLeavesPlainMessageAlone) {
  HeaderMap h;
  h.add("host", "a");
  h.add("content-type", "application/json");
  removeHopByHop(h);
  EXPECT_EQ(h.size(), 2u);
}

TEST(HeadersTest, SerializeHeadCopiesEveryPieceInOrder) {
  HeaderMap h;
  h.add("content-type", "application/json");
  h.add("x-empty", "");
  Buffer out;
  out.add("before|");
  serializeHead({"GET", " ", "/v1/models", " HTTP/1.1\r\n"}, h,
                {"", "connection: close\r\n", "\r\n"}, out);
  EXPECT_EQ(out.toString(),
            "before|GET /v1/models HTTP/1.1\r\ncontent-type: application/json\r\nx-empty: \r\n"
            "connection: close\r\n\r\n");
  Buffer big;
  HeaderMap large;
  large.add("x-big", std::string(20000, 'a'));
  serializeHead({"HTTP/1.1 200 OK\r\n"}, large, {"\r\n"}, big);
  EXPECT_EQ(big.length(), 17u + 5 + 2 + 20000 + 2 + 2);
}

TEST(HeadersTest, SetReplacesEveryValue) {
  HeaderMap h;
  h.add("x-forwarded-for", "1.2.3.4");
  h.add("x-forwarded-for", "5.6.7.8");
  h.set("x-forwarded-for", "9.9.9.9");
  EXPECT_EQ(h.count("x-forwarded-for"), 1u);
  EXPECT_EQ(*h.get("x-forwarded-for"), "9.9.9.9");
}

TEST(HeadersTest, ArenaViewsStayValidAcrossGrowthRemovalAndMoves) {
  HeaderMap h;
  h.add("authorization", "Bearer sk-0123456789abcdef");
  std::string_view key = *h.get("authorization");
  // Enough headers and bytes to need several chunks (the first is 1 KB),
  // and one value larger than any chunk so far.
  for (int i = 0; i < 200; ++i)
    h.add("x-h" + std::to_string(i), std::string(40, static_cast<char>('a' + i % 26)));
  h.add("x-huge", std::string(10000, 'z'));
  h.remove("authorization");
  EXPECT_EQ(key, "Bearer sk-0123456789abcdef");  // removed entries' bytes live as long as the map
  EXPECT_FALSE(h.get("authorization"));
  EXPECT_EQ(h.get("x-h199")->size(), 40u);
  EXPECT_EQ(*h.get("x-h27"), std::string(40, 'b'));
  EXPECT_EQ(h.get("x-huge")->size(), 10000u);
  // Set may take its value from the map itself.
  h.set("x-h0", *h.get("x-h1"));
  EXPECT_EQ(*h.get("x-h0"), std::string(40, 'b'));
  EXPECT_EQ(h.count("x-h0"), 1u);
  // A copy owns its bytes; a move keeps the views.
  HeaderMap copy = h;
  std::string_view moved_view = *h.get("x-h5");
  HeaderMap moved = std::move(h);
  EXPECT_EQ(*moved.get("x-h5"), moved_view);
  EXPECT_EQ(moved.get("x-h5")->data(), moved_view.data());
  EXPECT_NE(copy.get("x-h5")->data(), moved_view.data());
  EXPECT_EQ(*copy.get("x-h5"), std::string(40, 'f'));
  EXPECT_EQ(copy.size(), moved.size());
  // The map moved from is empty and writes into its own arena, not into
  // the free space of the chunk it gave away.
  h.add("x-after", std::string(40, '!'));  // NOLINT(bugprone-use-after-move): on purpose
  EXPECT_EQ(h.size(), 1u);
  h.add("x-more", std::string(300, '?'));
  EXPECT_EQ(*moved.get("x-h199"), std::string(40, static_cast<char>('a' + 199 % 26)));
  EXPECT_EQ(*moved.get("x-h0"), std::string(40, 'b'));
  moved.add("x-moved-after", "ok");
  EXPECT_EQ(*h.get("x-after"), std::string(40, '!'));
  EXPECT_EQ(*moved.get("x-moved-after"), "ok");
  // Empty values are kept as entries.
  copy.add("x-empty", "");
  ASSERT_TRUE(copy.get("x-empty"));
  EXPECT_TRUE(copy.get("x-empty")->empty());
}

TEST(HeadersTest, ListHasToken) {
  EXPECT_TRUE(listHasToken("gzip, Chunked", "chunked"));
  EXPECT_FALSE(listHasToken("gzip,chunkedx", "chunked"));
}

TEST(ErrorsTest, OpenAiShapeAndEscaping) {
  EXPECT_EQ(errorBody("bad \"x\"", "invalid_request_error", "bad_request"),
            "{\"error\":{\"message\":\"bad \\\"x\\\"\",\"type\":\"invalid_request_error\","
            "\"param\":null,\"code\":\"bad_request\"}}");
  EXPECT_EQ(
      errorBody("m", "server_error", ""),
      "{\"error\":{\"message\":\"m\",\"type\":\"server_error\",\"param\":null,\"code\":null}}");
  EXPECT_EQ(std::string(defaultErrorType(429)), "rate_limit_error");
}

TEST(RequestHeadersTest, PathOnlyDropsQuery) {
  RequestHeaders r;
  r.path = "/v1/models?x=1";
  EXPECT_EQ(r.pathOnly(), "/v1/models");
}

}  // namespace
}  // namespace eldric::http
