#include "dataplane/http/http1_server_codec.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>

namespace eldric::http {
namespace {

Http1ServerCodec* self(llhttp_t* p) { return static_cast<Http1ServerCodec*>(p->data); }

// llhttp 8 lets a space before the colon through; a proxy must refuse it
// (RFC 9112 5.1): every byte of a name is checked with isTokenChar.

void appendLower(std::string& out, const char* at, size_t len) {
  size_t base = out.size();
  out.append(at, len);
  for (size_t i = base; i < out.size(); ++i) {
    char c = out[i];
    if (c >= 'A' && c <= 'Z') out[i] = static_cast<char>(c + 32);
  }
}

}  // namespace

const llhttp_settings_t& Http1ServerCodec::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = &Http1ServerCodec::onMessageBegin;
    st.on_url = &Http1ServerCodec::onUrl;
    st.on_header_field = &Http1ServerCodec::onHeaderField;
    st.on_header_value = &Http1ServerCodec::onHeaderValue;
    st.on_headers_complete = &Http1ServerCodec::onHeadersComplete;
    st.on_body = &Http1ServerCodec::onBody;
    st.on_message_complete = &Http1ServerCodec::onMessageComplete;
    return st;
  }();
  return s;
}

Http1ServerCodec::Http1ServerCodec(network::Connection& connection, ServerCodecCallbacks& callbacks,
                                   const CodecLimits& limits)
    : connection_(connection), callbacks_(callbacks), limits_(limits) {
  llhttp_init(&parser_, HTTP_REQUEST, &settings());
  parser_.data = this;
}

int Http1ServerCodec::fail(int status, std::string message, std::string code) {
  if (!has_error_) {
    has_error_ = true;
    pending_error_ = CodecError{status, std::move(message), std::move(code)};
  }
  return -1;
}

bool Http1ServerCodec::countHeaderBytes(size_t n) {
  header_bytes_ += static_cast<uint32_t>(n);
  return header_bytes_ <= limits_.max_header_bytes;
}

int Http1ServerCodec::onMessageBegin(llhttp_t* p) {
  auto* c = self(p);
  c->request_ = std::make_unique<RequestHeaders>();
  c->field_.clear();
  c->value_.clear();
  c->in_value_ = false;
  c->header_bytes_ = 0;
  c->header_count_ = 0;
  c->in_trailer_name_ = false;
  c->body_bytes_ = 0;
  c->body_limit_ = c->limits_.max_body_bytes;
  c->state_ = State::Headers;
  // No answer to this request yet: a refusal of it (400, 431) must not
  // be taken for the middle of the previous request's answer.
  c->response_started_ = false;
  c->sent_100_ = false;
  return 0;
}

int Http1ServerCodec::onUrl(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  if (!c->countHeaderBytes(len)) {
    return c->fail(
        431,
        "request line and headers exceed " + std::to_string(c->limits_.max_header_bytes) + " bytes",
        "header_too_large");
  }
  c->request_->path.append(at, len);
  return 0;
}

void Http1ServerCodec::finishHeader() {
  // Copied into the map's arena; field_ and value_ keep their capacity
  // for the next header. A name with an underscore is dropped (nginx's
  // default): servers behind that map '_' and '-' to the same variable
  // would take "x_forwarded_for" for the X-Forwarded-For the Edge sets.
  if (!field_.empty() && field_.find('_') == std::string::npos)
    request_->headers.add(field_, value_);
  field_.clear();
  value_.clear();
  in_value_ = false;
}

int Http1ServerCodec::onTrailer(const char* at, size_t len, bool name) {
  // A chunked body's trailer section: the request's headers went to the
  // stream with its head, so trailer fields are checked (name characters,
  // the header byte and count limits, which cover head and trailers
  // together) and dropped. Nothing downstream of the Edge needs them.
  if (!countHeaderBytes(len)) {
    return fail(431,
                "request headers and trailers exceed " + std::to_string(limits_.max_header_bytes) +
                    " bytes",
                "header_too_large");
  }
  if (!name) {
    in_trailer_name_ = false;
    return 0;
  }
  if (!in_trailer_name_) {
    in_trailer_name_ = true;
    if (++header_count_ > limits_.max_headers) {
      return fail(
          431, "more than " + std::to_string(limits_.max_headers) + " request headers and trailers",
          "too_many_headers");
    }
  }
  for (size_t i = 0; i < len; ++i) {
    if (!isTokenChar(static_cast<unsigned char>(at[i]))) {
      return fail(400, "invalid character in a trailer name", "bad_header_name");
    }
  }
  return 0;
}

