#pragma once

// The seam between a wire protocol and the connection manager. HTTP/1.1 is
// the one implementation today; an HTTP/2 server codec (ALPN "h2") plugs in
// behind the same interfaces and runs the same filter chains.

#include <cstdint>
#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/http/headers.h"

namespace eldric::http {

// Where a response is written. Implemented by the codec, per stream.
class ResponseEncoder {
 public:
  virtual ~ResponseEncoder() = default;
  virtual void encode100Continue() = 0;
  virtual void encodeHeaders(const ResponseHeaders& headers, bool end_stream) = 0;
  // Consumes `data`.
  virtual void encodeData(Buffer& data, bool end_stream) = 0;
  // The response cannot be completed: end the stream so the client sees it
  // was cut short (HTTP/1: close the connection without a final chunk).
  virtual void abort() = 0;
  // Whether the response headers went out.
  virtual bool headersSent() const = 0;
};

// Where a request is delivered. Implemented by the connection manager.
class RequestDecoder {
 public:
  virtual ~RequestDecoder() = default;
  virtual void decodeHeaders(RequestHeadersPtr headers, bool end_stream) = 0;
  // Consumes `data`.
  virtual void decodeData(Buffer& data, bool end_stream) = 0;
};

// A request the codec refused before a stream existed, or mid-body.
struct CodecError {
  int status = 400;
  std::string message;
  std::string code;
};

class ServerCodecCallbacks {
 public:
  virtual ~ServerCodecCallbacks() = default;
  virtual RequestDecoder& newStream(ResponseEncoder& encoder) = 0;
  // A protocol error: the manager answers with `error` (if no response
  // started) and closes the connection.
  virtual void onCodecError(const CodecError& error, ResponseEncoder& encoder) = 0;
  // The response of the current stream finished; the codec may go on.
  virtual void onResponseComplete(bool keep_alive) = 0;
  // True while the next pipelined request must wait (the client has not
  // taken the last answer): dispatch() stops before parsing it, also when
  // that answer was made synchronously inside the same dispatch().
  virtual bool inputPaused() const { return false; }
  // The most body `request` may have: `default_limit` (limits.max_body_kb)
  // unless its route allows more (a tunnelled worker's answer).
  virtual uint64_t maxBodyBytes(const RequestHeaders& request, uint64_t default_limit) {
    (void)request;
    return default_limit;
  }
};

struct CodecLimits {
  uint32_t max_header_bytes = 32 * 1024;
  uint32_t max_headers = 100;
  uint64_t max_body_bytes = 10 * 1024 * 1024;
};

class ServerCodec {
 public:
  virtual ~ServerCodec() = default;
  // Parses as much of `data` as the current state allows and drains what
  // it consumed. Bytes of a pipelined request that must wait for the
  // current response stay in `data`.
  virtual void dispatch(Buffer& data) = 0;
  // True while a request has begun (first byte seen) but its headers are
  // incomplete: the header timeout runs.
  virtual bool readingHeaders() const = 0;
  // True while a request body is being read (not one thrown away after an
  // early answer): the body timeout runs.
  virtual bool readingBody() const { return false; }
  // True while a request is in progress (headers seen, response not done).
  virtual bool streamActive() const = 0;
  // True while the rest of a request body is read and thrown away after
  // the response was sent early (a 401 or 429 before the body was read):
  // the header timeout runs, and on expiry the connection is closed.
  virtual bool discardingBody() const { return false; }
  // Response serialisation asks for "connection: close" on the next response.
  virtual void setCloseAfterResponse() = 0;
};

}  // namespace eldric::http
