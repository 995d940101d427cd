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
  // The worker outlives its streams; the manager may not (deferred deletes).
  context_.countActiveRequest(-1);
}

Dispatcher& ActiveStream::dispatcher() { return cm_.context().dispatcher(); }
const std::string& ActiveStream::peerIp() { return cm_.connection_->peerIp(); }
std::string_view ActiveStream::scheme() { return cm_.tls() ? "https" : "http"; }
std::string_view ActiveStream::routeName() const {
  return route_ ? std::string_view(route_->name) : "none";
}

void ActiveStream::decodeHeaders(RequestHeadersPtr headers, bool end_stream) {
  request_ = std::move(headers);
  request_complete_ = end_stream;
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
  iterateDecodeHeaders(0);
}

void ActiveStream::addDecoderFilter(StreamDecoderFilterPtr filter) {
  filter->setDecoderFilterCallbacks(*this);
  decoders_.push_back(filter.get());
  owned_decoders_.push_back(std::move(filter));
}

void ActiveStream::addEncoderFilter(StreamEncoderFilterPtr filter) {
  filter->setEncoderFilterCallbacks(*this);
  // Encoders run in reverse order of addition (the last added is nearest
  // to the upstream, as in Envoy).
  encoders_.insert(encoders_.begin(), filter.get());
  owned_encoders_.push_back(std::move(filter));
}

void ActiveStream::addStreamFilter(std::shared_ptr<StreamDecoderFilter> decoder,
                                   std::shared_ptr<StreamEncoderFilter> encoder) {
  decoder->setDecoderFilterCallbacks(*this);
  encoder->setEncoderFilterCallbacks(*this);
  decoders_.push_back(decoder.get());
  encoders_.insert(encoders_.begin(), encoder.get());
  owned_shared_.push_back(std::move(decoder));
  owned_shared_.push_back(std::move(encoder));
}

void ActiveStream::iterateDecodeHeaders(size_t from) {
  for (size_t i = from; i < decoders_.size(); ++i) {
    bool end = request_complete_ && decode_buffered_.empty();
    FilterHeadersStatus st = decoders_[i]->decodeHeaders(*request_, end);
    if (decode_done_ || destroyed_) return;
    if (st == FilterHeadersStatus::StopIteration) {
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = true;
      return;
    }
  }
}

void ActiveStream::decodeData(Buffer& data, bool end_stream) {
  info_.request_body_bytes += data.length();
  request_complete_ = end_stream;
  if (decode_done_ || destroyed_) {
    data.clear();
    return;
  }
  if (decode_stopped_at_ != kNone && decode_stopped_in_headers_) {
    // The stopped filter has not seen the headers through; filters before
    // it get the data now, the rest waits for continueDecoding().
    iterateDecodeData(0, data, end_stream);
    return;
  }
  iterateDecodeData(0, data, end_stream);
}

void ActiveStream::iterateDecodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < decoders_.size(); ++i) {
    if (i == decode_stopped_at_) {
      decode_buffered_.move(data);
      if (decode_buffering_ && end_stream) {
        // The buffering filter gets its whole body now.
        decode_stopped_at_ = kNone;
        decode_buffering_ = false;
        FilterDataStatus st = decoders_[i]->decodeData(decode_buffered_, true);
        if (decode_done_ || destroyed_) return;
        if (st == FilterDataStatus::Continue) {
          Buffer body;
          body.move(decode_buffered_);
          iterateDecodeData(i + 1, body, true);
        } else {
          decode_stopped_at_ = i;  // resumes with continueDecoding()
        }
      }
      return;
    }
    FilterDataStatus st = decoders_[i]->decodeData(data, end_stream);
    if (decode_done_ || destroyed_) return;
    if (st == FilterDataStatus::Continue) continue;
    if (st == FilterDataStatus::StopIterationAndBuffer) {
      decode_buffered_.move(data);
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = !end_stream;
      return;
    }
    // StopIterationNoBuffer: the filter took the data.
    if (end_stream) {
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = false;
    }
    return;
  }
}