int Http1ServerCodec::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  if (!c->request_) return c->onTrailer(at, len, true);
  if (c->in_value_) c->finishHeader();
  if (!c->countHeaderBytes(len)) {
    return c->fail(
        431, "request headers exceed " + std::to_string(c->limits_.max_header_bytes) + " bytes",
        "header_too_large");
  }
  if (c->field_.empty() && c->request_->headers.size() >= c->limits_.max_headers) {
    return c->fail(431, "more than " + std::to_string(c->limits_.max_headers) + " request headers",
                   "too_many_headers");
  }
  for (size_t i = 0; i < len; ++i) {
    if (!isTokenChar(static_cast<unsigned char>(at[i]))) {
      return c->fail(400, "invalid character in a header name", "bad_header_name");
    }
  }
  appendLower(c->field_, at, len);
  return 0;
}

int Http1ServerCodec::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  if (!c->request_) return c->onTrailer(at, len, false);
  c->in_value_ = true;
  if (!c->countHeaderBytes(len)) {
    return c->fail(
        431, "request headers exceed " + std::to_string(c->limits_.max_header_bytes) + " bytes",
        "header_too_large");
  }
  c->value_.append(at, len);
  return 0;
}

int Http1ServerCodec::onHeadersComplete(llhttp_t* p) {
  auto* c = self(p);
  if (c->in_value_ || !c->field_.empty()) c->finishHeader();
  RequestHeaders& r = *c->request_;
  c->header_count_ = static_cast<uint32_t>(r.headers.size());
  r.method = llhttp_method_name(static_cast<llhttp_method_t>(p->method));
  if (p->method == HTTP_CONNECT || p->method == HTTP_TRACE) {
    // A tunnel, or an echo of the request's credentials: neither is ever
    // forwarded, whatever the route.
    return c->fail(405, "method " + r.method + " is not served here", "method_not_allowed");
  }
  r.version_minor = p->http_minor;
  if (p->http_major != 1) return c->fail(505, "only HTTP/1.x is supported here", "http_version");
  r.keep_alive = llhttp_should_keep_alive(p) != 0;
  r.chunked = (p->flags & F_CHUNKED) != 0;
  if (p->flags & F_CONTENT_LENGTH) r.content_length = p->content_length;
  if (r.version_minor >= 1) {
    size_t hosts = r.headers.count("host");
    if (hosts != 1) {
      return c->fail(400, hosts == 0 ? "missing Host header" : "more than one Host header",
                     "bad_host");
    }
  }
  if (r.path.empty() || (r.path[0] != '/' && r.method != "OPTIONS")) {
    return c->fail(400, "request target must be an absolute path", "bad_request_target");
  }
  c->body_limit_ = c->callbacks_.maxBodyBytes(r, c->limits_.max_body_bytes);
  if (r.content_length && *r.content_length > c->body_limit_) {
    return c->fail(413,
                   "request body of " + std::to_string(*r.content_length) +
                       " bytes exceeds the limit of " + std::to_string(c->body_limit_),
                   "body_too_large");
  }
  if (std::optional<std::string_view> expect = r.headers.get("expect")) {
    if (equalsIgnoreCase(*expect, "100-continue")) {
      r.expect_continue = true;
      r.headers.remove("expect");
    } else {
      return c->fail(417, "unsupported Expect header", "expectation_failed");
    }
  }
  c->request_has_body_ = r.chunked || (r.content_length && *r.content_length > 0);
  c->request_is_head_ = r.method == "HEAD";
  c->request_keep_alive_ = r.keep_alive;
  c->request_http10_ = r.version_minor == 0;
  c->request_length_known_ = !r.chunked && r.content_length.has_value();
  c->request_content_length_ = r.content_length.value_or(0);
  c->request_expect_continue_ = r.expect_continue;
  c->discard_after_response_ = false;
  c->discarding_ = false;
  c->state_ = c->request_has_body_ ? State::Body : State::AwaitResponse;
  c->response_started_ = false;
  c->sent_100_ = false;
  c->decoder_ = &c->callbacks_.newStream(*c);
  c->decoder_->decodeHeaders(std::move(c->request_), !c->request_has_body_);
  if (c->state_ == State::Closed) return -1;
  return 0;
}

