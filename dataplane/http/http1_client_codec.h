#pragma once

// HTTP/1.1 client side on llhttp: parses an upstream's responses, one per
// request, on a keep-alive connection. Body bytes are passed on by
// reference to the slab they were read into.

#include <llhttp.h>

#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/http/headers.h"

namespace eldric::http {

class ClientCodecCallbacks {
 public:
  virtual ~ClientCodecCallbacks() = default;
  virtual void onResponseHeaders(ResponseHeadersPtr headers, bool end_stream) = 0;
  // Consumes `data`.
  virtual void onResponseData(Buffer& data, bool end_stream) = 0;
  virtual void onResponseError(const std::string& reason) = 0;
};

class Http1ClientCodec {
 public:
  explicit Http1ClientCodec(ClientCodecCallbacks& callbacks);
  // Resets the parser for the response to a new request.
  void beginResponse(bool request_is_head);
  // Parses `data` (and drains it).
  void dispatch(Buffer& data);
  // The connection reached EOF: completes a close-delimited body, or
  // reports a truncated response. Returns true if the response completed.
  bool onEof();
  bool responseStarted() const { return started_; }
  bool complete() const { return complete_; }
  // Whether the connection can carry another request after this response.
  bool keepAlive() const { return keep_alive_; }

  // Serialises a request line and headers (HTTP/1.1) into `out`.
  static void encodeRequestHead(const RequestHeaders& headers, Buffer& out);

 private:
  static const llhttp_settings_t& settings();
  static int onMessageBegin(llhttp_t* p);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);
  void finishHeader();
  // Stops the parser with `reason` (a static string) as the error.
  int refuse(const char* reason);

  ClientCodecCallbacks& callbacks_;
  llhttp_t parser_;
  ResponseHeadersPtr headers_;
  std::string field_;
  std::string value_;
  bool in_value_ = false;
  uint32_t header_bytes_ = 0;
  uint32_t trailer_count_ = 0;
  bool in_trailer_name_ = false;
  const char* refusal_ = nullptr;
  bool request_is_head_ = false;
  bool started_ = false;
  bool headers_done_ = false;
  bool complete_ = false;
  bool keep_alive_ = true;
  bool error_ = false;
  const Slice* current_slice_ = nullptr;
};

}  // namespace eldric::http
