#include "dataplane/http/conn_manager.h"

#include <algorithm>

#include "common/log.h"
#include "dataplane/common/random.h"
#include "dataplane/http/http1_server_codec.h"
#include "dataplane/http/path.h"

namespace eldric::http {
namespace {

// Pipelined requests buffered beyond this stop reading from the client.
constexpr size_t kMaxPipelinedBytes = 64 * 1024;

bool validRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == ':';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------
// ActiveStream

ActiveStream::ActiveStream(ConnectionManager& cm, ResponseEncoder& encoder)
    : cm_(cm),
      context_(cm.context()),
      encoder_(encoder),
      config_(cm.context().holdCurrentConfig()) {
  info_.start_ns = Dispatcher::monotonicNs();
  context_.countActiveRequest(1);
}

ActiveStream::~ActiveStream() {
  destroyFilters();
  // Before this stream's request and info go: a filter's destructor may
  // still look at them.
  releaseFilters();
  // The worker outlives its streams; the manager may not (deferred deletes).
  context_.countActiveRequest(-1);
}

Dispatcher& ActiveStream::dispatcher() { return cm_.context().dispatcher(); }
const std::string& ActiveStream::peerIp() { return cm_.connection_->peerIp(); }
const std::string& ActiveStream::peerCertificateSubject() {
  return cm_.connection_->peerCertificateSubject();
}
std::string_view ActiveStream::scheme() { return cm_.tls() ? "https" : "http"; }
std::string_view ActiveStream::routeName() const {
  return route_ ? std::string_view(route_->name) : "none";
}

void ActiveStream::decodeHeaders(RequestHeadersPtr headers, bool end_stream) {
  request_ = std::move(headers);
  setRequestComplete(end_stream);
  info_.request_headers_done_ns = Dispatcher::monotonicNs();
  std::optional<std::string_view> rid = request_->headers.get("x-request-id");
  if (rid && validRequestId(*rid)) {
    info_.request_id = *rid;
  } else {
    info_.request_id = random::uuid();
    request_->headers.set("x-request-id", info_.request_id);
  }

  // One spelling of each path: routes match it and routers receive it.
  if (request_->path != "*") {
    std::string normal;
    const char* reason = "";
    switch (normalizePath(request_->path, &normal, &reason)) {
      case PathResult::Unchanged:
        break;
      case PathResult::Normalized:
        request_->path = std::move(normal);
        break;
      case PathResult::Invalid:
        cm_.codec_->setCloseAfterResponse();
        sendLocalReply(ErrorReply{400, reason, "invalid_request_error", "bad_request_target"});
        return;
    }
  }

  const auto& listener = cm_.listener();
  // ACME HTTP-01 (RFC 8555 section 8.3) on a plaintext port, before its
  // redirect: the CA must read the answer over http, on whichever member
  // its connection reaches.
  static constexpr std::string_view kAcmePrefix = "/.well-known/acme-challenge/";
  if (!listener.secure && request_->pathOnly().substr(0, kAcmePrefix.size()) == kAcmePrefix &&
      (request_->method == "GET" || request_->method == "HEAD")) {
    std::string_view token = request_->pathOnly().substr(kAcmePrefix.size());
    if (const std::string* answer = config_->acmeKeyAuthorization(token)) {
      sendLocalBody(200, "application/octet-stream", *answer);
    } else {
      sendLocalReply(ErrorReply{404, "no ACME challenge with this token", "invalid_request_error",
                                "not_found"});
    }
    return;
  }
  if (listener.redirect_to_https) {
    std::string host;
    if (std::optional<std::string_view> h = request_->headers.get("host")) host = *h;
    // The Location is built from the Host only once it is a plain host
    // and port: nothing a client sends may turn it into another URL.
    if (!host.empty() && !validHost(host)) {
      sendLocalReply(ErrorReply{400, "invalid Host header", "invalid_request_error", "bad_host"});
      return;
    }
    // Drop a port from Host ("example.com:80"); keep IPv6 brackets.
    size_t colon = host.rfind(':');
    if (colon != std::string::npos && host.find(']', colon) == std::string::npos)
      host.resize(colon);
    if (host.empty()) host = "localhost";
    std::string location = "https://" + host;
    if (listener.redirect_port != 443) location += ":" + std::to_string(listener.redirect_port);
    location += request_->path;
    ErrorReply reply{308, "this server requires HTTPS: " + location, "invalid_request_error",
                     "https_required"};
    sendLocalReply(reply, [&location](ResponseHeaders& h) { h.headers.add("location", location); });
    return;
  }

  bool wrong_method = false;
  route_ = config_->match(request_->pathOnly(), request_->method, &wrong_method);
  if (!route_) {
    sendLocalReply(ErrorReply{404, "no route for " + std::string(request_->pathOnly()),
                              "invalid_request_error", "not_found"});
    return;
  }
  if (wrong_method) {
    std::string allow = route_->allowedMethods();
    sendLocalReply(ErrorReply{405,
                              "method " + request_->method + " is not allowed on " + route_->path +
                                  " (allowed: " + allow + ")",
                              "invalid_request_error", "method_not_allowed"},
                   [&allow](ResponseHeaders& h) { h.headers.add("allow", allow); });
    return;
  }
  if (route_->to_upstream) {
    // Shed before any work: a router request is the expensive kind, and a
    // prompt 503 is kinder than a slow timeout. Health and metrics still
    // answer, so the load balancer can see why.
    if (const char* why = cm_.context().overloaded()) {
      sendLocalReply(
          ErrorReply{503, std::string("the Edge is overloaded (") + why + "); retry shortly",
                     "server_error", "overloaded"},
          [](ResponseHeaders& h) { h.headers.add("retry-after", "1"); });
      return;
    }
  }
  if (route_->filter_chain.empty()) {
    sendLocalReply(
        ErrorReply{500, "route " + route_->name + " has no handler", "server_error", "no_handler"});
    return;
  }
  for (const auto& factory : route_->filter_chain) factory(*this);
  runDecodeHeaders(end_stream);
}

void ActiveStream::decodeData(Buffer& data, bool end_stream) { runDecodeData(data, end_stream); }

void ActiveStream::onCodecError(const CodecError& error) {
  ErrorReply reply{error.status, error.message, defaultErrorType(error.status), error.code};
  if (!request_) request_ = std::make_unique<RequestHeaders>();
  sendLocalReply(reply);
}

void ActiveStream::writeHeaders(ResponseHeaders& headers, bool end_stream) {
  // Every answer on an HTTPS listener that asks for it, the Edge's own and
  // an upstream's alike (RFC 6797: the header means nothing over HTTP).
  const std::string& hsts = cm_.listener().hsts;
  if (!hsts.empty()) headers.headers.set("strict-transport-security", hsts);
  encoder_.encodeHeaders(headers, end_stream);
}

void ActiveStream::writeData(Buffer& data, bool end_stream) {
  encoder_.encodeData(data, end_stream);
}

// The codec closes the connection; the manager finishes the stream.
void ActiveStream::abortResponse() { encoder_.abort(); }

void ActiveStream::send100Continue() { encoder_.encode100Continue(); }

void ActiveStream::readDisableConnection(bool disable) { cm_.connection_->readDisable(disable); }

bool ActiveStream::connectionAboveHighWatermark() { return cm_.connection_->aboveHighWatermark(); }

void ActiveStream::closeConnectionAfterResponse() { cm_.codec_->setCloseAfterResponse(); }

void ActiveStream::onConnectionClosed() {
  if (!responseComplete() && info_.error_code.empty()) info_.error_code = "client_disconnected";
  destroyFilters();
}

// ---------------------------------------------------------------------------
// ConnectionManager

ConnectionManager::ConnectionManager(ConnectionManagerContext& context,
                                     network::Connection* connection, const ListenerInfo& listener,
                                     bool tls)
    : context_(context), connection_(connection), listener_(listener), tls_(tls) {
  connection_->setCallbacks(this);
  codec_ = std::make_unique<Http1ServerCodec>(*connection_, *this,
                                              context_.currentConfig().codec_limits);
  auto& st = context_.stats();
  st.downstream_cx_total.inc();
  st.downstream_cx_active.inc();
  timer_ = context_.dispatcher().createTimer([this] { onTimer(); });
  // The header timeout also covers the TLS handshake and the wait for the
  // first request: a connection that sends nothing is closed.
  timer_kind_ = TimerKind::Header;
  timer_->enable(context_.currentConfig().header_timeout_ms);
}

ConnectionManager::~ConnectionManager() = default;

void ConnectionManager::onData(Buffer& data) {
  input_.move(data);
  processInput();
}

void ConnectionManager::processInput() {
  if (closed_ || dispatching_ || awaiting_drain_) return;
  dispatching_ = true;
  codec_->dispatch(input_);
  dispatching_ = false;
  if (closed_) return;
  if (input_.length() > kMaxPipelinedBytes && !read_paused_for_pipeline_) {
    // Stop reading until the current response is done; the bytes already
    // here are enough to go on with.
    read_paused_for_pipeline_ = true;
    connection_->readDisable(true);
  }
  armTimers();
}

uint64_t ConnectionManager::maxBodyBytes(const RequestHeaders& request, uint64_t default_limit) {
  // The route as the raw path names it: a path that normalizes to another
  // route gets the default (the stricter way to be wrong).
  bool wrong_method = false;
  const Route* route =
      context_.currentConfig().match(request.pathOnly(), request.method, &wrong_method);
  if (route && !wrong_method && route->max_body_bytes > default_limit) return route->max_body_bytes;
  return default_limit;
}

uint64_t ConnectionManager::bodyTimeoutMs() {
  // The route may allow its bodies longer (a tunnelled worker's answer).
  const Route* route = stream_ ? stream_->route() : nullptr;
  if (route && route->body_timeout_ms) return route->body_timeout_ms;
  return context_.currentConfig().body_timeout_ms;
}

void ConnectionManager::armTimers() {
  if (closed_) return;
  const auto& cfg = context_.currentConfig();
  if (codec_->readingHeaders() || codec_->discardingBody() ||
      (tls_ && !connection_->tlsHandshakeDone())) {
    if (timer_kind_ != TimerKind::Header) {
      timer_kind_ = TimerKind::Header;
      timer_->enable(cfg.header_timeout_ms);
    }
  } else if (codec_->readingBody() && stream_ && !stream_->responseStarted()) {
    // From the end of the headers to the end of the body: a client that
    // stops sending mid-body is answered 408, not held forever.
    if (timer_kind_ != TimerKind::Body) {
      timer_kind_ = TimerKind::Body;
      timer_->enable(bodyTimeoutMs());
    }
  } else if (codec_->streamActive() || stream_) {
    timer_kind_ = TimerKind::None;
    timer_->disable();
  } else if (timer_kind_ != TimerKind::Idle) {
    timer_kind_ = TimerKind::Idle;
    timer_->enable(cfg.idle_timeout_ms);
  }
}

void ConnectionManager::onTimer() {
  if (closed_) return;
  if (timer_kind_ == TimerKind::Header) {
    context_.stats().header_timeouts.inc();
    if (codec_->readingHeaders()) {
      // A slow client (one byte a second): answer 408 and close.
      codec_->setCloseAfterResponse();
      auto* encoder = dynamic_cast<ResponseEncoder*>(codec_.get());
      stream_ = std::make_unique<ActiveStream>(*this, *encoder);
      stream_->onCodecError(
          CodecError{408,
                     "request headers not received within " +
                         std::to_string(context_.currentConfig().header_timeout_ms) + " ms",
                     "header_timeout"});
      if (!closed_) closeConnection(network::CloseType::FlushWrite);
      return;
    }
  }
  if (timer_kind_ == TimerKind::Body && stream_ && codec_->readingBody()) {
    context_.stats().body_timeouts.inc();
    codec_->setCloseAfterResponse();
    stream_->onCodecError(CodecError{
        408, "request body not received within " + std::to_string(bodyTimeoutMs()) + " ms",
        "body_timeout"});
    if (!closed_) closeConnection(network::CloseType::FlushWrite);
    return;
  }
  closeConnection(network::CloseType::FlushWrite);
}

RequestDecoder& ConnectionManager::newStream(ResponseEncoder& encoder) {
  timer_kind_ = TimerKind::None;
  timer_->disable();
  stream_ = std::make_unique<ActiveStream>(*this, encoder);
  return *stream_;
}

void ConnectionManager::onCodecError(const CodecError& error, ResponseEncoder& encoder) {
  context_.stats().codec_errors.inc();
  if (stream_ && !stream_->responseComplete()) {
    if (encoder.headersSent()) {
      stream_->resetStream(error.code);
    } else {
      stream_->onCodecError(error);
    }
    return;
  }
  stream_ = std::make_unique<ActiveStream>(*this, encoder);
  stream_->onCodecError(error);
}

void ConnectionManager::onResponseComplete(bool keep_alive) {
  if (stream_) {
    std::unique_ptr<ActiveStream> done = std::move(stream_);
    const StreamInfo& info = done->info();
    uint64_t now = Dispatcher::monotonicNs();
    auto& st = context_.stats();
    size_t route_index = done->route() ? done->route()->stats_index : stats::kMaxRoutes - 1;
    int status = info.status;
    if (!done->responseComplete() && done->info().error_code == "client_disconnected") status = 499;
    if (status >= stats::kMinStatus && status <= stats::kMaxStatus) {
      st.requests[route_index][status - stats::kMinStatus].inc();
    }
    st.latency[route_index].record((now - info.start_ns) / 1000);
    context_.logAccess(done->request(), info, done->routeName());
    done->onConnectionClosed();  // releases filters if still held
    context_.dispatcher().deferredDelete(std::move(done));
  }
  auto& st = context_.stats();
  st.downstream_bytes_rx.inc(connection_->bytesReceived() - bytes_rx_reported_);
  st.downstream_bytes_tx.inc(connection_->bytesSent() - bytes_tx_reported_);
  bytes_rx_reported_ = connection_->bytesReceived();
  bytes_tx_reported_ = connection_->bytesSent();
  if (!keep_alive || context_.draining()) {
    closeConnection(network::CloseType::FlushWrite);
    return;
  }
  if (connection_->aboveHighWatermark()) {
    // The client has not taken this answer yet: the next pipelined request
    // waits until it has (the watermarks a proxied stream obeys), so that
    // a client that sends and never reads holds one answer, not hundreds.
    // The idle timeout runs meanwhile.
    awaiting_drain_ = true;
    if (!read_paused_for_drain_) {
      read_paused_for_drain_ = true;
      connection_->readDisable(true);
    }
    armTimers();
    return;
  }
  resumeInput();
}

void ConnectionManager::resumeInput() {
  if (read_paused_for_drain_) {
    read_paused_for_drain_ = false;
    connection_->readDisable(false);
  }
  if (read_paused_for_pipeline_) {
    read_paused_for_pipeline_ = false;
    connection_->readDisable(false);
  }
  armTimers();
  if (!input_.empty()) {
    // Parse the next pipelined request from a fresh stack, not from inside
    // the response path that just finished.
    if (!resume_timer_)
      resume_timer_ = context_.dispatcher().createTimer([this] { processInput(); });
    resume_timer_->enable(0);
  }
}

void ConnectionManager::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      if (tls_ && !handshake_counted_) {
        handshake_counted_ = true;
        context_.stats().tls_handshakes.inc();
      }
      armTimers();
      break;
    case network::ConnectionEvent::RemoteClose:
      if (tls_ && !connection_->tlsHandshakeDone()) context_.stats().tls_handshake_errors.inc();
      if (stream_) {
        context_.stats().downstream_rq_reset.inc();
        stream_->onConnectionClosed();
        onResponseCompleteAfterClose();
      }
      teardown();
      break;
    case network::ConnectionEvent::LocalClose:
    case network::ConnectionEvent::ConnectFailed:
      break;
  }
}