int Http1ServerCodec::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  c->body_bytes_ += len;
  if (c->body_bytes_ > c->body_limit_) {
    return c->fail(413,
                   "request body exceeds the limit of " + std::to_string(c->body_limit_) + " bytes",
                   "body_too_large");
  }
  if (!c->decoder_) return 0;
  Buffer data;
  const Slice* s = c->current_slice_;
  data.addSlice(s->slab, static_cast<uint32_t>(at - s->slab->data()), static_cast<uint32_t>(len));
  c->decoder_->decodeData(data, false);
  return c->state_ == State::Closed ? -1 : 0;
}

int Http1ServerCodec::onMessageComplete(llhttp_t* p) {
  auto* c = self(p);
  if (c->discarding_) {
    // The rest of an answered request's body is gone: next request, but
    // from dispatch(), as after any request: it re-arms the bare-LF scanner
    // and asks inputPaused() first.
    c->discarding_ = false;
    c->discard_after_response_ = false;
    c->state_ = State::Idle;
    return HPE_PAUSED;
  }
  if (c->request_has_body_ && c->decoder_) {
    Buffer empty;
    c->state_ = State::AwaitResponse;
    c->decoder_->decodeData(empty, true);
  }
  if (c->state_ == State::Closed) return -1;
  if (c->state_ == State::Body) c->state_ = State::AwaitResponse;
  // Stop after every request: a pipelined one waits for this response, and
  // dispatch() re-arms the header scanner for the next.
  return HPE_PAUSED;
}

bool Http1ServerCodec::scanHeaderBytes(const char* p, size_t n) {
  // From one LF to the next with memchr: a header line is one step, not
  // one per byte. crlf_state_ counts CRLFs with nothing but CRs between
  // them; two end the header section.
  const char* end = p + n;
  while (p < end && scanning_headers_) {
    const char* lf = static_cast<const char*>(memchr(p, '\n', static_cast<size_t>(end - p)));
    const char* seg_end = lf ? lf : end;
    if (seg_end > p) {
      // A byte other than CR before this LF resets the count.
      for (const char* q = p; q < seg_end; ++q) {
        if (*q != '\r') {
          crlf_state_ = 0;
          seen_line_ = true;
          break;
        }
      }
      prev_cr_ = seg_end[-1] == '\r';
    }
    if (!lf) break;
    if (!prev_cr_) return false;
    // Empty lines before the request line (which llhttp skips) do not end
    // the scan: a bare LF after them is caught like any other.
    if (seen_line_ && ++crlf_state_ == 2) scanning_headers_ = false;  // "\r\n\r\n"
    prev_cr_ = false;
    p = lf + 1;
  }
  return true;
}

void Http1ServerCodec::dispatch(Buffer& data) {
  while (!data.empty() && state_ != State::Closed && !has_error_) {
    // Pipelined bytes wait for the response, and for the client to take it.
    if (state_ == State::AwaitResponse || callbacks_.inputPaused()) return;
    const Slice& slice = data.slice(0);
    if (state_ == State::Idle) {
      scanning_headers_ = true;
      crlf_state_ = 0;
      prev_cr_ = false;
      seen_line_ = false;
    }
    if (scanning_headers_ && !scanHeaderBytes(slice.data(), slice.length)) {
      fail(400, "bare LF in request line or headers", "bad_line_ending");
      break;
    }
    if (state_ == State::Idle) state_ = State::Headers;
    current_slice_ = &slice;
    llhttp_errno_t err = llhttp_execute(&parser_, slice.data(), slice.length);
    current_slice_ = nullptr;
    if (state_ == State::Closed) return;
    if (err == HPE_OK) {
      data.drain(slice.length);
      continue;
    }
    if (err == HPE_PAUSED) {
      const char* pos = llhttp_get_error_pos(&parser_);
      data.drain(static_cast<size_t>(pos - slice.data()));
      llhttp_resume(&parser_);
      continue;  // returns at the top while awaiting the response
    }
    if (!has_error_) {
      const char* reason = llhttp_get_error_reason(&parser_);
      fail(400, std::string("malformed request: ") + (reason ? reason : llhttp_errno_name(err)),
           "bad_request");
    }
    break;
  }
  if (has_error_ && state_ != State::Closed) {
    state_ = State::Closed;
    data.clear();
    callbacks_.onCodecError(pending_error_, *this);
  }
}

void Http1ServerCodec::encode100Continue() {
  if (sent_100_ || response_started_) return;
  sent_100_ = true;
  Buffer out;
  out.add("HTTP/1.1 100 Continue\r\n\r\n");
  connection_.write(out);
}

