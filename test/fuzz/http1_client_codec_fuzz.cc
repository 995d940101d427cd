// The HTTP/1 client codec reading an upstream's answers: bytes cut where
// the input says, several responses on one keep-alive connection (a new
// response begins once one completes, as the connection pool reuses a
// connection), HEAD or not, and the connection's end (EOF) at the end.
//
// Input: [flags][cut count][cut lengths...][stream]

#include <cstdint>
#include <cstdlib>
#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/http/http1_client_codec.h"
#include "test/fuzz/fuzz_util.h"

namespace eldric::fuzz {
namespace {

class Upstream : public http::ClientCodecCallbacks {
 public:
  void onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) override {
    if (!headers) abort();  // a response always comes with its headers
    status_ = headers->status;
    (void)headers->headers.get("content-type");
    (void)headers->headers.get("content-length");
    http::removeHopByHop(headers->headers);
    ended_ = end_stream;
  }
  void onResponseData(Buffer& data, bool end_stream) override {
    body_ += data.length();
    if (data.length()) (void)data.toString();
    data.clear();
    if (end_stream) ended_ = true;
  }
  void onResponseError(const std::string& reason) override { errors_++; }

  int status_ = 0;
  uint64_t body_ = 0;
  size_t errors_ = 0;
  bool ended_ = false;
};

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  uint8_t flags = in.byte();
  std::string_view payload;
  std::vector<std::string_view> pieces = fuzz::splitStream(in, &payload);
  if (fuzz::skipKnownCrashes() && fuzz::llhttpSeesTrailers(payload, false)) return 0;

  fuzz::Upstream upstream;
  http::Http1ClientCodec codec(upstream);
  size_t responses = 0;
  codec.beginResponse(flags & 1);
  for (std::string_view piece : pieces) {
    Buffer b;
    b.add(piece);
    codec.dispatch(b);
    if (upstream.errors_) break;
    if (!b.empty()) abort();  // dispatch drains what it is given

    if (codec.complete()) {
      if (!codec.keepAlive()) break;
      // The pool hands the connection to the next request.
      ++responses;
      codec.beginResponse((flags >> (responses % 8)) & 1);
    }
  }
  if (!upstream.errors_ && (flags & 0x80)) codec.onEof();
  return 0;
}
