#include "dataplane/grpc/session.h"

#include <algorithm>
#include <cstring>
#include <string_view>

#include "common/address.h"
#include "common/log.h"

namespace eldric::grpc {

namespace {

constexpr const char* kUserAgent = "eldric-edge-grpc/0.1";
// Receive windows: large enough that a multi-megabyte snapshot is not
// throttled to one 64 KB window per round trip, small enough to bound
// what one connection can make us buffer.
constexpr uint32_t kStreamWindow = 4 * 1024 * 1024;
constexpr int32_t kConnectionWindow = 16 * 1024 * 1024;
// Doubling the keepalive interval after "too_many_pings" stops here.
constexpr uint64_t kMaxKeepaliveMs = 60 * 60 * 1000;

// The host part of an :authority ("cp.example:443" -> "cp.example").
std::string authorityHost(const std::string& authority) {
  std::string host;
  uint16_t port;
  if (network::splitHostPort(authority, &host, &port)) return host;
  if (authority.size() > 2 && authority.front() == '[' && authority.back() == ']') {
    return authority.substr(1, authority.size() - 2);
  }
  return authority;
}

nghttp2_nv header(const std::string& name, const std::string& value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NONE};
}

}  // namespace

namespace detail {

Session::Session(Channel& channel, std::weak_ptr<bool> alive)
    : channel_(channel),
      alive_(std::move(alive)),
      dispatcher_(channel.dispatcher_),
      options_(channel.options_),
      ssl_ctx_(channel.ssl_ctx_.get()),
      keepalive_ms_(channel.keepalive_ms_) {
  if (ssl_ctx_) SSL_CTX_up_ref(ssl_ctx_);
  attempt_timer_ = dispatcher_.createTimer([this] {
    if (resolve_) {
      // The name lookup took too long; its callback will find it abandoned.
      abandonResolve();
      last_error_ = target_ + ": name resolution timed out";
    }
    nextAttempt();
  });
  // Connect from the loop, not from inside startStream(): a target that
  // fails at once must not call back before startStream() returns.
  attempt_timer_->enable(0);
}

Session::~Session() {
  if (flush_scheduled_) dispatcher_.cancelFlush(this);
  abandonResolve();
  closeConnection();
  for (auto& c : pending_) c->session = nullptr;
  for (auto& [id, c] : streams_) c->session = nullptr;
  if (h2_) nghttp2_session_del(h2_);
  if (ssl_ctx_) SSL_CTX_free(ssl_ctx_);
}

void Session::start(const std::shared_ptr<Call>& call) {
  call->session = this;
  if (state_ == State::Ready) {
    if (!submit(call)) {
      call->session = nullptr;
      channel_.failLater(call, kUnavailable, "grpc: cannot start a stream on " + target_);
    }
    return;
  }
  pending_.push_back(call);
}

void Session::sendQueued(Call* call) {
  if (call->stream_id < 0 || !h2_) return;  // still pending: submit() picks it up
  if (call->deferred) {
    call->deferred = false;
    nghttp2_session_resume_data(h2_, call->stream_id);
  }
  scheduleSend();
}

void Session::cancel(Call* call) {
  call->session = nullptr;
  if (call->stream_id < 0) {
    for (auto it = pending_.begin(); it != pending_.end(); ++it) {
      if (it->get() == call) {
        pending_.erase(it);
        break;
      }
    }
    return;
  }
  // Kept in streams_ until nghttp2 reports the stream closed.
  if (h2_ && state_ != State::Dead) {
    nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, call->stream_id, NGHTTP2_CANCEL);
    scheduleSend();
  }
}

void Session::closeConnection() {
  if (!conn_) return;
  network::Connection* c = conn_;
  conn_ = nullptr;
  c->setCallbacks(nullptr);
  c->close(network::CloseType::NoFlush);
}

// --- Connecting ---

