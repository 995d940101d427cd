#include "dataplane/http/async_stream.h"

#include <utility>

namespace eldric::http {

AsyncStream::AsyncStream(StreamFilterCallbacks& parent, const FilterState& worker_locals,
                         AsyncStreamCallbacks& callbacks)
    : parent_(parent),
      worker_locals_(worker_locals),
      callbacks_(callbacks),
      info_(parent.streamInfo()) {
  info_.status = 0;
  info_.upstream_headers_ns = 0;
  info_.first_byte_sent_ns = 0;
  info_.response_body_bytes = 0;
  info_.upstream_host.clear();
  info_.error_code.clear();
  info_.attempts = 0;
  info_.prompt_tokens = info_.completion_tokens = 0;
}

AsyncStream::~AsyncStream() {
  done_ = true;
  destroyFilters();
  releaseFilters();
}

void AsyncStream::start(const FilterFactory& handler, RequestHeaders headers, Buffer& body) {
  request_ = std::move(headers);
  bool has_body = body.length() > 0;
  request_.chunked = false;
  request_.expect_continue = false;
  // The whole body is here: nothing for an upstream to wait for, and a
  // client's own framing headers do not describe this body.
  request_.headers.removeAll({"expect", "transfer-encoding"});
  request_.content_length = body.length();
  request_.headers.set("content-length", std::to_string(body.length()));
  handler(*this);
  runDecodeHeaders(!has_body);
  if (has_body && !filtersDestroyed()) runDecodeData(body, true);
}

void AsyncStream::reset() {
  if (done_) return;
  done_ = true;
  destroyFilters();
}

void AsyncStream::writeHeaders(ResponseHeaders& headers, bool end_stream) {
  if (done_) return;
  if (end_stream) done_ = true;
  callbacks_.onAsyncHeaders(headers, end_stream);
}

void AsyncStream::writeData(Buffer& data, bool end_stream) {
  if (done_) {
    data.clear();
    return;
  }
  if (end_stream) done_ = true;
  callbacks_.onAsyncData(data, end_stream);
}

void AsyncStream::abortResponse() {
  if (done_) return;
  done_ = true;
  callbacks_.onAsyncReset(streamInfo().error_code);
}

}  // namespace eldric::http