void Http1ServerCodec::encodeHeaders(const ResponseHeaders& headers, bool end_stream) {
  response_started_ = true;
  bool keep_alive = request_keep_alive_ && !close_after_response_ && state_ != State::Closed;
  // A response before the request's body was read to the end (a 401, a
  // 429): the connection stays if the rest of the body can be read and
  // thrown away, i.e. its length is known and small, and the client was not
  // left waiting for a 100 Continue (it may never send that body). Else,
  // and mid-headers, close after answering.
  if (state_ == State::Headers) {
    keep_alive = false;
  } else if (state_ == State::Body) {
    bool discardable = request_length_known_ && (!request_expect_continue_ || sent_100_) &&
                       request_content_length_ - std::min(body_bytes_, request_content_length_) <=
                           kMaxDiscardBytes;
    if (discardable && keep_alive) {
      discard_after_response_ = true;
    } else {
      keep_alive = false;
    }
  }
  std::optional<std::string_view> cl = headers.headers.get("content-length");
  response_chunked_ = false;
  response_close_delimited_ = false;
  bool no_body = request_is_head_ || headers.status == 204 || headers.status == 304;
  if (!end_stream && !cl && !no_body) {
    if (request_http10_) {
      response_close_delimited_ = true;
      keep_alive = false;
    } else {
      response_chunked_ = true;
    }
  }
  if (!keep_alive) close_after_response_ = true;

  // The status line is formatted by hand (snprintf's format parsing cost
  // more than the rest of the head), the head copied once into its slab.
  // "HTTP/1.1 " + an int (at most 11 chars) + ' ' + the longest reason
  // phrase (31 chars) fits.
  char status_line[64];
  size_t sl = 9;
  int status = headers.status;
  memcpy(status_line, "HTTP/1.1 ", 9);
  if (status >= 100 && status <= 999) {
    status_line[sl++] = static_cast<char>('0' + status / 100);
    status_line[sl++] = static_cast<char>('0' + status / 10 % 10);
    status_line[sl++] = static_cast<char>('0' + status % 10);
  } else {
    sl += static_cast<size_t>(snprintf(status_line + sl, sizeof status_line - sl, "%d", status));
  }
  std::string_view text = statusText(status);
  status_line[sl++] = ' ';
  memcpy(status_line + sl, text.data(), text.size());
  sl += text.size();
  std::string_view length0 = end_stream && !cl && !no_body ? "content-length: 0\r\n" : "";
  std::string_view chunked = response_chunked_ ? "transfer-encoding: chunked\r\n" : "";
  std::string_view connection = !keep_alive       ? "connection: close\r\n"
                                : request_http10_ ? "connection: keep-alive\r\n"
                                                  : "";
  Buffer buf;
  serializeHead({std::string_view(status_line, sl), "\r\n"}, headers.headers,
                {length0, chunked, connection, "\r\n"}, buf);
  connection_.write(buf);
  if (end_stream) completeResponse();
}

void Http1ServerCodec::encodeData(Buffer& data, bool end_stream) {
  if (request_is_head_) {
    data.clear();
  } else if (response_chunked_) {
    Buffer out;
    if (!data.empty()) {
      // The chunk-size line, in hex, formatted by hand (once per SSE event).
      char size[24];
      char* end = size + sizeof size;
      char* p = end;
      *--p = '\n';
      *--p = '\r';
      size_t v = data.length();
      do {
        *--p = "0123456789abcdef"[v & 15];
        v >>= 4;
      } while (v != 0);
      out.add(p, static_cast<size_t>(end - p));
      out.move(data);
      out.add("\r\n", 2);
    }
    if (end_stream) out.add("0\r\n\r\n", 5);
    if (!out.empty()) connection_.write(out);
  } else if (!data.empty()) {
    connection_.write(data);
  }
  if (end_stream) completeResponse();
}

void Http1ServerCodec::completeResponse() {
  if (!close_after_response_ && state_ == State::Body && discard_after_response_) {
    // Read what is left of the body into nothing (onBody without a
    // decoder), then go on with the next request.
    discarding_ = true;
    decoder_ = nullptr;
    callbacks_.onResponseComplete(true);
    return;
  }
  bool keep_alive = !close_after_response_ && state_ == State::AwaitResponse;
  if (!keep_alive) {
    state_ = State::Closed;
  } else {
    state_ = State::Idle;
    decoder_ = nullptr;
    response_started_ = false;
  }
  callbacks_.onResponseComplete(keep_alive);
}

void Http1ServerCodec::abort() {
  state_ = State::Closed;
  decoder_ = nullptr;
  callbacks_.onResponseComplete(false);
}

}  // namespace eldric::http