void Session::nextAttempt() {
  while (state_ == State::Connecting) {
    if (addr_index_ < addrs_.size()) {
      connectTo(addrs_[addr_index_++]);
      return;
    }
    if (target_index_ >= options_.targets.size()) {
      std::string reason = "grpc: failed to connect to all targets";
      if (options_.targets.empty()) reason = "grpc: no targets configured";
      if (!last_error_.empty()) reason += "; last error: " + last_error_;
      stop(kUnavailable, reason);
      return;
    }
    target_ = options_.targets[target_index_++];
    addrs_.clear();
    addr_index_ = 0;
    std::string host;
    uint16_t port = 0;
    if (!network::splitHostPort(target_, &host, &port)) {
      last_error_ = "bad target \"" + target_ + "\" (want host:port)";
      continue;
    }
    authority_ = options_.authority.empty() ? target_ : options_.authority;
    server_name_ = options_.authority.empty() ? host : authorityHost(options_.authority);
    sockaddr_storage addr;
    if (network::parseIpAddress(host, port, &addr)) {
      addrs_.push_back(addr);
      continue;
    }
    startResolve(host);
    return;
  }
}

void Session::startResolve(const std::string& host) {
  auto* r = new Resolve;
  r->session = this;
  r->req.data = r;
  addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  std::string port = target_.substr(target_.rfind(':') + 1);
  int rc = uv_getaddrinfo(dispatcher_.loop(), &r->req, &Session::onResolved, host.c_str(),
                          port.c_str(), &hints);
  if (rc != 0) {
    delete r;
    last_error_ = target_ + ": " + uv_strerror(rc);
    attempt_timer_->enable(0);  // next target, from a fresh stack
    return;
  }
  resolve_ = r;
  attempt_timer_->enable(options_.connect_timeout_ms);
}

void Session::abandonResolve() {
  if (!resolve_) return;
  // libuv cannot always cancel a lookup in flight; the callback frees it.
  resolve_->session = nullptr;
  uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  resolve_ = nullptr;
}

void Session::onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
  auto* r = static_cast<Resolve*>(req->data);
  Session* self = r->session;
  delete r;
  if (!self) {
    if (res) uv_freeaddrinfo(res);
    return;
  }
  self->resolve_ = nullptr;
  self->attempt_timer_->disable();
  if (status != 0) {
    self->last_error_ = self->target_ + ": " + uv_strerror(status);
  } else {
    for (addrinfo* a = res; a; a = a->ai_next) {
      if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
      sockaddr_storage addr;
      memset(&addr, 0, sizeof addr);
      memcpy(&addr, a->ai_addr, a->ai_addrlen);
      self->addrs_.push_back(addr);
    }
  }
  if (res) uv_freeaddrinfo(res);
  self->nextAttempt();
}

void Session::connectTo(const sockaddr_storage& addr) {
  conn_ = network::Connection::connect(dispatcher_, reinterpret_cast<const sockaddr*>(&addr),
                                       options_.connect_timeout_ms, conn_options_, ssl_ctx_,
                                       server_name_);
  conn_->setCallbacks(this);
}

void Session::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      if (ssl_ctx_ && conn_->alpn() != "h2") {
        // gRPC needs HTTP/2; without ALPN the server would read our
        // preface as HTTP/1.1.
        last_error_ = target_ + ": server did not negotiate h2 via ALPN";
        closeConnection();
        if (channelAlive()) ++channel_.stats_.connect_failures;
        nextAttempt();
        return;
      }
      onConnected();
      return;
    case network::ConnectionEvent::ConnectFailed: {
      std::string why =
          conn_->tlsError().empty() ? "connection refused or timed out" : conn_->tlsError();
      conn_ = nullptr;
      last_error_ = target_ + ": " + why;
      log::debug("grpc connect failed", {{"target", log::str(target_)}, {"error", log::str(why)}});
      if (channelAlive()) ++channel_.stats_.connect_failures;
      nextAttempt();
      return;
    }
    case network::ConnectionEvent::RemoteClose: {
      std::string tls_error = conn_->tlsError();
      conn_ = nullptr;
      if (channelAlive()) ++channel_.stats_.connections_lost;
      std::string reason = lostReason();
      if (!tls_error.empty()) reason += ": " + tls_error;
      stop(kUnavailable, reason);
      return;
    }
    case network::ConnectionEvent::LocalClose:
      return;
  }
}