void ActiveStream::continueDecoding() {
  if (decode_stopped_at_ == kNone || decode_done_ || destroyed_) return;
  size_t i = decode_stopped_at_;
  bool in_headers = decode_stopped_in_headers_;
  decode_stopped_at_ = kNone;
  decode_stopped_in_headers_ = false;
  decode_buffering_ = false;
  if (in_headers) {
    iterateDecodeHeaders(i + 1);
    if (decode_done_ || destroyed_ || decode_stopped_at_ != kNone) return;
    if (!decode_buffered_.empty()) {
      Buffer body;
      body.move(decode_buffered_);
      iterateDecodeData(i, body, request_complete_);
    }
    return;
  }
  Buffer body;
  body.move(decode_buffered_);
  iterateDecodeData(i + 1, body, request_complete_);
}

void ActiveStream::sendLocalReply(const ErrorReply& reply,
                                  const std::function<void(ResponseHeaders&)>& extra) {
  if (destroyed_) return;
  if (encoder_.headersSent()) {
    resetStream(reply.code);
    return;
  }
  decode_done_ = true;
  local_reply_ = true;
  info_.error_code = reply.code;
  auto headers = std::make_unique<ResponseHeaders>();
  headers->status = reply.status;
  headers->headers.add("content-type", "application/json");
  std::string body = errorBody(
      reply.message, reply.type.empty() ? defaultErrorType(reply.status) : reply.type, reply.code);
  headers->headers.add("content-length", std::to_string(body.size()));
  if (extra) extra(*headers);
  Buffer data;
  data.add(body);
  encodeHeaders(std::move(headers), false);
  if (!destroyed_) encodeData(data, true);
}

void ActiveStream::onCodecError(const CodecError& error) {
  ErrorReply reply{error.status, error.message, defaultErrorType(error.status), error.code};
  if (!request_) request_ = std::make_unique<RequestHeaders>();
  sendLocalReply(reply);
}

void ActiveStream::encodeHeaders(ResponseHeadersPtr headers, bool end_stream) {
  if (destroyed_ || response_headers_encoded_) return;
  response_ = std::move(headers);
  encode_end_seen_ = end_stream;
  iterateEncodeHeaders(0);
}

void ActiveStream::iterateEncodeHeaders(size_t from) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    FilterHeadersStatus st =
        encoders_[i]->encodeHeaders(*response_, encode_end_seen_ && encode_buffered_.empty());
    if (destroyed_) return;
    if (st == FilterHeadersStatus::StopIteration) {
      encode_stopped_at_ = i;
      encode_stopped_in_headers_ = true;
      return;
    }
  }
  response_headers_encoded_ = true;
  writeHeadersToCodec(encode_end_seen_ && encode_buffered_.empty());
  if (!destroyed_ && !encode_buffered_.empty()) {
    Buffer body;
    body.move(encode_buffered_);
    writeDataToCodec(body, encode_end_seen_);
  }
}

void ActiveStream::encodeData(Buffer& data, bool end_stream) {
  if (destroyed_ || response_complete_) {
    data.clear();
    return;
  }
  encode_end_seen_ = end_stream;
  if (encode_stopped_at_ != kNone && encode_stopped_in_headers_) {
    encode_buffered_.move(data);
    return;
  }
  iterateEncodeData(0, data, end_stream);
}

void ActiveStream::iterateEncodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    if (i == encode_stopped_at_) {
      encode_buffered_.move(data);
      if (encode_buffering_ && end_stream) {
        encode_stopped_at_ = kNone;
        encode_buffering_ = false;
        FilterDataStatus st = encoders_[i]->encodeData(encode_buffered_, true);
        if (destroyed_) return;
        if (st == FilterDataStatus::Continue) {
          Buffer body;
          body.move(encode_buffered_);
          iterateEncodeData(i + 1, body, true);
        } else {
          encode_stopped_at_ = i;
        }
      }
      return;
    }
    FilterDataStatus st = encoders_[i]->encodeData(data, end_stream);
    if (destroyed_) return;
    if (st == FilterDataStatus::Continue) continue;
    if (st == FilterDataStatus::StopIterationAndBuffer) {
      encode_buffered_.move(data);
      encode_stopped_at_ = i;
      encode_stopped_in_headers_ = false;
      encode_buffering_ = !end_stream;
      return;
    }
    if (end_stream) encode_stopped_at_ = i;
    return;
  }
  writeDataToCodec(data, end_stream);
}

