// The HTTP/1 client codec: an upstream's responses as the router sees
// them (headers, body, end, errors), and whether the connection may carry
// another request afterwards.

#include "dataplane/http/http1_client_codec.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace eldric::http {
namespace {

class Upstream : public ClientCodecCallbacks {
 public:
  void onResponseHeaders(ResponseHeadersPtr h, bool end_stream) override {
    headers = std::move(h);
    ++header_calls;
    headers_ended = end_stream;
    ended = ended || end_stream;
  }
  void onResponseData(Buffer& data, bool end_stream) override {
    if (data.sliceCount() > 0) last_data_slab = data.slice(0).slab.get();
    body += data.toString();
    data.clear();
    if (end_stream) {
      EXPECT_FALSE(ended) << "the end of the response is reported once";
      ended = true;
    }
  }
  void onResponseError(const std::string& reason) override { errors.push_back(reason); }

  ResponseHeadersPtr headers;
  int header_calls = 0;
  bool headers_ended = false;
  std::string body;
  bool ended = false;
  std::vector<std::string> errors;
  const Slab* last_data_slab = nullptr;
};

class Http1ClientCodecTest : public ::testing::Test {
 protected:
  Http1ClientCodecTest() { codec_.beginResponse(false); }

  // One read from the upstream; dispatch() takes all of it unless it
  // fails (the connection is dropped then).
  void feed(std::string_view bytes) {
    Buffer b;
    b.add(bytes);
    codec_.dispatch(b);
    if (upstream_.errors.empty()) EXPECT_TRUE(b.empty());
  }
  void feedByteByByte(std::string_view bytes) {
    for (char c : bytes) feed(std::string_view(&c, 1));
  }
  int status() const { return upstream_.headers ? upstream_.headers->status : 0; }
  std::string error() const {
    return upstream_.errors.size() == 1 ? upstream_.errors[0] : std::string("(none or several)");
  }

