#include "dataplane/router/router.h"

#include "common/log.h"

namespace eldric::router {

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
    : context_(context), cluster_(&cluster), timeout_ms_(timeout_ms) {}

RouterFilter::~RouterFilter() { onDestroy(); }

http::FilterHeadersStatus RouterFilter::decodeHeaders(http::RequestHeaders& headers,
                                                      bool end_stream) {
  request_ = &headers;  // owned by the stream, which outlives this filter
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
  http::RequestHeaders& req = *request_;
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
  // Who is calling, in the Edge's words (never the key): the controller
  // and the routers may attribute a request to its client. A client's own
  // x-eldric-client-* headers are never passed on.
  req.headers.removeAll({"x-eldric-client-id", "x-eldric-client-name", "x-eldric-client-scopes"});
  if (const auto& who = callbacks_->streamInfo().identity) {
    req.headers.set("x-eldric-client-id", who->client_id);
    req.headers.set("x-eldric-client-name", who->client_name);
    std::string scopes;
    for (std::string_view name : who->scopeNames()) {
      if (!scopes.empty()) scopes += ',';
      scopes += name;
    }
    req.headers.set("x-eldric-client-scopes", scopes);
  }
  if (!request_body_.empty() || req.content_length || req.chunked) {
    req.headers.set("content-length", std::to_string(request_body_.length()));
  }

  timeout_ = callbacks_->dispatcher().createTimer([this] { onTimeout(); });
  timeout_->enable(timeout_ms_);
  callbacks_->addDownstreamWatermarkCallbacks(*this);
  attempt();
}

void RouterFilter::attempt() {
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
  ++attempts_;
  auto& info = callbacks_->streamInfo();
  info.attempts = attempts_;
  info.upstream_host = host_->url();
  host_->in_flight.fetch_add(1, std::memory_order_relaxed);
  host_->requests_total.fetch_add(1, std::memory_order_relaxed);
  context_.stats->upstream_rq_total.inc();

  if (upstream_) {
    // The failed attempt's exchange may still be on the stack (this runs
    // from its failure callback): it goes with the next loop turn.
    upstream_->reset();
    callbacks_->dispatcher().deferredDelete(std::move(upstream_));
  }
  upstream_ = context_.upstreams->newRequest(*cluster_, host_, *this);
  // The client was already behind when the router registered (or fell
  // behind during an earlier attempt): this exchange starts paused too.
  if (downstream_above_high_) upstream_->readDisable(true);
  bool has_body = !request_body_.empty();
  upstream_->encodeHeaders(*request_, !has_body);
  if (has_body) {
    Buffer body;
    request_body_.copyRefsTo(body, request_body_.length());
    upstream_->encodeData(body, true);
  }
}

void RouterFilter::releaseHost() {
  if (host_) {
    host_->in_flight.fetch_sub(1, std::memory_order_relaxed);
    host_.reset();
  }
}

void RouterFilter::onUpstreamFailure(upstream::UpstreamFailure failure,
                                     const std::string& message) {
  if (done_) return;
  switch (failure) {
    case upstream::UpstreamFailure::ConnectFailed:
      onAttemptFailed(true, "upstream_unavailable", message);
      return;
    case upstream::UpstreamFailure::ClosedBeforeResponse:
      onAttemptFailed(false, "upstream_closed", message);
      return;
    case upstream::UpstreamFailure::BadResponse:
      recordHostFailure(*host_);
      if (!response_started_) {
        failBeforeResponse(http::ErrorReply{502, message, "server_error", "bad_upstream_response"});
        return;
      }
      onUpstreamBrokeMidResponse(message);
      return;
    case upstream::UpstreamFailure::Reset:
      onUpstreamBrokeMidResponse(message);
      return;
  }
}

void RouterFilter::onAttemptFailed(bool connect_failure, const char* code,
                                   const std::string& message) {
  if (done_) return;
  upstream::Host* h = host_.get();
  bool was_reused = upstream_ && upstream_->reusedConnection();
  closeUpstream();
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

void RouterFilter::onUpstreamHeaders(http::ResponseHeadersPtr headers, bool end_stream) {
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
  if (end_stream) finishAttempt();
  callbacks_->encodeHeaders(std::move(headers), end_stream);
}

void RouterFilter::onUpstreamData(Buffer& data, bool end_stream) {
  if (done_) {
    data.clear();
    return;
  }
  if (end_stream) finishAttempt();
  callbacks_->encodeData(data, end_stream);
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
  if (upstream_) upstream_->reset();
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

void RouterFilter::finishAttempt() {
  done_ = true;
  if (timeout_) timeout_->disable();
  releaseHost();
}

void RouterFilter::onAboveWriteBufferHighWatermark() {
  // The client reads slower than the upstream writes: stop reading the
  // upstream so that nothing piles up here (TCP pushes back to it).
  downstream_above_high_ = true;
  if (upstream_) upstream_->readDisable(true);
}

void RouterFilter::onBelowWriteBufferLowWatermark() {
  downstream_above_high_ = false;
  if (upstream_) upstream_->readDisable(false);
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
