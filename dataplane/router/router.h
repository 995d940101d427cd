#pragma once

// The router: the terminal filter that proxies a request to a cluster.
// It takes the whole request body first (as nginx's proxy_request_buffering
// does: nothing reaches an upstream until the request is complete and
// valid, and a failed connect can be retried elsewhere), then streams the
// response back as it arrives, with backpressure from a slow client.

#include <memory>

#include "dataplane/http/filter.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/upstream_request.h"

namespace eldric::router {

// Per-worker state the router needs.
struct RouterContext {
  // Makes the exchanges with the cluster's hosts (HTTP/1.1 over pooled TCP
  // connections today; a tunnel's or HTTP/2's factory is chosen here by
  // the cluster's kind once those exist).
  upstream::UpstreamFactory* upstreams;
  stats::WorkerStats* stats;
};

// Where a worker keeps its RouterContext (FilterChainBuilder::workerLocals).
inline constexpr http::FilterStateKey<RouterContext> kRouterContextKey{"router.context"};

// The router's factory for a route to `cluster`, with the route's whole
// request deadline.
http::FilterFactory makeFactory(upstream::ClusterInfoSharedPtr cluster, uint64_t timeout_ms);

class RouterFilter : public http::StreamDecoderFilter,
                     public upstream::UpstreamCallbacks,
                     public http::DownstreamWatermarkCallbacks {
 public:
  RouterFilter(RouterContext& context, const upstream::ClusterInfo& cluster, uint64_t timeout_ms);
  ~RouterFilter() override;

  // StreamDecoderFilter
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

  // upstream::UpstreamCallbacks
  void onUpstreamHeaders(http::ResponseHeadersPtr headers, bool end_stream) override;
  void onUpstreamData(Buffer& data, bool end_stream) override;
  void onUpstreamFailure(upstream::UpstreamFailure failure, const std::string& message) override;

  // http::DownstreamWatermarkCallbacks
  void onAboveWriteBufferHighWatermark() override;
  void onBelowWriteBufferLowWatermark() override;

 private:
  void start();
  // An attempt on a host chosen now.
  void attempt();
  // The attempt failed before any response byte: retry or answer.
  void onAttemptFailed(bool connect_failure, const char* code, const std::string& message);
  void onUpstreamBrokeMidResponse(const std::string& message);
  void onTimeout();
  // Abandons the exchange in progress, if any (its connection is closed,
  // not reused).
  void closeUpstream();
  // Ends the attempt and answers the client with `reply` (nothing of the
  // upstream's answer was sent yet).
  void failBeforeResponse(const http::ErrorReply& reply);
  // Counts a failure of `host` for outlier ejection (now_ms 0: now).
  void recordHostFailure(upstream::Host& host, uint64_t now_ms = 0);
  // The response completed: the deadline is off, the host released.
  void finishAttempt();
  void releaseHost();

  RouterContext& context_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
  const upstream::ClusterInfo* cluster_;
  uint64_t timeout_ms_;
  // The stream's request headers, rewritten for the upstream by start().
  http::RequestHeaders* request_ = nullptr;
  Buffer request_body_;  // shared by reference with every attempt
  upstream::UpstreamRequestPtr upstream_;
  upstream::HostSharedPtr host_;
  upstream::Host* failed_host_ = nullptr;
  bool response_started_ = false;  // headers passed to the client side
  bool response_sse_ = false;
  // The client's connection is above its write high watermark.
  bool downstream_above_high_ = false;
  bool done_ = false;
  uint32_t attempts_ = 0;
  uint32_t stale_retries_ = 0;
  TimerPtr timeout_;
};

}  // namespace eldric::router
