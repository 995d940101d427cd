// The HTTP/1 server codec as the connection manager drives it: a client's
// byte stream arrives in pieces cut where the input says, requests are
// pipelined, and each request the codec delivers is answered (in one of
// several ways the input picks: at once from inside the codec's callback
// as a filter's 401 would be, after the body, chunked, with a 100
// Continue first, or aborted) so that the next pipelined request goes on.
// The codec writes to a real network::Connection over a loopback socket;
// what it writes is flushed and read away after every input.
//
// Input: [cut count][cut lengths...][answer modes: 8 bytes][stream]

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http1_server_codec.h"
#include "test/fuzz/fuzz_util.h"
#include "test/support/loopback.h"

namespace eldric::fuzz {
namespace {

// One accepted loopback connection for the whole run; what the codec
// writes is read away after every input.
test::Loopback& loopback() {
  static test::Loopback* l = new test::Loopback();
  return *l;
}

// The connection manager's part, reduced to answering.
class Manager : public http::ServerCodecCallbacks, public http::RequestDecoder {
 public:
  Manager(const uint8_t modes[8]) { memcpy(modes_, modes, sizeof modes_); }

  void attach(http::Http1ServerCodec* codec) { codec_ = codec; }

  // ServerCodecCallbacks
  http::RequestDecoder& newStream(http::ResponseEncoder& encoder) override {
    encoder_ = &encoder;
    mode_ = modes_[streams_++ % 8];
    answered_ = false;
    request_done_ = false;
    return *this;
  }
  void onCodecError(const http::CodecError& error, http::ResponseEncoder& encoder) override {
    ++errors_;
    if (encoder.headersSent()) {
      encoder.abort();
      return;
    }
    http::ResponseHeaders h;
    h.status = error.status;
    h.headers.add("content-type", "application/json");
    Buffer body;
    body.add("{\"error\":\"" + error.code + "\"}");
    h.headers.add("content-length", std::to_string(body.length()));
    encoder.encodeHeaders(h, false);
    encoder.encodeData(body, true);
  }
  void onResponseComplete(bool keep_alive) override {
    complete_ = true;
    keep_alive_ = keep_alive;
    if (!keep_alive) closed_ = true;
  }

  // RequestDecoder
  void decodeHeaders(http::RequestHeadersPtr headers, bool end_stream) override {
    if (!headers) abort();  // the codec hands over a request, never null
    method_ = headers->method;
    // Touch what a filter would read.
    for (const auto& name : {"host", "content-type", "authorization", "cookie"})
      (void)headers->headers.get(name);
    (void)headers->pathOnly();
    request_done_ = end_stream;
    // Modes 1 and 5 answer at once, from inside the codec's callback (an
    // auth filter's 401, a rate limiter's 429), body or not.
    if ((mode_ & 7) == 1) answer(false);
    if ((mode_ & 7) == 5) {
      encoder_->encode100Continue();
      if (end_stream) answer(true);
    }
  }
  void decodeData(Buffer& data, bool end_stream) override {
    body_bytes_ += data.length();
    data.clear();
    if (end_stream) {
      request_done_ = true;
      // Mode 3 answers from inside the last body callback.
      if ((mode_ & 7) == 3 && !answered_) answer(true);
    }
  }

  // Answers the current request once it is whole (the modes that wait).
  void answerPending() {
    if (!encoder_ || answered_ || !request_done_) return;
    answer(true);
  }

  // What the router or a built-in handler would write back.
  void answer(bool after_body) {
    answered_ = true;
    complete_ = false;
    http::ResponseEncoder& e = *encoder_;
    http::ResponseHeaders h;
    Buffer body;
    switch ((mode_ >> 3) % 6) {
      case 0:  // content-length
        h.status = 200;
        body.add("hello");
        h.headers.add("content-length", "5");
        e.encodeHeaders(h, false);
        e.encodeData(body, true);
        break;
      case 1:  // chunked: no length, several writes
        h.status = 200;
        h.headers.add("content-type", "text/event-stream");
        e.encodeHeaders(h, false);
        body.add("data: a\n\n");
        e.encodeData(body, false);
        body.add("data: [DONE]\n\n");
        e.encodeData(body, false);
        e.encodeData(body, true);
        break;
      case 2:  // headers only
        h.status = (mode_ & 0x80) ? 204 : 401;
        e.encodeHeaders(h, true);
        break;
      case 3:  // 304, no body
        h.status = 304;
        e.encodeHeaders(h, false);
        e.encodeData(body, true);
        break;
      case 4:  // cut short after the headers
        h.status = 200;
        e.encodeHeaders(h, false);
        if (e.headersSent()) e.abort();
        break;
      default:  // an odd status, a close
        h.status = (mode_ & 0x80) ? 999 : 101;
        h.headers.add("content-length", "0");
        codec_->setCloseAfterResponse();
        e.encodeHeaders(h, true);
        break;
    }
    (void)after_body;
  }

  bool closed() const { return closed_; }
  bool takeComplete() {
    bool c = complete_;
    complete_ = false;
    return c;
  }

 private:
  uint8_t modes_[8];
  http::Http1ServerCodec* codec_ = nullptr;
  http::ResponseEncoder* encoder_ = nullptr;
  uint8_t mode_ = 0;
  size_t streams_ = 0;
  size_t errors_ = 0;
  bool answered_ = false;
  bool request_done_ = false;
  bool complete_ = false;
  bool keep_alive_ = true;
  bool closed_ = false;
  std::string method_;
  uint64_t body_bytes_ = 0;
};

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  uint8_t limits_choice = in.byte();
  uint8_t modes[8];
  for (auto& m : modes) m = in.byte();
  std::string_view payload;
  std::vector<std::string_view> pieces = fuzz::splitStream(in, &payload);
  if (fuzz::skipKnownCrashes() && fuzz::llhttpSeesTrailers(payload, true)) return 0;

  test::Loopback& lb = fuzz::loopback();
  http::CodecLimits limits;
  if (limits_choice & 1) {
    // Small limits, so that the 431 and 413 paths are reached.
    limits.max_header_bytes = 64 + (limits_choice >> 1);
    limits.max_headers = 1 + (limits_choice >> 4);
    limits.max_body_bytes = limits_choice >> 2;
  }
  fuzz::Manager manager(modes);
  {
    http::Http1ServerCodec codec(lb.connection(), manager, limits);
    manager.attach(&codec);
    Buffer input;
    for (std::string_view piece : pieces) {
      if (manager.closed()) break;
      input.add(piece);  // a new slice per read, as a socket delivers them
      // The manager's loop: dispatch, answer what is whole, and go on
      // with the pipelined rest while the connection stays open.
      for (int rounds = 0; rounds < 10000 && !manager.closed(); ++rounds) {
        size_t before = input.length();
        codec.dispatch(input);
        manager.answerPending();
        bool completed = manager.takeComplete();
        if (input.empty() || (!completed && input.length() == before)) break;
      }
    }
  }
  (void)lb.takeWritten();
  return 0;
}
