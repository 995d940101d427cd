#include "dataplane/router/router.h"

#include "common/log.h"

namespace eldric::router {

upstream::ConnPool& RouterContext::pool(uint32_t cluster_index) {
  while (pools->size() <= cluster_index) pools->push_back(nullptr);
  return *(*pools)[cluster_index];
}

http::FilterFactory makeFactory(upstream::ClusterInfoSharedPtr cluster, uint64_t timeout_ms) {
  // The factory holds the cluster; a filter may point at it because its
  // stream holds the config that holds the factory.
  return [cluster = std::move(cluster), timeout_ms](http::FilterChainBuilder& chain) {
    RouterContext* context = chain.workerLocals().get(kRouterContextKey);
    chain.addDecoderFilter(std::make_unique<RouterFilter>(*context, *cluster, timeout_ms));
  };
}

RouterFilter::RouterFilter(RouterContext& context, const upstream::ClusterInfo& cluster,
                           uint64_t timeout_ms)
    : context_(context), cluster_(&cluster), timeout_ms_(timeout_ms), codec_(*this) {}

RouterFilter::~RouterFilter() { onDestroy(); }

http::FilterHeadersStatus RouterFilter::decodeHeaders(http::RequestHeaders& headers,
                                                      bool end_stream) {
  request_is_head_ = headers.method == "HEAD";
  if (end_stream) {
    start();
    return http::FilterHeadersStatus::StopIteration;
  }
  // The filters before us accepted the request: let a client that waits
  // for "100 Continue" send its body.
  callbacks_->continue100();
  return http::FilterHeadersStatus::Continue;
}

http::FilterDataStatus RouterFilter::decodeData(Buffer& data, bool end_stream) {
  if (!end_stream) return http::FilterDataStatus::StopIterationAndBuffer;
  request_body_.move(data);
  start();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

void RouterFilter::start() {
  http::RequestHeaders& req = const_cast<http::RequestHeaders&>(callbacks_->requestHeaders());
  // What goes upstream: hop-by-hop headers removed, the forwarding facts
  // added. The Edge is the perimeter, so a client's own X-Forwarded-* are
  // replaced, not trusted.
  http::removeHopByHop(req.headers);
  // Credentials meant for the Edge never leave it (every instance, not the
  // first), and what a client says about its own address is not passed on
  // as if the Edge had said it: X-Forwarded-For below is the Edge's word.
  req.headers.removeAll(
      {"authorization", "proxy-authorization", "x-api-key", "cookie", "forwarded", "x-real-ip"});
  std::optional<std::string_view> host = req.headers.get("host");
  if (host) req.headers.set("x-forwarded-host", *host);
  req.headers.set("x-forwarded-for", callbacks_->peerIp());
  req.headers.set("x-forwarded-proto", callbacks_->scheme());
  if (!request_body_.empty() || req.content_length || req.chunked) {
    req.headers.set("content-length", std::to_string(request_body_.length()));
  }
  http::Http1ClientCodec::encodeRequestHead(req, request_head_);

  timeout_ = callbacks_->dispatcher().createTimer([this] { onTimeout(); });
  timeout_->enable(timeout_ms_);
  callbacks_->addDownstreamWatermarkCallbacks(*this);
  attempt();
}

void RouterFilter::attempt(upstream::HostSharedPtr host) {
  if (host) {
    host_ = std::move(host);
  } else {
    uint64_t now = callbacks_->dispatcher().nowMs();
    upstream::Host* chosen = upstream::chooseHost(*cluster_, now, failed_host_);
    if (!chosen) {
      callbacks_->sendLocalReply(http::ErrorReply{503, "no upstream is configured for this route",
                                                  "server_error", "no_upstream"});
      return;
    }
    for (const auto& h : cluster_->hosts) {
      if (h.get() == chosen) host_ = h;
    }
    addresses_tried_ = 0;
  }
  ++attempts_;
  auto& info = callbacks_->streamInfo();
  info.attempts = attempts_;
  info.upstream_host = host_->url();
  host_->in_flight.fetch_add(1, std::memory_order_relaxed);
  host_->requests_total.fetch_add(1, std::memory_order_relaxed);
  context_.stats->upstream_rq_total.inc();

  upstream::ConnPool& pool = context_.pool(cluster_->index);
  upstream_ = pool.acquire(host_);
  reused_connection_ = upstream_ != nullptr;
  if (!upstream_) {
    context_.stats->upstream_cx_total.inc();
    address_index_ = host_->addressIndex();
    ++addresses_tried_;
    upstream_ =
        network::Connection::connect(callbacks_->dispatcher(), host_->address(address_index_),
                                     cluster_->connect_timeout_ms, network::ConnectionOptions());
  }
  upstream_->setCallbacks(this);
  codec_.beginResponse(request_is_head_);
  Buffer out;
  // The head and body are shared by reference with every attempt.
  request_head_.copyRefsTo(out, request_head_.length());
  request_body_.copyRefsTo(out, request_body_.length());
  upstream_->write(out);
}

void RouterFilter::releaseHost() {
  if (host_) {
    host_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    host_.reset();
  }
}

void RouterFilter::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      return;
    case network::ConnectionEvent::ConnectFailed:
      upstream_ = nullptr;
      context_.stats->upstream_cx_connect_fail.inc();
      onAttemptFailed(true, "upstream_unavailable",
                      "could not connect to upstream " + host_->url());
      return;
    case network::ConnectionEvent::RemoteClose: {
      upstream_ = nullptr;
      if (done_) return;
      if (!codec_.responseStarted()) {
        onAttemptFailed(false, "upstream_closed",
                        "upstream " + host_->url() + " closed the connection before responding");
        return;
      }
      if (codec_.onEof()) return;  // a close-delimited body ended
      if (!response_started_) {
        // Gone in the middle of its headers: nothing reached the client
        // yet, so it gets a 502 rather than a bare close.
        onResponseError("upstream " + host_->url() +
                        " closed the connection in the middle of its response headers");
        return;
      }
      onUpstreamBrokeMidResponse("upstream closed the connection mid-response");
      return;
    }
    case network::ConnectionEvent::LocalClose:
      return;
  }
}