std::string Session::lostReason() const {
  std::string r = "grpc: connection to " + target_ + " lost";
  if (!goaway_.empty()) r += " after " + goaway_;
  return r;
}

void Session::onConnected() {
  nghttp2_session_callbacks* cbs;
  nghttp2_session_callbacks_new(&cbs);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &Session::onBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &Session::onHeader);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Session::onFrameRecv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Session::onDataChunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Session::onStreamClose);
  nghttp2_session_callbacks_set_error_callback2(cbs, &Session::onError);
  nghttp2_option* opt;
  nghttp2_option_new(&opt);
  // We never accept pushes; refusing PUSH_PROMISE outright is simplest.
  nghttp2_option_set_max_reserved_remote_streams(opt, 0);
  int rv = nghttp2_session_client_new2(&h2_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    h2_ = nullptr;
    stop(kUnavailable, std::string("grpc: nghttp2: ") + nghttp2_strerror(rv));
    return;
  }
  nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, kStreamWindow},
  };
  nghttp2_submit_settings(h2_, NGHTTP2_FLAG_NONE, settings, 2);
  nghttp2_session_set_local_window_size(h2_, NGHTTP2_FLAG_NONE, 0, kConnectionWindow);

  state_ = State::Ready;
  last_read_ms_ = dispatcher_.nowMs();
  if (channelAlive()) ++channel_.stats_.connects;
  log::info("grpc connected",
            {{"target", log::str(target_)}, {"tls", ssl_ctx_ ? "true" : "false"}});
  if (keepalive_ms_ > 0) {
    keepalive_timer_ = dispatcher_.createTimer([this] { onKeepalive(); });
    ping_timer_ = dispatcher_.createTimer([this] { onPingTimeout(); });
    keepalive_timer_->enable(keepalive_ms_);
  }
  std::vector<std::shared_ptr<Call>> pending;
  pending.swap(pending_);
  for (auto& call : pending) {
    if (!call->callbacks) continue;
    if (!submit(call)) {
      call->session = nullptr;
      call->end(kUnavailable, "grpc: cannot start a stream on " + target_);
      if (!channelAlive() || state_ == State::Dead) return;
    }
  }
  scheduleSend();
}

// --- Calls ---

bool Session::submit(const std::shared_ptr<Call>& call) {
  static const std::string kMethod = ":method", kPost = "POST", kScheme = ":scheme",
                           kPath = ":path", kAuthority = ":authority", kTe = "te",
                           kTrailers = "trailers", kContentType = "content-type",
                           kGrpc = "application/grpc", kUa = "user-agent", kUaValue = kUserAgent,
                           kTimeout = "grpc-timeout", kHttp = "http", kHttps = "https";
  std::string timeout;
  std::vector<nghttp2_nv> nva = {
      header(kMethod, kPost),    header(kScheme, ssl_ctx_ ? kHttps : kHttp),
      header(kPath, call->path), header(kAuthority, authority_),
      header(kTe, kTrailers),    header(kContentType, kGrpc),
      header(kUa, kUaValue),
  };
  if (call->deadline_ms) {
    // What is left of the deadline now, not the original timeout: time
    // spent connecting counts.
    uint64_t now = dispatcher_.nowMs();
    timeout = encodeTimeout(call->deadline_ms > now ? call->deadline_ms - now : 1);
    nva.push_back(header(kTimeout, timeout));
  }
  for (const auto& [name, value] : call->metadata) {
    nghttp2_nv nv = header(name, value);
    // What callers add is credentials (an admin key, the farm token): kept
    // out of HPACK's dynamic table (RFC 7541 7.1.3).
    nv.flags = NGHTTP2_NV_FLAG_NO_INDEX;
    nva.push_back(nv);
  }
  nghttp2_data_provider provider;
  provider.source.ptr = call.get();
  provider.read_callback = &Session::readData;
  // The data provider is attached from the start (a gRPC request always
  // has a body); readData parks it while the send queue is empty.
  int32_t id = nghttp2_submit_request(h2_, nullptr, nva.data(), nva.size(), &provider, call.get());
  if (id < 0) {
    log::warn("grpc submit failed", {{"error", log::str(nghttp2_strerror(id))}});
    return false;
  }
  call->stream_id = id;
  streams_[id] = call;
  if (channelAlive()) ++channel_.stats_.calls_started;
  scheduleSend();
  return true;
}

