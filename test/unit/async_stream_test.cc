// http::AsyncStream: a route's handler run for a request the Edge makes
// itself, its answer to callbacks instead of a connection (what the tools
// filter asks the router with, round after round).

#include "dataplane/http/async_stream.h"

#include <gtest/gtest.h>

#include <string>

#include "test/unit/fake_stream.h"

namespace eldric::http {
namespace {

// A terminal handler: answers with what the request's body said, at once
// or when told to, or fails as the router does.
class EchoHandler : public StreamDecoderFilter {
 public:
  enum class How { Answer, Later, LocalReply, ResetAfterHeaders };
  explicit EchoHandler(How how, bool* destroyed) : how_(how), destroyed_(destroyed) {}
  void setDecoderFilterCallbacks(DecoderFilterCallbacks& cb) override { cb_ = &cb; }
  FilterHeadersStatus decodeHeaders(RequestHeaders& headers, bool end_stream) override {
    path_ = headers.path;
    if (!end_stream) return FilterHeadersStatus::Continue;  // the body follows
    finish();
    return FilterHeadersStatus::StopIteration;
  }
  FilterDataStatus decodeData(Buffer& data, bool end_stream) override {
    if (!end_stream) return FilterDataStatus::StopIterationAndBuffer;
    body_ = data.toString();
    data.clear();
    finish();
    return FilterDataStatus::StopIterationNoBuffer;
  }
  void onDestroy() override { *destroyed_ = true; }
  void answer() {
    auto h = std::make_unique<ResponseHeaders>();
    h->status = 200;
    h->headers.add("content-type", "application/json");
    cb_->encodeHeaders(std::move(h), false);
    Buffer b;
    b.add("{\"echo\":\"" + body_ + "\",\"path\":\"" + path_ + "\"}");
    cb_->encodeData(b, true);
  }
  DecoderFilterCallbacks* cb_ = nullptr;

 private:
  void finish() {
    cb_->streamInfo().upstream_host = "http://router:1";
    switch (how_) {
      case How::Answer:
        answer();
        return;
      case How::Later:
        return;
      case How::LocalReply:
        cb_->sendLocalReply(ErrorReply{503, "no upstream", "server_error", "no_upstream"});
        return;
      case How::ResetAfterHeaders: {
        auto h = std::make_unique<ResponseHeaders>();
        cb_->encodeHeaders(std::move(h), false);
        cb_->resetStream("upstream_reset");
        return;
      }
    }
  }
  How how_;
  bool* destroyed_;
  std::string path_, body_;
};

struct Recorder : AsyncStreamCallbacks {
  int status = 0;
  std::string body;
  bool ended = false;
  std::string reset;
  int calls = 0;
  void onAsyncHeaders(ResponseHeaders& headers, bool end_stream) override {
    ++calls;
    status = headers.status;
    ended = end_stream;
  }
  void onAsyncData(Buffer& data, bool end_stream) override {
    ++calls;
    body += data.toString();
    data.clear();
    ended = end_stream;
  }
  void onAsyncReset(std::string_view reason) override {
    ++calls;
    reset = std::string(reason);
  }
};

class AsyncStreamTest : public ::testing::Test {
 protected:
  AsyncStreamTest() {
    parent.info.request_id = "req-1";
    parent.info.client_name = "alice";
    parent.info.upstream_host = "parent's own";
  }
  void start(EchoHandler::How how, std::string_view body) {
    stream = std::make_unique<AsyncStream>(static_cast<DecoderFilterCallbacks&>(parent),
                                           parent.worker_locals, recorder);
    FilterFactory factory = [this, how](FilterChainBuilder& chain) {
      auto h = std::make_unique<EchoHandler>(how, &handler_destroyed);
      handler = h.get();
      chain.addDecoderFilter(std::move(h));
    };
    RequestHeaders req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    req.headers.add("content-length", "999");
    req.headers.add("expect", "100-continue");
    req.headers.add("transfer-encoding", "chunked");
    req.chunked = true;
    Buffer b;
    b.add(body);
    stream->start(factory, req, b);
  }
  test::FakeStream parent;
  Recorder recorder;
  std::unique_ptr<AsyncStream> stream;
  EchoHandler* handler = nullptr;
  bool handler_destroyed = false;
};

TEST_F(AsyncStreamTest, TheHandlerAnswersToTheCallbacks) {
  start(EchoHandler::How::Answer, "round-1");
  EXPECT_EQ(recorder.status, 200);
  EXPECT_EQ(recorder.body, R"({"echo":"round-1","path":"/v1/chat/completions"})");
  EXPECT_TRUE(recorder.ended);
  EXPECT_TRUE(stream->done());
  // The request as the handler got it: its own content-length.
  EXPECT_EQ(stream->requestHeaders().headers.get("content-length").value_or(""), "7");
  EXPECT_FALSE(stream->requestHeaders().headers.get("expect"));
  EXPECT_FALSE(stream->requestHeaders().headers.get("transfer-encoding"));
  EXPECT_FALSE(stream->requestHeaders().chunked);
  // Its facts are its own; the client's stream's were copied, not shared.
  EXPECT_EQ(stream->streamInfo().upstream_host, "http://router:1");
  EXPECT_EQ(stream->streamInfo().client_name, "alice");
  EXPECT_EQ(stream->streamInfo().request_id, "req-1");
  EXPECT_EQ(parent.info.upstream_host, "parent's own");
  // Nothing reached the client's stream.
  EXPECT_EQ(parent.responseStatus(), 0);
  stream.reset();
  EXPECT_TRUE(handler_destroyed);
}

TEST_F(AsyncStreamTest, ALocalReplyIsAnAnswerToo) {
  start(EchoHandler::How::LocalReply, "x");
  EXPECT_EQ(recorder.status, 503);
  EXPECT_NE(recorder.body.find("\"code\":\"no_upstream\""), std::string::npos) << recorder.body;
  EXPECT_TRUE(recorder.ended);
}

TEST_F(AsyncStreamTest, AResetAfterTheHeadIsReported) {
  start(EchoHandler::How::ResetAfterHeaders, "x");
  EXPECT_EQ(recorder.status, 200);
  EXPECT_EQ(recorder.reset, "upstream_reset");
  EXPECT_TRUE(handler_destroyed);
}

TEST_F(AsyncStreamTest, NothingComesAfterReset) {
  start(EchoHandler::How::Later, "x");
  EXPECT_EQ(recorder.calls, 0);
  EchoHandler* h = handler;
  DecoderFilterCallbacks* cb = h->cb_;
  stream->reset();
  EXPECT_TRUE(handler_destroyed);
  EXPECT_TRUE(stream->done());
  // A late answer from a handler that ignored its destruction goes nowhere.
  auto headers = std::make_unique<ResponseHeaders>();
  cb->encodeHeaders(std::move(headers), true);
  EXPECT_EQ(recorder.calls, 0);
}

TEST_F(AsyncStreamTest, WatermarksReachTheHandler) {
  struct Watcher : DownstreamWatermarkCallbacks {
    int above = 0, below = 0;
    void onAboveWriteBufferHighWatermark() override { ++above; }
    void onBelowWriteBufferLowWatermark() override { ++below; }
  } watcher;
  start(EchoHandler::How::Later, "x");
  handler->cb_->addDownstreamWatermarkCallbacks(watcher);
  stream->onAboveWriteBufferHighWatermark();
  stream->onBelowWriteBufferLowWatermark();
  EXPECT_EQ(watcher.above, 1);
  EXPECT_EQ(watcher.below, 1);
  handler->answer();
  EXPECT_TRUE(recorder.ended);
}

}  // namespace
}  // namespace eldric::http