void RouterFilter::onAttemptFailed(bool connect_failure, const char* code,
                                   const std::string& message) {
  if (done_) return;
  upstream::Host* h = host_.get();
  bool was_reused = reused_connection_;
  closeUpstream();
  // A host name with several addresses (localhost: ::1 and 127.0.0.1)
  // whose router listens on some only: its next address, on the same
  // attempt. Not the host's failure, and not a retry: nothing was sent.
  if (connect_failure && h->tryNextAddress(address_index_) &&
      addresses_tried_ < h->addresses().size()) {
    upstream::HostSharedPtr same = host_;
    releaseHost();
    --attempts_;
    attempt(std::move(same));
    return;
  }
  // A stale keep-alive connection closed by the upstream while idle is
  // not the host's fault; try a fresh connection (bounded).
  bool stale = !connect_failure && was_reused && stale_retries_ < 2;
  if (!stale) recordHostFailure(*h);
  releaseHost();
  if (stale) {
    ++stale_retries_;
    --attempts_;
    attempt();
    return;
  }
  // Retry on another host only when nothing of the request can have been
  // acted on: the connection never opened.
  if (connect_failure && attempts_ <= cluster_->max_retries && cluster_->hosts.size() > 1) {
    failed_host_ = h;
    context_.stats->upstream_rq_retry.inc();
    attempt();
    return;
  }
  failBeforeResponse(http::ErrorReply{connect_failure ? 503 : 502, message, "server_error", code});
}

void RouterFilter::onData(Buffer& data) { codec_.dispatch(data); }

void RouterFilter::onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) {
  if (done_) return;
  uint64_t now = callbacks_->dispatcher().nowMs();
  if (headers->status >= 500) {
    recordHostFailure(*host_, now);
  } else {
    host_->recordSuccess();
  }
  http::removeHopByHop(headers->headers);
  if (std::optional<std::string_view> ct = headers->headers.get("content-type")) {
    response_sse_ = ct->compare(0, 17, "text/event-stream") == 0;
  }
  callbacks_->streamInfo().upstream_headers_ns = Dispatcher::monotonicNs();
  response_started_ = true;
  if (end_stream) {
    // Hand the connection back before the response completes downstream:
    // completing it destroys this filter, whose onDestroy would otherwise
    // close a perfectly reusable connection.
    done_ = true;
    finishUpstream(codec_.keepAlive());
  }
  callbacks_->encodeHeaders(std::move(headers), end_stream);
}