  Upstream upstream_;
  Http1ClientCodec codec_{upstream_};
};

constexpr std::string_view kOk = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

TEST_F(Http1ClientCodecTest, ContentLengthResponseInOneRead) {
  EXPECT_FALSE(codec_.responseStarted());
  feed("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello");
  EXPECT_EQ(status(), 200);
  EXPECT_EQ(upstream_.headers->headers.get("content-type"), "application/json");  // lowercased
  EXPECT_FALSE(upstream_.headers_ended);
  EXPECT_EQ(upstream_.body, "hello");
  EXPECT_TRUE(upstream_.ended);
  EXPECT_TRUE(codec_.responseStarted());
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
  EXPECT_TRUE(upstream_.errors.empty());
}

TEST_F(Http1ClientCodecTest, ResponseReadByteByByteIsTheSame) {
  feedByteByByte(kOk);
  EXPECT_EQ(status(), 200);
  EXPECT_EQ(upstream_.header_calls, 1);
  EXPECT_EQ(upstream_.body, "hello");
  EXPECT_TRUE(upstream_.ended);
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, BodyIsPassedOnByReference) {
  Buffer b;
  b.add(kOk);
  const Slab* read_into = b.slice(0).slab.get();
  codec_.dispatch(b);
  EXPECT_EQ(upstream_.last_data_slab, read_into);
}

TEST_F(Http1ClientCodecTest, NotCompleteUntilTheLastBodyByte) {
  feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell");
  EXPECT_TRUE(codec_.responseStarted());
  EXPECT_FALSE(codec_.complete());
  EXPECT_FALSE(upstream_.ended);
  feed("o");
  EXPECT_TRUE(codec_.complete());
  EXPECT_EQ(upstream_.body, "hello");
}

TEST_F(Http1ClientCodecTest, ChunkedBodyWithExtensionsAndTrailers) {
  feed(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;ext=1\r\nhello\r\n1;a;b=\"c\"\r\n!\r\n0\r\nX-Usage: 12\r\nX-Other: 1\r\n\r\n");
  EXPECT_EQ(status(), 200);
  EXPECT_EQ(upstream_.body, "hello!");
  EXPECT_TRUE(upstream_.ended);
  EXPECT_FALSE(upstream_.headers->headers.get("x-usage").has_value());  // trailers dropped
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
  EXPECT_TRUE(upstream_.errors.empty());
}

TEST_F(Http1ClientCodecTest, ChunkedBodyByteByByte) {
  feedByteByByte(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "a\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n");
  EXPECT_EQ(upstream_.body, "0123456789");
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(upstream_.errors.empty());
}

TEST_F(Http1ClientCodecTest, TrailerNameMustBeAToken) {
  feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX T: 1\r\n\r\n");
  EXPECT_NE(error().find("malformed upstream response"), std::string::npos) << error();
  EXPECT_FALSE(upstream_.ended);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, TooManyTrailersIsAnError) {
  std::string trailers;
  for (int i = 0; i < 101; ++i) trailers += "t" + std::to_string(i) + ": v\r\n";
  feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n" + trailers + "\r\n");
  EXPECT_NE(error().find("too many trailer fields"), std::string::npos) << error();
  EXPECT_FALSE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, CloseDelimitedBodyCompletesAtEof) {
  feed("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome");
  feed(" more");
  EXPECT_FALSE(codec_.complete());
  EXPECT_FALSE(upstream_.ended);
  EXPECT_TRUE(codec_.onEof());
  EXPECT_EQ(upstream_.body, "some more");
  EXPECT_TRUE(upstream_.ended);
  EXPECT_TRUE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, EofMidContentLengthIsATruncatedResponse) {
  feed("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello");
  EXPECT_FALSE(codec_.onEof());
  EXPECT_FALSE(upstream_.ended);
  EXPECT_FALSE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, EofMidChunkedBodyIsATruncatedResponse) {
  feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
  EXPECT_FALSE(codec_.onEof());
  EXPECT_FALSE(upstream_.ended);
}

TEST_F(Http1ClientCodecTest, EofBeforeTheHeadersIsATruncatedResponse) {
  feed("HTTP/1.1 200 OK\r\nContent-Le");
  EXPECT_FALSE(codec_.onEof());
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, EofAfterACompleteResponseChangesNothing) {
  feed(kOk);
  EXPECT_TRUE(codec_.onEof());
  EXPECT_TRUE(codec_.complete());
}

TEST_F(Http1ClientCodecTest, ContinueBeforeTheResponseIsSkipped) {
  feed("HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_FALSE(codec_.complete());
  feed(kOk);
  EXPECT_EQ(upstream_.header_calls, 1);
  EXPECT_EQ(status(), 200);
  EXPECT_EQ(upstream_.body, "hello");
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, SeveralInformationalResponsesInOneReadAreSkipped) {
  feed(
      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
      "HTTP/1.1 100 Continue\r\n\r\n" +
      std::string(kOk));
  EXPECT_EQ(upstream_.header_calls, 1);
  EXPECT_EQ(status(), 200);
  EXPECT_FALSE(upstream_.headers->headers.get("link").has_value());  // the 103's header
  EXPECT_EQ(upstream_.body, "hello");
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, SwitchingProtocolsIsAnError) {
  feed("HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n");
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_EQ(upstream_.errors.size(), 1u);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, HeadResponseHasNoBodyWhateverItsLength) {
  codec_.beginResponse(true);
  feed("HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
  EXPECT_EQ(status(), 200);
  EXPECT_EQ(upstream_.headers->headers.get("content-length"), "1234");
  EXPECT_TRUE(upstream_.headers_ended);
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, HeadResponseThatIsChunkedHasNoBody) {
  codec_.beginResponse(true);
  feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
  EXPECT_TRUE(upstream_.headers_ended);
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, NoContentAndNotModifiedHaveNoBody) {
  for (std::string_view response : {"HTTP/1.1 204 No Content\r\n\r\n",
                                    "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n"}) {
    upstream_ = Upstream();
    codec_.beginResponse(false);
    feed(response);
    EXPECT_TRUE(upstream_.headers_ended) << response;
    EXPECT_TRUE(codec_.complete()) << response;
    EXPECT_TRUE(codec_.keepAlive()) << response;
    EXPECT_TRUE(upstream_.body.empty());
  }
}

TEST_F(Http1ClientCodecTest, ZeroContentLengthEndsWithTheHeaders) {
  feed("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_TRUE(upstream_.headers_ended);
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, ConnectionCloseIsNotReused) {
  feed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_TRUE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, Http10IsReusedOnlyWithKeepAlive) {
  feed("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_TRUE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());

  upstream_ = Upstream();
  codec_.beginResponse(false);
  feed("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok");
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, ConnectionReusedAfterBeginResponse) {
  feed(kOk);
  ASSERT_TRUE(codec_.complete());
  upstream_ = Upstream();
  codec_.beginResponse(false);
  EXPECT_FALSE(codec_.complete());
  EXPECT_FALSE(codec_.responseStarted());
  feed("HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnot");
  EXPECT_EQ(status(), 404);
  EXPECT_EQ(upstream_.body, "not");
  EXPECT_TRUE(codec_.complete());
  EXPECT_TRUE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, BytesAfterACompleteResponseForbidReuse) {
  feed(std::string(kOk) + "HTTP/1.1 200 OK\r\n");
  EXPECT_EQ(upstream_.header_calls, 1);
  EXPECT_EQ(upstream_.body, "hello");
  EXPECT_TRUE(codec_.complete());
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, BytesInALaterReadAfterACompleteResponseForbidReuse) {
  feed(kOk);
  EXPECT_TRUE(codec_.keepAlive());
  feed("X");
  EXPECT_FALSE(codec_.keepAlive());
  EXPECT_EQ(upstream_.header_calls, 1);
}

TEST_F(Http1ClientCodecTest, BytesAfterANoBodyResponseForbidReuse) {
  feed("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\n\r\n");
  EXPECT_EQ(upstream_.header_calls, 1);
  EXPECT_EQ(status(), 204);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, MalformedStatusLineIsAnError) {
  feed("HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_NE(error().find("malformed upstream response"), std::string::npos) << error();
  EXPECT_FALSE(codec_.keepAlive());
  EXPECT_FALSE(codec_.complete());
}

TEST_F(Http1ClientCodecTest, ResponseThatIsNotHttpIsAnError) {
  feed("SSH-2.0-OpenSSH_9.2\r\n");
  EXPECT_EQ(upstream_.errors.size(), 1u);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, NothingIsParsedAfterAnError) {
  feed("HTTP/1.1 2x0 OK\r\n\r\n");
  ASSERT_EQ(upstream_.errors.size(), 1u);
  Buffer b;
  b.add(kOk);
  codec_.dispatch(b);
  EXPECT_EQ(upstream_.errors.size(), 1u);
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_FALSE(codec_.onEof());
}

TEST_F(Http1ClientCodecTest, BadChunkSizeIsAnError) {
  feed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\nhello\r\n");
  EXPECT_EQ(upstream_.header_calls, 1);  // the head was fine
  EXPECT_EQ(upstream_.errors.size(), 1u);
  EXPECT_FALSE(upstream_.ended);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, ContentLengthWithTransferEncodingIsAnError) {
  feed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  EXPECT_EQ(upstream_.errors.size(), 1u);
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, SpaceBeforeColonIsAnError) {
  feed("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello");
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_NE(error().find("malformed upstream response"), std::string::npos) << error();
  EXPECT_FALSE(codec_.keepAlive());
}

TEST_F(Http1ClientCodecTest, HeadersOver64KiBAreAnError) {
  std::string big(16 * 1024, 'v');
  std::string head = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 4; ++i) head += "X-" + std::to_string(i) + ": " + big + "\r\n";
  feed(head + "Content-Length: 0\r\n\r\n");
  EXPECT_EQ(upstream_.header_calls, 0);
  EXPECT_NE(error().find("response headers too large"), std::string::npos) << error();
}

TEST_F(Http1ClientCodecTest, HeadersJustUnder64KiBAreAccepted) {
  std::string head = "HTTP/1.1 200 OK\r\n";
  head += "X-Big: " + std::string(60 * 1024, 'v') + "\r\n";
  feed(head + "Content-Length: 0\r\n\r\n");
  EXPECT_TRUE(upstream_.errors.empty()) << error();
  EXPECT_TRUE(codec_.complete());
}

TEST_F(Http1ClientCodecTest, RequestHeadIsSerialised) {
  RequestHeaders r;
  r.method = "POST";
  r.path = "/v1/chat/completions?stream=1";
  r.headers.add("host", "upstream");
  r.headers.add("content-length", "2");
  Buffer out;
  Http1ClientCodec::encodeRequestHead(r, out);
  EXPECT_EQ(out.toString(),
            "POST /v1/chat/completions?stream=1 HTTP/1.1\r\nhost: upstream\r\n"
            "content-length: 2\r\n\r\n");
}

}  // namespace
}  // namespace eldric::http
