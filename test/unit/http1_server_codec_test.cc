// The HTTP/1 server codec: what it delivers to the connection manager for
// a client's bytes (requests, refusals), how it encodes responses, and
// when it goes on with the next request on a keep-alive connection. The
// codec writes to a real network::Connection on a loopback socket; each
// test reads back what reached the peer.

#include "dataplane/http/http1_server_codec.h"

#include <gtest/gtest.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "test/support/loopback.h"

namespace eldric::http {
namespace {

// The connection manager's part, recorded. A codec error is answered as
// the manager does: the status, or an abort once a response began.
class Manager : public ServerCodecCallbacks, public RequestDecoder {
 public:
  struct Request {
    RequestHeadersPtr headers;
    std::string body;
    bool ended = false;
  };

  RequestDecoder& newStream(ResponseEncoder& encoder) override {
    encoder_ = &encoder;
    requests.emplace_back();
    return *this;
  }
  void onCodecError(const CodecError& error, ResponseEncoder& encoder) override {
    errors.push_back(error);
    if (encoder.headersSent()) {
      encoder.abort();
      return;
    }
    ResponseHeaders h;
    h.status = error.status;
    h.headers.add("content-length", "0");
    encoder.encodeHeaders(h, true);
  }
  void onResponseComplete(bool keep_alive) override { completions.push_back(keep_alive); }
  bool inputPaused() const override { return paused; }

  void decodeHeaders(RequestHeadersPtr headers, bool end_stream) override {
    requests.back().headers = std::move(headers);
    requests.back().ended = end_stream;
    if (on_headers) on_headers();
  }
  void decodeData(Buffer& data, bool end_stream) override {
    requests.back().body += data.toString();
    data.clear();
    if (end_stream) requests.back().ended = true;
    if (on_data) on_data();
  }

  ResponseEncoder& encoder() { return *encoder_; }
  const RequestHeaders& request(size_t i) const { return *requests.at(i).headers; }

  std::vector<Request> requests;
  std::vector<CodecError> errors;
  std::vector<bool> completions;  // onResponseComplete's keep_alive, in order
  bool paused = false;
  // Run inside decodeHeaders / decodeData (an answer from a filter).
  std::function<void()> on_headers;
  std::function<void()> on_data;

 private:
  ResponseEncoder* encoder_ = nullptr;
};

class Http1ServerCodecTest : public ::testing::Test {
 protected:
  Http1ServerCodecTest() { makeCodec(CodecLimits{}); }

  void makeCodec(const CodecLimits& limits) {
    codec_ = std::make_unique<Http1ServerCodec>(loop_.connection(), manager_, limits);
  }
  // Bytes from the client, as one read; what the codec leaves (a
  // pipelined request) stays in input_ for the next dispatch.
  void feed(std::string_view bytes) {
    input_.add(bytes);
    codec_->dispatch(input_);
  }
  // The same, one read per byte.
  void feedByteByByte(std::string_view bytes) {
    for (char c : bytes) feed(std::string_view(&c, 1));
  }
  // Dispatches what is left of the input (the manager does so once a
  // response is done).
  void resume() { codec_->dispatch(input_); }
  // A whole response with a content-length.
  void respond(int status, std::string_view body = "") {
    ResponseHeaders h;
    h.status = status;
    h.headers.add("content-length", std::to_string(body.size()));
    manager_.encoder().encodeHeaders(h, body.empty());
    if (!body.empty()) {
      Buffer b;
      b.add(body);
      manager_.encoder().encodeData(b, true);
    }
  }
  std::string written() { return loop_.takeWritten(); }
  // The one error the codec reported, by code ("" if none or several).
  std::string errorCode() const {
    return manager_.errors.size() == 1 ? manager_.errors[0].code : std::string();
  }
  int errorStatus() const { return manager_.errors.size() == 1 ? manager_.errors[0].status : 0; }