void ConnectionManager::onResponseCompleteAfterClose() {
  // The client left mid-request: log it (499, nginx's convention) and drop
  // the stream.
  std::unique_ptr<ActiveStream> done = std::move(stream_);
  StreamInfo& info = const_cast<StreamInfo&>(done->info());
  if (!done->responseComplete()) info.status = 499;
  size_t route_index = done->route() ? done->route()->stats_index : stats::kMaxRoutes - 1;
  context_.stats().requests[route_index][info.status - stats::kMinStatus].inc();
  context_.logAccess(done->request(), info, done->routeName());
  context_.dispatcher().deferredDelete(std::move(done));
}

bool ConnectionManager::onRemoteHalfClose() {
  // A client that sent a whole request and then shut down its side (curl
  // with a body from stdin, some load balancers) still gets its answer;
  // the connection closes after it. Anything else is a client gone: a
  // FIN mid-body, or once the answer has begun (a reader that stops a
  // stream closes its socket, and the upstream must stop generating at
  // once rather than at the next failed write).
  if (closed_ || !stream_ || !stream_->requestComplete() || stream_->responseStarted() ||
      stream_->info().half_close_ends_stream)
    return false;
  codec_->setCloseAfterResponse();
  return true;
}

void ConnectionManager::onAboveWriteBufferHighWatermark() {
  if (stream_) stream_->onAboveWriteBufferHighWatermark();
}