ssize_t Session::readData(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void*) {
  auto* call = static_cast<Call*>(source->ptr);
  if (!call->callbacks) {
    // Ended or cancelled: a RST_STREAM is queued and closes the stream.
    call->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n = std::min(length, call->send_queue.length());
  if (n > 0) {
    call->send_queue.copyOut(n, reinterpret_cast<char*>(buf));
    call->send_queue.drain(n);
  }
  if (call->send_queue.empty()) {
    if (call->send_closed) {
      *data_flags |= NGHTTP2_DATA_FLAG_EOF;
      return static_cast<ssize_t>(n);
    }
    if (n == 0) {
      call->deferred = true;
      return NGHTTP2_ERR_DEFERRED;
    }
  }
  return static_cast<ssize_t>(n);
}

Call* Session::callFor(int32_t stream_id) {
  auto it = streams_.find(stream_id);
  return it == streams_.end() ? nullptr : it->second.get();
}

void Session::endAndReset(Call* call, int status, std::string message, uint32_t h2_error) {
  call->end(status, std::move(message));
  if (state_ != State::Dead && nghttp2_session_get_stream_local_close(h2_, call->stream_id) == 0) {
    nghttp2_submit_rst_stream(h2_, NGHTTP2_FLAG_NONE, call->stream_id, h2_error);
    scheduleSend();
  }
}

void Session::onStreamEnd(Call* call) {
  if (!call->callbacks) return;
  int status;
  std::string message;
  if (call->deframer.midMessage()) {
    status = kInternal;
    message = "grpc: stream ended inside a message";
  } else if (call->has_grpc_status) {
    status = call->grpc_status;
    message = std::move(call->grpc_message);
  } else if (call->http_status != 200) {
    status = statusFromHttp(call->http_status);
    message = "grpc: HTTP status " + std::to_string(call->http_status);
  } else {
    status = kUnknown;
    message = "grpc: response ended without grpc-status";
  }
  // The server is done; if we are not, stop sending (RFC 9113 8.1: the
  // response is complete).
  endAndReset(call, status, std::move(message), NGHTTP2_NO_ERROR);
}

int Session::onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Call* call = self->callFor(frame->hd.stream_id);
  // Trailers repeat nothing of the response headers but grpc-status and
  // grpc-message; reset those so the final block decides.
  if (call) call->has_grpc_status = false;
  return 0;
}

int Session::onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* user) {
  auto* self = static_cast<Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS) return 0;
  Call* call = self->callFor(frame->hd.stream_id);
  if (!call || !call->callbacks) return 0;
  std::string_view n(reinterpret_cast<const char*>(name), namelen);
  std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  if (n == ":status") {
    int s = 0;
    for (char c : v) s = (c >= '0' && c <= '9') ? s * 10 + (c - '0') : 0;
    call->http_status = s;
  } else if (n == "content-type") {
    call->content_type = std::string(v);
  } else if (n == "grpc-status") {
    int s = 0;
    bool ok = !v.empty() && v.size() < 6;
    for (char c : v) {
      if (c < '0' || c > '9') ok = false;
      s = s * 10 + (c - '0');
    }
    call->has_grpc_status = true;
    call->grpc_status = ok ? s : kUnknown;
  } else if (n == "grpc-message") {
    call->grpc_message = percentDecode(v);
  }
  return 0;
}