  test::Loopback loop_;
  Manager manager_;
  std::unique_ptr<Http1ServerCodec> codec_;
  Buffer input_;
};

constexpr std::string_view kGet = "GET /v1/models HTTP/1.1\r\nHost: edge\r\n\r\n";

// --- Request parsing ---------------------------------------------------

TEST_F(Http1ServerCodecTest, GetIsDeliveredWithMethodTargetAndHeaders) {
  feed("GET /v1/models?x=1 HTTP/1.1\r\nHost: edge\r\nX-Trace: Abc\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  const RequestHeaders& r = manager_.request(0);
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.path, "/v1/models?x=1");
  EXPECT_EQ(r.pathOnly(), "/v1/models");
  EXPECT_EQ(r.version_minor, 1);
  EXPECT_TRUE(r.keep_alive);
  EXPECT_FALSE(r.chunked);
  EXPECT_FALSE(r.content_length.has_value());
  EXPECT_EQ(r.headers.get("host"), "edge");
  EXPECT_EQ(r.headers.get("x-trace"), "Abc");  // names lowercased, values kept
  EXPECT_TRUE(manager_.requests[0].ended);
  EXPECT_TRUE(input_.empty());
  EXPECT_TRUE(codec_->streamActive());
  EXPECT_FALSE(codec_->readingHeaders());
}

TEST_F(Http1ServerCodecTest, EveryMethodLlhttpKnowsIsPassedOn) {
  for (std::string method : {"POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}) {
    feed(method + " /a HTTP/1.1\r\nHost: edge\r\n\r\n");
    ASSERT_EQ(manager_.requests.size(), 1u) << method;
    EXPECT_EQ(manager_.request(0).method, method);
    respond(204);
    manager_.requests.clear();
  }
  EXPECT_TRUE(manager_.errors.empty());
}

TEST_F(Http1ServerCodecTest, RequestReadByteByByteIsTheSame) {
  feedByteByByte("POST /v1/chat HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\n\r\nhello");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(manager_.request(0).method, "POST");
  EXPECT_EQ(manager_.request(0).content_length, 5u);
  EXPECT_EQ(manager_.requests[0].body, "hello");
  EXPECT_TRUE(manager_.requests[0].ended);
  EXPECT_TRUE(manager_.errors.empty());
}

TEST_F(Http1ServerCodecTest, ReadingHeadersWhileTheHeadIsIncomplete) {
  EXPECT_FALSE(codec_->readingHeaders());
  feed("GET / HTTP/1.1\r\nHo");
  EXPECT_TRUE(codec_->readingHeaders());
  EXPECT_FALSE(codec_->streamActive());
  feed("st: edge\r\n\r\n");
  EXPECT_FALSE(codec_->readingHeaders());
  EXPECT_EQ(manager_.requests.size(), 1u);
}

TEST_F(Http1ServerCodecTest, DuplicateHeadersAreKeptInOrder) {
  feed("GET / HTTP/1.1\r\nHost: edge\r\nAccept: a\r\naccept: b\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  const HeaderMap& h = manager_.request(0).headers;
  EXPECT_EQ(h.count("accept"), 2u);
  EXPECT_EQ(h.get("accept"), "a");
}

TEST_F(Http1ServerCodecTest, HeaderNameWithUnderscoreIsDropped) {
  feed("GET / HTTP/1.1\r\nHost: edge\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_FALSE(manager_.request(0).headers.get("x_forwarded_for").has_value());
  EXPECT_EQ(manager_.request(0).headers.size(), 1u);
}

TEST_F(Http1ServerCodecTest, SpaceBeforeColonIsRefused) {
  feed("GET / HTTP/1.1\r\nHost : edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
  EXPECT_EQ(written().substr(0, 24), "HTTP/1.1 400 Bad Request");
}

// llhttp 8 takes an obs-fold as part of the value and leaves out the CRLF:
// the value goes on as one line, which RFC 9112 5.2 allows in place of a
// 400 (replacing each obs-fold with SP). No CR or LF reaches the stream.
TEST_F(Http1ServerCodecTest, ObsoleteLineFoldingIsJoinedIntoOneLine) {
  feed("GET / HTTP/1.1\r\nHost: edge\r\nX-A: one\r\n two\r\n\r\n");
  EXPECT_TRUE(manager_.errors.empty());
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(manager_.request(0).headers.get("x-a"), "one two");
  EXPECT_EQ(manager_.request(0).headers.size(), 2u);
}

TEST_F(Http1ServerCodecTest, BareLfInTheRequestLineIsRefused) {
  feed("GET / HTTP/1.1\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_line_ending");
  EXPECT_EQ(errorStatus(), 400);
}

TEST_F(Http1ServerCodecTest, BareLfEndingTheHeadIsRefused) {
  feed("GET / HTTP/1.1\r\nHost: edge\r\n\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_line_ending");
}

TEST_F(Http1ServerCodecTest, BareLfIsRefusedWhenItArrivesInItsOwnRead) {
  feed("GET / HTTP/1.1\r\nHost: edge");
  feed("\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_line_ending");
}

TEST_F(Http1ServerCodecTest, CrLfSplitAcrossReadsIsAccepted) {
  feed("GET / HTTP/1.1\r");
  feed("\nHost: edge\r");
  feed("\n\r");
  feed("\n");
  EXPECT_TRUE(manager_.errors.empty());
  EXPECT_EQ(manager_.requests.size(), 1u);
}

TEST_F(Http1ServerCodecTest, EmptyLinesBeforeTheRequestLineAreSkipped) {
  feed("\r\n\r\nGET / HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.errors.empty());
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(manager_.request(0).path, "/");
}

TEST_F(Http1ServerCodecTest, BareLfAfterEmptyLinesIsRefused) {
  feed("\r\n\r\nGET / HTTP/1.1\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_line_ending");
}

TEST_F(Http1ServerCodecTest, Http11WithoutHostIsRefused) {
  feed("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_host");
}

TEST_F(Http1ServerCodecTest, TwoHostHeadersAreRefused) {
  feed("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_EQ(errorCode(), "bad_host");
  EXPECT_EQ(manager_.errors[0].message, "more than one Host header");
}

TEST_F(Http1ServerCodecTest, ConnectAndTraceAreRefused) {
  feed("CONNECT upstream:443 HTTP/1.1\r\nHost: upstream:443\r\n\r\n");
  EXPECT_EQ(errorStatus(), 405);
  EXPECT_EQ(errorCode(), "method_not_allowed");

  Manager other;
  Http1ServerCodec codec(loop_.connection(), other, CodecLimits{});
  Buffer in;
  in.add("TRACE / HTTP/1.1\r\nHost: edge\r\n\r\n");
  codec.dispatch(in);
  ASSERT_EQ(other.errors.size(), 1u);
  EXPECT_EQ(other.errors[0].status, 405);
}

TEST_F(Http1ServerCodecTest, UnknownMethodIsRefused) {
  feed("BREW /pot HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_request");
}

TEST_F(Http1ServerCodecTest, AbsoluteFormTargetIsRefused) {
  feed("GET http://edge/v1/models HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorCode(), "bad_request_target");
}

TEST_F(Http1ServerCodecTest, OptionsAsteriskIsAccepted) {
  feed("OPTIONS * HTTP/1.1\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.errors.empty());
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(manager_.request(0).path, "*");
}

TEST_F(Http1ServerCodecTest, HttpVersionOtherThanOneIsRefused) {
  feed("GET / HTTP/2.0\r\nHost: edge\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  ASSERT_EQ(manager_.errors.size(), 1u);
  EXPECT_GE(manager_.errors[0].status, 400);
}

// --- Request smuggling: framing the codec must not guess at ------------

TEST_F(Http1ServerCodecTest, ContentLengthWithTransferEncodingIsRefused) {
  feed(
      "POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
      "0\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
}

TEST_F(Http1ServerCodecTest, TransferEncodingBeforeContentLengthIsRefused) {
  feed(
      "POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n"
      "0\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
}

TEST_F(Http1ServerCodecTest, TwoContentLengthsAreRefused) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
}

TEST_F(Http1ServerCodecTest, ContentLengthThatIsNotANumberIsRefused) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 3x\r\n\r\nabc");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
}

TEST_F(Http1ServerCodecTest, TransferEncodingNotEndingInChunkedIsRefused) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 400);
}

// --- Bodies -------------------------------------------------------------

TEST_F(Http1ServerCodecTest, ChunkedBodyWithExtensionsAndTrailersIsDelivered) {
  feed(
      "POST /v1/chat HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;name=value\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_TRUE(manager_.request(0).chunked);
  EXPECT_FALSE(manager_.request(0).headers.get("x-checksum").has_value());  // trailers dropped
  EXPECT_EQ(manager_.requests[0].body, "hello world");
  EXPECT_TRUE(manager_.requests[0].ended);
  EXPECT_TRUE(manager_.errors.empty());
  EXPECT_FALSE(codec_->readingBody());
  EXPECT_TRUE(codec_->streamActive());
}

TEST_F(Http1ServerCodecTest, BodyArrivesInPiecesWithEndStreamLast) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 6\r\n\r\nab");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_FALSE(manager_.requests[0].ended);
  EXPECT_TRUE(codec_->readingBody());
  feed("cd");
  EXPECT_FALSE(manager_.requests[0].ended);
  feed("ef");
  EXPECT_EQ(manager_.requests[0].body, "abcdef");
  EXPECT_TRUE(manager_.requests[0].ended);
  EXPECT_FALSE(codec_->readingBody());
}

TEST_F(Http1ServerCodecTest, BadChunkSizeIsRefused) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);  // the head was fine
  EXPECT_EQ(errorCode(), "bad_request");
  EXPECT_FALSE(manager_.requests[0].ended);
}

TEST_F(Http1ServerCodecTest, ContentLengthOverTheBodyLimitIsRefusedAtTheHead) {
  CodecLimits limits;
  limits.max_body_bytes = 10;
  makeCodec(limits);
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 11\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 413);
  EXPECT_EQ(errorCode(), "body_too_large");
}

TEST_F(Http1ServerCodecTest, ChunkedBodyOverTheLimitIsRefusedMidBody) {
  CodecLimits limits;
  limits.max_body_bytes = 10;
  makeCodec(limits);
  feed("POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n12345678\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_TRUE(manager_.errors.empty());
  feed("8\r\n12345678\r\n");
  EXPECT_EQ(errorStatus(), 413);
  EXPECT_EQ(manager_.requests[0].body, "12345678");
  EXPECT_EQ(written().substr(0, 12), "HTTP/1.1 413");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
}

TEST_F(Http1ServerCodecTest, HeaderBytesOverTheLimitAre431) {
  CodecLimits limits;
  limits.max_header_bytes = 64;
  makeCodec(limits);
  feed("GET / HTTP/1.1\r\nHost: edge\r\nX-Big: " + std::string(64, 'a') + "\r\n\r\n");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 431);
  EXPECT_EQ(errorCode(), "header_too_large");
}

TEST_F(Http1ServerCodecTest, HeaderCountOverTheLimitIs431) {
  CodecLimits limits;
  limits.max_headers = 3;
  makeCodec(limits);
  feed("GET / HTTP/1.1\r\nHost: edge\r\nA: 1\r\nB: 2\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);  // three is allowed
  respond(200);
  feed("GET / HTTP/1.1\r\nHost: edge\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
  EXPECT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(errorCode(), "too_many_headers");
}

TEST_F(Http1ServerCodecTest, TrailersCountWithTheHeadAgainstTheLimit) {
  CodecLimits limits;
  limits.max_headers = 2;
  makeCodec(limits);
  feed(
      "POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\na\r\n0\r\nX-T: 1\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(errorCode(), "too_many_headers");
}

TEST_F(Http1ServerCodecTest, TrailerNameMustBeAToken) {
  feed(
      "POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n"
      "1\r\na\r\n0\r\nX(T): 1\r\n\r\n");
  EXPECT_EQ(errorStatus(), 400);
  EXPECT_FALSE(manager_.requests[0].ended);
}

// --- Expect: 100-continue ----------------------------------------------

TEST_F(Http1ServerCodecTest, ExpectContinueIsFlaggedAndAnsweredOnce) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_TRUE(manager_.request(0).expect_continue);
  EXPECT_FALSE(manager_.request(0).headers.get("expect").has_value());
  manager_.encoder().encode100Continue();
  manager_.encoder().encode100Continue();
  EXPECT_EQ(written(), "HTTP/1.1 100 Continue\r\n\r\n");
  EXPECT_FALSE(manager_.encoder().headersSent());
  feed("ok");
  EXPECT_EQ(manager_.requests[0].body, "ok");
}

TEST_F(Http1ServerCodecTest, UnknownExpectationIs417) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 2\r\nExpect: teapot\r\n\r\nok");
  EXPECT_TRUE(manager_.requests.empty());
  EXPECT_EQ(errorStatus(), 417);
}

// --- Keep-alive and close ----------------------------------------------

TEST_F(Http1ServerCodecTest, KeepAliveResponseGoesOnWithTheNextRequest) {
  feed(kGet);
  respond(200, "hi");
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi");
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
  EXPECT_FALSE(codec_->streamActive());
  feed(kGet);
  EXPECT_EQ(manager_.requests.size(), 2u);
}

TEST_F(Http1ServerCodecTest, ConnectionCloseRequestGetsAClosingResponse) {
  feed("GET / HTTP/1.1\r\nHost: edge\r\nConnection: close\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_FALSE(manager_.request(0).keep_alive);
  respond(200, "hi");
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  feed(kGet);  // nothing more is parsed
  EXPECT_EQ(manager_.requests.size(), 1u);
}

TEST_F(Http1ServerCodecTest, SetCloseAfterResponseClosesAKeepAliveConnection) {
  feed(kGet);
  codec_->setCloseAfterResponse();
  respond(200);
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
}

TEST_F(Http1ServerCodecTest, Http10ClosesByDefault) {
  feed("GET / HTTP/1.0\r\n\r\n");  // no Host needed
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(manager_.request(0).version_minor, 0);
  EXPECT_FALSE(manager_.request(0).keep_alive);
  respond(200, "hi");
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
}

TEST_F(Http1ServerCodecTest, Http10KeepAliveIsAnsweredInKind) {
  feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_TRUE(manager_.request(0).keep_alive);
  respond(200, "hi");
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nhi");
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
}

TEST_F(Http1ServerCodecTest, CodecErrorClosesTheConnection) {
  feed("GET / HTTP/1.1\r\nHost edge\r\n\r\n" + std::string(kGet));
  EXPECT_EQ(errorStatus(), 400);
  EXPECT_TRUE(input_.empty());  // the rest is thrown away
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  EXPECT_EQ(written(),
            "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  feed(kGet);
  EXPECT_TRUE(manager_.requests.empty());
}

// --- Pipelining -----------------------------------------------------------

TEST_F(Http1ServerCodecTest, PipelinedRequestWaitsForTheResponse) {
  feed(std::string(kGet) + "GET /second HTTP/1.1\r\nHost: edge\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_FALSE(input_.empty());  // the second request waits in the input
  resume();
  EXPECT_EQ(manager_.requests.size(), 1u);
  respond(200);
  resume();
  ASSERT_EQ(manager_.requests.size(), 2u);
  EXPECT_EQ(manager_.request(1).path, "/second");
  EXPECT_TRUE(input_.empty());
}

TEST_F(Http1ServerCodecTest, RequestAnsweredInsideDispatchLetsTheNextOneThrough) {
  manager_.on_headers = [this] { respond(401); };
  feed(std::string(kGet) + std::string(kGet));
  EXPECT_EQ(manager_.requests.size(), 2u);
  EXPECT_EQ(manager_.completions, std::vector<bool>({true, true}));
  EXPECT_TRUE(input_.empty());
}

TEST_F(Http1ServerCodecTest, RequestAnsweredInsideDispatchWaitsWhileInputPaused) {
  manager_.on_headers = [this] {
    respond(401);
    manager_.paused = true;  // the client has not taken the answer yet
  };
  feed(std::string(kGet) + std::string(kGet));
  EXPECT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(input_.length(), kGet.size());
  manager_.paused = false;
  resume();
  EXPECT_EQ(manager_.requests.size(), 2u);
  EXPECT_TRUE(input_.empty());
}

TEST_F(Http1ServerCodecTest, PipelinedBareLfIsRefusedOnceItsTurnComes) {
  feed(std::string(kGet) + "GET / HTTP/1.1\nHost: edge\r\n\r\n");
  ASSERT_EQ(manager_.requests.size(), 1u);
  EXPECT_TRUE(manager_.errors.empty());
  respond(200);
  resume();
  EXPECT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(errorCode(), "bad_line_ending");
}

// --- An early answer while the body still arrives -------------------------

TEST_F(Http1ServerCodecTest, EarlyAnswerDiscardsTheRestOfTheBody) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 10\r\n\r\nabc");
  ASSERT_EQ(manager_.requests.size(), 1u);
  respond(401);
  EXPECT_EQ(written(), "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n");
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
  EXPECT_TRUE(codec_->discardingBody());
  EXPECT_FALSE(codec_->readingBody());
  EXPECT_FALSE(codec_->streamActive());
  feed("defghij");
  EXPECT_EQ(manager_.requests[0].body, "abc");  // the rest went nowhere
  EXPECT_FALSE(codec_->discardingBody());
  feed(kGet);
  EXPECT_EQ(manager_.requests.size(), 2u);
}

TEST_F(Http1ServerCodecTest, EarlyAnswerToAChunkedBodyCloses) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
  respond(401);
  EXPECT_EQ(written(),
            "HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  EXPECT_FALSE(codec_->discardingBody());
}

TEST_F(Http1ServerCodecTest, EarlyAnswerWithTooMuchBodyLeftCloses) {
  uint64_t length = Http1ServerCodec::kMaxDiscardBytes + 1;
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: " + std::to_string(length) + "\r\n\r\n");
  respond(429);
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  EXPECT_NE(written().find("connection: close\r\n"), std::string::npos);
}

TEST_F(Http1ServerCodecTest, EarlyAnswerToAClientAwaiting100ContinueCloses) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  respond(401);
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  EXPECT_NE(written().find("connection: close\r\n"), std::string::npos);
}

TEST_F(Http1ServerCodecTest, EarlyAnswerAfter100ContinueKeepsTheConnection) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
  manager_.encoder().encode100Continue();
  feed("ab");
  respond(401);
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
  EXPECT_TRUE(codec_->discardingBody());
  feed(std::string("cde") + std::string(kGet));
  EXPECT_EQ(manager_.requests.size(), 2u);
}

TEST_F(Http1ServerCodecTest, BareLfIsRefusedAfterADiscardedBody) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\n\r\nab");
  respond(401);
  ASSERT_TRUE(codec_->discardingBody());
  // The end of the body and, in the same read, a request with a bare LF.
  feed("cdGET / HTTP/1.1\nHost: edge\r\n\r\n");
  resume();
  EXPECT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(errorCode(), "bad_line_ending");
}

TEST_F(Http1ServerCodecTest, DiscardedBodyThenNextRequestWaitsForInputPaused) {
  // A 401 from inside decodeHeaders that the client does not take at once
  // (the manager's write buffer is above its watermark); the rest of the
  // body and the next request came in the same read.
  manager_.on_headers = [this] {
    respond(401);
    manager_.paused = true;
  };
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\n\r\nabcd" + std::string(kGet));
  EXPECT_EQ(manager_.requests.size(), 1u);
  EXPECT_EQ(input_.length(), kGet.size());
  EXPECT_FALSE(codec_->discardingBody());
  manager_.paused = false;
  resume();
  EXPECT_EQ(manager_.requests.size(), 2u);
  EXPECT_TRUE(input_.empty());
}

TEST_F(Http1ServerCodecTest, DiscardedBodyInLaterReadsThenNextRequestWaitsForInputPaused) {
  feed("POST / HTTP/1.1\r\nHost: edge\r\nContent-Length: 4\r\n\r\nab");
  respond(401);
  ASSERT_TRUE(codec_->discardingBody());
  manager_.on_headers = [this] {
    respond(200);
    manager_.paused = true;
  };
  feed("cd" + std::string(kGet) + std::string(kGet));
  EXPECT_EQ(manager_.requests.size(), 2u);
  EXPECT_EQ(input_.length(), kGet.size());
}

// --- Encoding responses -------------------------------------------------

TEST_F(Http1ServerCodecTest, ResponseWithoutALengthIsChunked) {
  feed(kGet);
  ResponseHeaders h;
  h.status = 200;
  h.headers.add("content-type", "text/event-stream");
  manager_.encoder().encodeHeaders(h, false);
  EXPECT_TRUE(manager_.encoder().headersSent());
  Buffer b;
  b.add(std::string(26, 'x'));
  manager_.encoder().encodeData(b, false);
  EXPECT_TRUE(b.empty());
  b.add("end");
  manager_.encoder().encodeData(b, true);
  EXPECT_EQ(written(),
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
            "\r\n1a\r\n" +
                std::string(26, 'x') + "\r\n3\r\nend\r\n0\r\n\r\n");
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
}

TEST_F(Http1ServerCodecTest, EmptyLastChunkOnlyEndsTheBody) {
  feed(kGet);
  ResponseHeaders h;
  manager_.encoder().encodeHeaders(h, false);
  Buffer b;
  manager_.encoder().encodeData(b, true);
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n");
}

TEST_F(Http1ServerCodecTest, HeadResponseKeepsItsHeadersAndDropsTheBody) {
  feed("HEAD / HTTP/1.1\r\nHost: edge\r\n\r\n");
  ResponseHeaders h;
  h.headers.add("content-length", "5");
  manager_.encoder().encodeHeaders(h, false);
  Buffer b;
  b.add("hello");
  manager_.encoder().encodeData(b, true);
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
  EXPECT_EQ(manager_.completions, std::vector<bool>({true}));
}

TEST_F(Http1ServerCodecTest, HeadResponseWithoutALengthIsNotChunked) {
  feed("HEAD / HTTP/1.1\r\nHost: edge\r\n\r\n");
  ResponseHeaders h;
  manager_.encoder().encodeHeaders(h, true);
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\n\r\n");
}

TEST_F(Http1ServerCodecTest, NoContentAndNotModifiedHaveNoBodyFraming) {
  for (int status : {204, 304}) {
    feed(kGet);
    ResponseHeaders h;
    h.status = status;
    manager_.encoder().encodeHeaders(h, false);
    Buffer empty;
    manager_.encoder().encodeData(empty, true);
    std::string out = written();
    EXPECT_EQ(out.find("transfer-encoding"), std::string::npos) << out;
    EXPECT_EQ(out.find("content-length"), std::string::npos) << out;
  }
  EXPECT_EQ(manager_.completions, std::vector<bool>({true, true}));
}

TEST_F(Http1ServerCodecTest, Http10ResponseWithoutALengthIsCloseDelimited) {
  feed("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ResponseHeaders h;
  manager_.encoder().encodeHeaders(h, false);
  Buffer b;
  b.add("stream");
  manager_.encoder().encodeData(b, true);
  EXPECT_EQ(written(), "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nstream");
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
}

TEST_F(Http1ServerCodecTest, UnknownStatusGetsItsNumberOnTheStatusLine) {
  feed(kGet);
  respond(599);
  EXPECT_EQ(written().substr(0, 13), "HTTP/1.1 599 ");
}

TEST_F(Http1ServerCodecTest, AbortEndsTheConnection) {
  feed(kGet);
  ResponseHeaders h;
  manager_.encoder().encodeHeaders(h, false);
  manager_.encoder().abort();
  EXPECT_EQ(manager_.completions, std::vector<bool>({false}));
  EXPECT_FALSE(codec_->streamActive());
  feed(kGet);
  EXPECT_EQ(manager_.requests.size(), 1u);
}

}  // namespace
}  // namespace eldric::http