void RouterFilter::onResponseData(Buffer& data, bool end_stream) {
  if (done_) {
    data.clear();
    return;
  }
  if (end_stream) {
    done_ = true;
    finishUpstream(codec_.keepAlive());  // before completing: see onResponseHeaders
  }
  callbacks_->encodeData(data, end_stream);
}

void RouterFilter::onResponseError(const std::string& reason) {
  if (done_) return;
  recordHostFailure(*host_);
  if (!response_started_) {
    failBeforeResponse(http::ErrorReply{502, reason, "server_error", "bad_upstream_response"});
    return;
  }
  onUpstreamBrokeMidResponse(reason);
}

void RouterFilter::onUpstreamBrokeMidResponse(const std::string& message) {
  if (done_) return;
  done_ = true;
  context_.stats->upstream_rq_reset.inc();
  closeUpstream();
  releaseHost();
  callbacks_->streamInfo().error_code = "upstream_reset";
  if (response_sse_) {
    // End the client's stream cleanly: an error event it can parse, the
    // final chunk, then close.
    Buffer event;
    event.add(http::sseErrorEvent(message + "; the response is incomplete", "server_error",
                                  "upstream_reset"));
    callbacks_->closeConnectionAfterResponse();
    callbacks_->encodeData(event, true);
    return;
  }
  callbacks_->resetStream("upstream_reset");
}

void RouterFilter::onTimeout() {
  if (done_) return;
  context_.stats->upstream_rq_timeout.inc();
  if (!response_started_) {
    failBeforeResponse(http::ErrorReply{504, "upstream did not respond in time", "server_error",
                                        "upstream_timeout"});
    return;
  }
  onUpstreamBrokeMidResponse("request timeout reached");
}

void RouterFilter::closeUpstream() {
  if (upstream_) {
    upstream_->close(network::CloseType::NoFlush);
    upstream_ = nullptr;
  }
}

void RouterFilter::failBeforeResponse(const http::ErrorReply& reply) {
  done_ = true;
  closeUpstream();
  releaseHost();
  callbacks_->sendLocalReply(reply);
}

void RouterFilter::recordHostFailure(upstream::Host& host, uint64_t now_ms) {
  if (!now_ms) now_ms = callbacks_->dispatcher().nowMs();
  host.recordFailure(now_ms, cluster_->outlier_consecutive_failures, cluster_->outlier_ejection_ms);
}

void RouterFilter::finishUpstream(bool reusable) {
  if (timeout_) timeout_->disable();
  if (upstream_) {
    network::Connection* conn = upstream_;
    upstream_ = nullptr;
    if (reusable && conn->readEnabled()) {
      context_.pool(cluster_->index)
          .release(host_, conn, cluster_->max_idle_per_host, cluster_->idle_connection_timeout_ms);
    } else {
      conn->close(network::CloseType::NoFlush);
    }
  }
  releaseHost();
}

void RouterFilter::onAboveWriteBufferHighWatermark() {
  // The client reads slower than the upstream writes: stop reading the
  // upstream so that nothing piles up here (TCP pushes back to it).
  if (upstream_ && !upstream_read_disabled_) {
    upstream_read_disabled_ = true;
    upstream_->readDisable(true);
  }
}

void RouterFilter::onBelowWriteBufferLowWatermark() {
  if (upstream_ && upstream_read_disabled_) {
    upstream_read_disabled_ = false;
    upstream_->readDisable(false);
  }
}

void RouterFilter::onDestroy() {
  if (timeout_) {
    timeout_->disable();
  }
  // The client went away (or the stream was reset): close the upstream
  // connection at once so the cluster stops generating.
  closeUpstream();
  releaseHost();
  done_ = true;
}

}  // namespace eldric::router