int Session::onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<Session*>(user);
  if (!self->channelAlive() || self->state_ == State::Dead) return 0;
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      Call* call = self->callFor(frame->hd.stream_id);
      if (!call || !call->callbacks) return 0;
      if (frame->headers.cat == NGHTTP2_HCAT_RESPONSE) {
        if (call->http_status / 100 == 1) return 0;  // informational; the response follows
        call->got_headers = true;
        bool end = frame->hd.flags & NGHTTP2_FLAG_END_STREAM;
        if (call->http_status != 200) {
          // Not a gRPC server (a proxy, a load balancer): the HTTP status
          // decides, whatever else came.
          std::string message = "grpc: HTTP status " + std::to_string(call->http_status);
          if (!call->grpc_message.empty()) message += ": " + call->grpc_message;
          self->endAndReset(call, statusFromHttp(call->http_status), std::move(message),
                            NGHTTP2_CANCEL);
          return 0;
        }
        if (!call->content_type.empty() && call->content_type.rfind("application/grpc", 0) != 0) {
          self->endAndReset(call, kUnknown, "grpc: unexpected content-type " + call->content_type,
                            NGHTTP2_CANCEL);
          return 0;
        }
        if (end) self->onStreamEnd(call);  // trailers-only response
        return 0;
      }
      // Trailers (nghttp2 requires END_STREAM on them).
      if (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) self->onStreamEnd(call);
      return 0;
    }
    case NGHTTP2_DATA: {
      Call* call = self->callFor(frame->hd.stream_id);
      if (frame->hd.length > 0) ++self->channel_.stats_.data_frames_received;
      // DATA with END_STREAM: the server ended without trailers.
      if (call && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) self->onStreamEnd(call);
      return 0;
    }
    case NGHTTP2_GOAWAY: {
      ++self->channel_.stats_.goaways_received;
      std::string debug(reinterpret_cast<const char*>(frame->goaway.opaque_data),
                        frame->goaway.opaque_data_len);
      self->goaway_ = std::string("GOAWAY ") + nghttp2_http2_strerror(frame->goaway.error_code);
      if (!debug.empty()) self->goaway_ += " \"" + debug + "\"";
      log::info("grpc goaway", {{"target", log::str(self->target_)},
                                {"error", log::str(self->goaway_)},
                                {"last_stream_id", log::num(frame->goaway.last_stream_id)}});
      if (frame->goaway.error_code == NGHTTP2_ENHANCE_YOUR_CALM && debug == "too_many_pings") {
        // libgrpc's answer to pings it considers abusive. Its own client
        // doubles the keepalive interval; so do we, for later connections.
        uint64_t& k = self->channel_.keepalive_ms_;
        k = std::min(k * 2, kMaxKeepaliveMs);
        log::warn("grpc server rejected our keepalive pings; interval doubled",
                  {{"target", log::str(self->target_)}, {"keepalive_ms", log::num(k)}});
      }
      // Streams above last_stream_id are closed by nghttp2 (REFUSED_STREAM,
      // so UNAVAILABLE); those below may finish. New calls go elsewhere.
      if (self->state_ == State::Ready) {
        self->state_ = State::Draining;
        self->channel_.onSessionGoaway(self);
      }
      return 0;
    }
    case NGHTTP2_PING:
      if (frame->hd.flags & NGHTTP2_FLAG_ACK) {
        if (self->ping_timer_) self->ping_timer_->disable();
        if (self->keepalive_timer_) self->keepalive_timer_->enable(self->keepalive_ms_);
      }
      return 0;
    default:
      return 0;
  }
}

