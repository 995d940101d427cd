#include "dataplane/http/http1_client_codec.h"

namespace eldric::http {
namespace {
// Head and trailers together.
constexpr uint32_t kMaxResponseHeaderBytes = 64 * 1024;
constexpr uint32_t kMaxResponseTrailers = 100;
Http1ClientCodec* self(llhttp_t* p) { return static_cast<Http1ClientCodec*>(p->data); }
}  // namespace

const llhttp_settings_t& Http1ClientCodec::settings() {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t st;
    llhttp_settings_init(&st);
    st.on_message_begin = &Http1ClientCodec::onMessageBegin;
    st.on_header_field = &Http1ClientCodec::onHeaderField;
    st.on_header_value = &Http1ClientCodec::onHeaderValue;
    st.on_headers_complete = &Http1ClientCodec::onHeadersComplete;
    st.on_body = &Http1ClientCodec::onBody;
    st.on_message_complete = &Http1ClientCodec::onMessageComplete;
    return st;
  }();
  return s;
}

Http1ClientCodec::Http1ClientCodec(ClientCodecCallbacks& callbacks) : callbacks_(callbacks) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
}

void Http1ClientCodec::beginResponse(bool request_is_head) {
  llhttp_init(&parser_, HTTP_RESPONSE, &settings());
  parser_.data = this;
  request_is_head_ = request_is_head;
  started_ = headers_done_ = complete_ = error_ = false;
  keep_alive_ = true;
}

int Http1ClientCodec::onMessageBegin(llhttp_t* p) {
  auto* c = self(p);
  c->headers_ = std::make_unique<ResponseHeaders>();
  c->field_.clear();
  c->value_.clear();
  c->in_value_ = false;
  c->header_bytes_ = 0;
  c->trailer_count_ = 0;
  c->in_trailer_name_ = false;
  return 0;
}

int Http1ClientCodec::refuse(const char* reason) {
  refusal_ = reason;
  return -1;
}

void Http1ClientCodec::finishHeader() {
  // Copied into the map's arena; field_ and value_ keep their capacity
  // for the next header.
  if (!field_.empty()) headers_->headers.add(field_, value_);
  field_.clear();
  value_.clear();
  in_value_ = false;
}

int Http1ClientCodec::onHeaderField(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  c->started_ = true;
  c->header_bytes_ += static_cast<uint32_t>(len);
  if (c->header_bytes_ > kMaxResponseHeaderBytes) return c->refuse("response headers too large");
  // A name that is not a token (a space before the colon, a control byte)
  // is refused, not passed on to the client.
  for (size_t i = 0; i < len; ++i) {
    if (!isTokenChar(static_cast<unsigned char>(at[i])))
      return c->refuse("invalid character in a header name");
  }
  if (!c->headers_) {
    // A chunked body's trailers: the headers went to the router with the
    // head; trailer fields are checked, counted and dropped.
    if (!c->in_trailer_name_ && ++c->trailer_count_ > kMaxResponseTrailers) {
      return c->refuse("too many trailer fields");
    }
    c->in_trailer_name_ = true;
    return 0;
  }
  if (c->in_value_) c->finishHeader();
  size_t base = c->field_.size();
  c->field_.append(at, len);
  for (size_t i = base; i < c->field_.size(); ++i) {
    char ch = c->field_[i];
    if (ch >= 'A' && ch <= 'Z') c->field_[i] = static_cast<char>(ch + 32);
  }
  return 0;
}

int Http1ClientCodec::onHeaderValue(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  c->header_bytes_ += static_cast<uint32_t>(len);
  if (c->header_bytes_ > kMaxResponseHeaderBytes) return c->refuse("response headers too large");
  if (!c->headers_) {
    c->in_trailer_name_ = false;
    return 0;
  }
  c->in_value_ = true;
  c->value_.append(at, len);
  return 0;
}

int Http1ClientCodec::onHeadersComplete(llhttp_t* p) {
  auto* c = self(p);
  c->started_ = true;
  if (c->in_value_ || !c->field_.empty()) c->finishHeader();
  c->headers_->status = p->status_code;
  // Informational answers (100 Continue) are not the response; skip them.
  if (p->status_code >= 100 && p->status_code < 200) return 0;
  c->headers_done_ = true;
  c->keep_alive_ = llhttp_should_keep_alive(p) != 0;
  bool no_body =
      c->request_is_head_ || p->status_code == 204 || p->status_code == 304 ||
      ((p->flags & F_CONTENT_LENGTH) && p->content_length == 0 && !(p->flags & F_CHUNKED));
  if (no_body) {
    c->complete_ = true;
  }
  c->callbacks_.onResponseHeaders(std::move(c->headers_), no_body);
  if (c->error_) return -1;
  // Tell llhttp there is no body for HEAD.
  return c->request_is_head_ ? 1 : 0;
}

int Http1ClientCodec::onBody(llhttp_t* p, const char* at, size_t len) {
  auto* c = self(p);
  Buffer data;
  const Slice* s = c->current_slice_;
  data.addSlice(s->slab, static_cast<uint32_t>(at - s->slab->data()), static_cast<uint32_t>(len));
  c->callbacks_.onResponseData(data, false);
  return c->error_ ? -1 : 0;
}

int Http1ClientCodec::onMessageComplete(llhttp_t* p) {
  auto* c = self(p);
  if (!c->headers_done_) return 0;      // end of a 1xx
  if (c->complete_) return HPE_PAUSED;  // already reported with the headers
  c->complete_ = true;
  c->keep_alive_ = c->keep_alive_ && llhttp_should_keep_alive(p) != 0;
  Buffer empty;
  c->callbacks_.onResponseData(empty, true);
  return HPE_PAUSED;
}

void Http1ClientCodec::dispatch(Buffer& data) {
  while (!data.empty() && !complete_ && !error_) {
    const Slice& slice = data.slice(0);
    current_slice_ = &slice;
    llhttp_errno_t err = llhttp_execute(&parser_, slice.data(), slice.length);
    current_slice_ = nullptr;
    if (err == HPE_OK) {
      data.drain(slice.length);
      continue;
    }
    if (err == HPE_PAUSED || (complete_ && err == HPE_PAUSED_UPGRADE)) {
      const char* pos = llhttp_get_error_pos(&parser_);
      data.drain(static_cast<size_t>(pos - slice.data()));
      break;
    }
    error_ = true;
    keep_alive_ = false;
    const char* reason = refusal_ ? refusal_ : llhttp_get_error_reason(&parser_);
    refusal_ = nullptr;
    callbacks_.onResponseError(std::string("malformed upstream response: ") +
                               (reason ? reason : llhttp_errno_name(err)));
    return;
  }
  // Bytes after a complete response on a connection we did not ask to
  // pipeline mean the upstream is confused: do not reuse it.
  if (complete_ && !data.empty()) {
    keep_alive_ = false;
    data.clear();
  }
}

bool Http1ClientCodec::onEof() {
  if (complete_ || error_) return complete_;
  keep_alive_ = false;
  if (!headers_done_) return false;
  llhttp_errno_t err = llhttp_finish(&parser_);
  return (err == HPE_OK || err == HPE_PAUSED) && complete_;
}

void Http1ClientCodec::encodeRequestHead(const RequestHeaders& headers, Buffer& out) {
  serializeHead({headers.method, " ", headers.path, " HTTP/1.1\r\n"}, headers.headers, {"\r\n"},
                out);
}

}  // namespace eldric::http
