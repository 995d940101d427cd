#pragma once

// HTTP/1.1 server side on llhttp, strict: no lenient flags, bare LF in the
// header section refused, limits on header bytes, header count and body
// size. Requests are handled one at a time: parsing pauses after each
// complete request until its response is done (pipelining).

#include <llhttp.h>

#include <string>

#include "dataplane/http/codec.h"
#include "dataplane/network/connection.h"

namespace eldric::http {

class Http1ServerCodec : public ServerCodec, public ResponseEncoder {
 public:
  Http1ServerCodec(network::Connection& connection, ServerCodecCallbacks& callbacks,
                   const CodecLimits& limits);

  // ServerCodec
  void dispatch(Buffer& data) override;
  bool readingHeaders() const override { return state_ == State::Headers; }
  bool streamActive() const override {
    return (state_ == State::Body && !discarding_) || state_ == State::AwaitResponse;
  }
  bool discardingBody() const override { return discarding_; }
  bool readingBody() const override { return state_ == State::Body && !discarding_; }
  // The most of a request body read and thrown away to keep a connection
  // after an early response; more, or an unknown length, closes it.
  static constexpr uint64_t kMaxDiscardBytes = 256 * 1024;
  void setCloseAfterResponse() override { close_after_response_ = true; }

  // ResponseEncoder
  void encode100Continue() override;
  void encodeHeaders(const ResponseHeaders& headers, bool end_stream) override;
  void encodeData(Buffer& data, bool end_stream) override;
  void abort() override;
  bool headersSent() const override { return response_started_; }

 private:
  enum class State { Idle, Headers, Body, AwaitResponse, Closed };

  static const llhttp_settings_t& settings();

  static int onMessageBegin(llhttp_t* p);
  static int onUrl(llhttp_t* p, const char* at, size_t len);
  static int onHeaderField(llhttp_t* p, const char* at, size_t len);
  static int onHeaderValue(llhttp_t* p, const char* at, size_t len);
  static int onHeadersComplete(llhttp_t* p);
  static int onBody(llhttp_t* p, const char* at, size_t len);
  static int onMessageComplete(llhttp_t* p);

  int fail(int status, std::string message, std::string code);
  int onTrailer(const char* at, size_t len, bool name);
  bool countHeaderBytes(size_t n);
  void finishHeader();
  // Returns false on a bare LF; stops scanning at the end of the headers.
  bool scanHeaderBytes(const char* p, size_t n);
  void completeResponse();

  network::Connection& connection_;
  ServerCodecCallbacks& callbacks_;
  CodecLimits limits_;
  llhttp_t parser_;
  State state_ = State::Idle;

  // The request being parsed.
  RequestHeadersPtr request_;
  std::string field_;
  std::string value_;
  bool in_value_ = false;
  uint32_t header_bytes_ = 0;
  uint32_t header_count_ = 0;  // head and trailers
  bool in_trailer_name_ = false;
  uint64_t body_bytes_ = 0;
  uint64_t body_limit_ = 0;  // this request's (maxBodyBytes)
  RequestDecoder* decoder_ = nullptr;
  bool request_has_body_ = false;
  bool request_is_head_ = false;
  bool request_keep_alive_ = true;
  bool request_http10_ = false;
  // For an early response: what is left of the body, whether the client
  // was waiting for a 100 Continue.
  bool request_length_known_ = false;
  uint64_t request_content_length_ = 0;
  bool request_expect_continue_ = false;
  bool discard_after_response_ = false;
  bool discarding_ = false;
  // Header-section scanner for bare LF.
  bool scanning_headers_ = true;
  uint8_t crlf_state_ = 0;
  bool prev_cr_ = false;
  bool seen_line_ = false;  // a non-empty line in this head

  // The slice being parsed, so that body bytes are passed on by reference.
  const Slice* current_slice_ = nullptr;
  CodecError pending_error_;
  bool has_error_ = false;

  // The response being written.
  bool response_started_ = false;
  bool response_chunked_ = false;
  bool response_close_delimited_ = false;
  bool close_after_response_ = false;
  bool sent_100_ = false;
};

}  // namespace eldric::http