int Session::onDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user) {
  auto* self = static_cast<Session*>(user);
  if (!self->channelAlive() || self->state_ == State::Dead) return 0;
  auto it = self->streams_.find(stream_id);
  // Data for a call that is over is dropped (nghttp2 still returns the
  // flow-control credit).
  if (it == self->streams_.end() || !it->second->callbacks) return 0;
  std::shared_ptr<Call> hold = it->second;  // across the callbacks below
  Call* call = hold.get();
  std::weak_ptr<bool> alive = self->alive_;
  Deframer::Result r = call->deframer.feed(data, len, [&](std::string&& message) {
    ++self->channel_.stats_.messages_received;
    call->callbacks->onMessage(std::move(message));
    // The callback may have cancelled the call or destroyed the Channel.
    return !alive.expired() && call->callbacks != nullptr;
  });
  if (alive.expired() || !call->callbacks) return 0;
  if (r == Deframer::Result::TooLarge) {
    self->endAndReset(call, kResourceExhausted,
                      "grpc: received message larger than max (" +
                          std::to_string(call->deframer.declaredLength()) + " vs. " +
                          std::to_string(self->options_.max_receive_message_bytes) + ")",
                      NGHTTP2_CANCEL);
  } else if (r == Deframer::Result::Compressed) {
    self->endAndReset(call, kInternal,
                      "grpc: compressed message, but no compression was negotiated",
                      NGHTTP2_CANCEL);
  }
  return 0;
}

int Session::onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user) {
  auto* self = static_cast<Session*>(user);
  auto it = self->streams_.find(stream_id);
  if (it == self->streams_.end()) return 0;
  std::shared_ptr<Call> call = std::move(it->second);
  self->streams_.erase(it);
  call->session = nullptr;
  if (!call->callbacks || !self->channelAlive() || self->state_ == State::Dead) return 0;
  // Closed before the call had its status: a reset (or a refusal after
  // GOAWAY, or a request nghttp2 could not send).
  int status = statusFromH2Error(error_code);
  if (status == kCancelled && call->deadline_ms && self->dispatcher_.nowMs() >= call->deadline_ms) {
    status = kDeadlineExceeded;
  }
  std::string message = std::string("grpc: stream reset: ") + nghttp2_http2_strerror(error_code);
  if (error_code == NGHTTP2_REFUSED_STREAM && !self->goaway_.empty()) {
    message += " (" + self->goaway_ + ")";
  }
  call->end(status, std::move(message));
  return 0;
}

int Session::onError(nghttp2_session*, int, const char* msg, size_t len, void* user) {
  auto* self = static_cast<Session*>(user);
  log::debug("grpc http2 error", {{"target", log::str(self->target_)},
                                  {"error", log::str(std::string_view(msg, len))}});
  return 0;
}

// --- I/O ---

void Session::onData(Buffer& data) {
  if (!h2_ || state_ == State::Dead) {
    data.clear();
    return;
  }
  last_read_ms_ = dispatcher_.nowMs();
  read_since_ping_ = true;
  while (!data.empty()) {
    const Slice& s = data.slice(0);
    size_t n = s.length;
    ssize_t rv = nghttp2_session_mem_recv(h2_, reinterpret_cast<const uint8_t*>(s.data()), n);
    // A callback may have destroyed the Channel (stop() closed the
    // connection and cleared `data`) or ended this session.
    if (state_ == State::Dead) return;
    if (rv < 0) {
      data.clear();
      if (channelAlive()) ++channel_.stats_.connections_lost;
      stop(kUnavailable, std::string("grpc: HTTP/2 error from ") + target_ + ": " +
                             nghttp2_strerror(static_cast<int>(rv)));
      return;
    }
    data.drain(n);
  }
  scheduleSend();
  afterIo();
}

void Session::scheduleSend() {
  if (flush_scheduled_ || state_ == State::Dead) return;
  flush_scheduled_ = true;
  dispatcher_.scheduleFlush(this);
}