void ActiveStream::continueEncoding() {
  if (encode_stopped_at_ == kNone || destroyed_) return;
  size_t i = encode_stopped_at_;
  bool in_headers = encode_stopped_in_headers_;
  encode_stopped_at_ = kNone;
  encode_stopped_in_headers_ = false;
  encode_buffering_ = false;
  if (in_headers) {
    iterateEncodeHeaders(i + 1);
    return;
  }
  Buffer body;
  body.move(encode_buffered_);
  iterateEncodeData(i + 1, body, encode_end_seen_);
}

void ActiveStream::injectEncodedData(Buffer& data, bool end_stream) {
  if (destroyed_) return;
  writeDataToCodec(data, end_stream);
}

void ActiveStream::writeHeadersToCodec(bool end_stream) {
  info_.status = response_->status;
  info_.first_byte_sent_ns = Dispatcher::monotonicNs();
  if (!info_.request_id.empty() && !response_->headers.get("x-request-id")) {
    response_->headers.add("x-request-id", info_.request_id);
  }
  if (end_stream) response_complete_ = true;
  encoder_.encodeHeaders(*response_, end_stream);
}

void ActiveStream::writeDataToCodec(Buffer& data, bool end_stream) {
  if (response_complete_) {
    data.clear();
    return;
  }
  info_.response_body_bytes += data.length();
  if (end_stream) response_complete_ = true;
  encoder_.encodeData(data, end_stream);
}

void ActiveStream::continue100() {
  if (request_ && request_->expect_continue && !request_complete_) encoder_.encode100Continue();
}

void ActiveStream::readDisableDownstream(bool disable) {
  if (destroyed_ || disable == read_disabled_) return;
  read_disabled_ = disable;
  cm_.connection_->readDisable(disable);
}

void ActiveStream::addDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks_.push_back(&cb);
  // A client already behind: tell the newcomer at once.
  if (cm_.connection_->aboveHighWatermark()) cb.onAboveWriteBufferHighWatermark();
}

void ActiveStream::removeDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks_.erase(
      std::remove(watermark_callbacks_.begin(), watermark_callbacks_.end(), &cb),
      watermark_callbacks_.end());
}

void ActiveStream::onAboveWriteBufferHighWatermark() {
  for (auto* cb : watermark_callbacks_) cb->onAboveWriteBufferHighWatermark();
}

void ActiveStream::onBelowWriteBufferLowWatermark() {
  for (auto* cb : watermark_callbacks_) cb->onBelowWriteBufferLowWatermark();
}

void ActiveStream::closeConnectionAfterResponse() { cm_.codec_->setCloseAfterResponse(); }

void ActiveStream::resetStream(std::string_view reason) {
  if (destroyed_) return;
  if (info_.error_code.empty()) info_.error_code = std::string(reason);
  decode_done_ = true;
  destroyFilters();
  // The codec closes the connection; the manager finishes the stream.
  encoder_.abort();
}

void ActiveStream::onConnectionClosed() {
  if (!response_complete_ && info_.error_code.empty()) info_.error_code = "client_disconnected";
  destroyFilters();
}

void ActiveStream::destroyFilters() {
  if (destroyed_) return;
  destroyed_ = true;
  watermark_callbacks_.clear();
  if (read_disabled_) {
    read_disabled_ = false;
    // The connection may already be closed; readDisable ignores that.
    cm_.connection_->readDisable(false);
  }
  for (StreamDecoderFilter* f : decoders_) f->onDestroy();
  for (StreamEncoderFilter* f : encoders_) f->onDestroy();
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
      timer_->enable(cfg.body_timeout_ms);
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
    stream_->onCodecError(CodecError{408,
                                     "request body not received within " +
                                         std::to_string(context_.currentConfig().body_timeout_ms) +
                                         " ms",
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
  if (closed_ || !stream_ || !stream_->requestComplete() || stream_->responseStarted())
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