void ConnectionManager::onBelowWriteBufferLowWatermark() {
  if (stream_) stream_->onBelowWriteBufferLowWatermark();
  if (awaiting_drain_ && !closed_) {
    awaiting_drain_ = false;
    resumeInput();
  }
}

void ConnectionManager::startDrain() {
  if (closed_) return;
  codec_->setCloseAfterResponse();
  if (!stream_ && !codec_->readingHeaders()) closeConnection(network::CloseType::FlushWrite);
}

bool ConnectionManager::closeIfIdle() {
  if (closed_ || stream_ || codec_->readingHeaders() || !input_.empty()) return false;
  closeConnection(network::CloseType::FlushWrite);
  return true;
}

void ConnectionManager::closeNow() { closeConnection(network::CloseType::NoFlush); }

void ConnectionManager::closeConnection(network::CloseType type) {
  if (closed_) return;
  if (stream_) {
    stream_->onConnectionClosed();
    onResponseCompleteAfterClose();
  }
  connection_->close(type);
  teardown();
}

void ConnectionManager::teardown() {
  if (closed_) return;
  closed_ = true;
  timer_->disable();
  if (resume_timer_) resume_timer_->disable();
  auto& st = context_.stats();
  st.downstream_cx_active.dec();
  st.downstream_bytes_rx.inc(connection_->bytesReceived() - bytes_rx_reported_);
  st.downstream_bytes_tx.inc(connection_->bytesSent() - bytes_tx_reported_);
  if (on_closed) on_closed(this);
  context_.dispatcher().deferredDelete(std::unique_ptr<DeferredDeletable>(this));
}

}  // namespace eldric::http