void Session::onFlush() {
  flush_scheduled_ = false;
  if (!h2_ || !conn_ || state_ == State::Dead) return;
  Buffer out;
  // Stop pulling frames once the connection holds a watermark's worth:
  // the rest waits in nghttp2 (and our send queues) until it drains.
  while (conn_->bufferedWriteBytes() + out.length() <= conn_options_.high_watermark) {
    const uint8_t* bytes = nullptr;
    ssize_t n = nghttp2_session_mem_send(h2_, &bytes);
    if (state_ == State::Dead) return;  // a callback ended everything
    if (n < 0) {
      if (channelAlive()) ++channel_.stats_.connections_lost;
      stop(kUnavailable,
           std::string("grpc: HTTP/2 error: ") + nghttp2_strerror(static_cast<int>(n)));
      return;
    }
    if (n == 0) break;
    out.add(reinterpret_cast<const char*>(bytes), static_cast<size_t>(n));
  }
  if (!out.empty()) conn_->write(out);
  afterIo();
}

void Session::afterIo() {
  if (state_ == State::Dead || !h2_) return;
  if (state_ == State::Draining && streams_.empty()) {
    stop(kUnavailable, lostReason());  // no calls left to fail
    return;
  }
  if (!nghttp2_session_want_read(h2_) && !nghttp2_session_want_write(h2_)) {
    if (channelAlive()) ++channel_.stats_.connections_lost;
    stop(kUnavailable, lostReason());
  }
}

void Session::onKeepalive() {
  if (state_ == State::Dead || !h2_) return;
  // No pings without calls: libgrpc servers count those as abuse, and an
  // idle connection that died is found by the next call's keepalive.
  uint64_t now = dispatcher_.nowMs();
  uint64_t idle = now - last_read_ms_;
  if (streams_.empty() || idle < keepalive_ms_) {
    keepalive_timer_->enable(streams_.empty() ? keepalive_ms_ : keepalive_ms_ - idle);
    return;
  }
  nghttp2_submit_ping(h2_, NGHTTP2_FLAG_NONE, nullptr);
  read_since_ping_ = false;
  if (channelAlive()) ++channel_.stats_.pings_sent;
  ping_timer_->enable(keepalive_ms_);
  scheduleSend();
}

void Session::onPingTimeout() {
  if (state_ == State::Dead) return;
  if (read_since_ping_) {
    // The PONG is late but the peer is sending (it may be queued behind
    // a large response): alive.
    keepalive_timer_->enable(keepalive_ms_);
    return;
  }
  log::warn("grpc keepalive timeout", {{"target", log::str(target_)}});
  if (channelAlive()) {
    ++channel_.stats_.keepalive_timeouts;
    ++channel_.stats_.connections_lost;
  }
  stop(kUnavailable, "grpc: keepalive timeout: no PING ACK from " + target_ + " within " +
                         std::to_string(keepalive_ms_) + " ms");
}

void Session::stop(int status, const std::string& reason) {
  if (state_ == State::Dead) return;
  bool was_connected = state_ != State::Connecting;
  state_ = State::Dead;
  attempt_timer_->disable();
  if (keepalive_timer_) keepalive_timer_->disable();
  if (ping_timer_) ping_timer_->disable();
  abandonResolve();
  closeConnection();
  // Held here: a callback below may drop the caller's handle on a call.
  std::vector<std::shared_ptr<Call>> calls;
  calls.swap(pending_);
  // streams_ stays: nghttp2 (if inside a callback now) may still look
  // calls up by stream id until this session is deleted.
  for (auto& [id, c] : streams_) calls.push_back(c);
  for (auto& c : calls) c->session = nullptr;
  if (channelAlive()) {
    if (was_connected && !calls.empty()) {
      log::warn("grpc connection lost",
                {{"target", log::str(target_)},
                 {"error", log::str(reason)},
                 {"calls", log::num(static_cast<long long>(calls.size()))}});
    }
    // First let the Channel forget this session, so a callback below that
    // starts a call gets a new connection.
    channel_.onSessionDead(this);
  }
  for (auto& c : calls) {
    if (channelAlive()) {
      c->end(status, reason);
    } else {
      // The Channel is gone (destroyed before, or by a callback above):
      // silence; the call is inert from here on.
      c->callbacks = nullptr;
    }
  }
}

}  // namespace detail

}  // namespace eldric::grpc
