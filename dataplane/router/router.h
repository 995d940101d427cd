#pragma once

// The router: the terminal filter that proxies a request to a cluster.
// It takes the whole request body first (as nginx's proxy_request_buffering
// does: nothing reaches an upstream until the request is complete and
// valid, and a failed connect can be retried elsewhere), then streams the
// response back as it arrives, with backpressure from a slow client.

#include <memory>

#include "dataplane/http/filter.h"
#include "dataplane/http/http1_client_codec.h"
#include "dataplane/network/connection.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/conn_pool.h"

namespace eldric::router {

// Per-worker state the router needs.
struct RouterContext {
  std::vector<std::unique_ptr<upstream::ConnPool>>* pools;  // by cluster index
  stats::WorkerStats* stats;
  upstream::ConnPool& pool(uint32_t cluster_index);
};

// Where a worker keeps its RouterContext (FilterChainBuilder::workerLocals).
inline constexpr http::FilterStateKey<RouterContext> kRouterContextKey{"router.context"};

// The router's factory for a route to `cluster`, with the route's whole
// request deadline.
http::FilterFactory makeFactory(upstream::ClusterInfoSharedPtr cluster, uint64_t timeout_ms);

class RouterFilter : public http::StreamDecoderFilter,
                     public network::ConnectionCallbacks,
                     public http::ClientCodecCallbacks,
                     public http::DownstreamWatermarkCallbacks {
 public:
  RouterFilter(RouterContext& context, const upstream::ClusterInfo& cluster, uint64_t timeout_ms);
  ~RouterFilter() override;

  // StreamDecoderFilter
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

  // network::ConnectionCallbacks (the upstream connection)
  void onData(Buffer& data) override;
  void onEvent(network::ConnectionEvent event) override;

  // http::ClientCodecCallbacks
  void onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) override;
  void onResponseData(Buffer& data, bool end_stream) override;
  void onResponseError(const std::string& reason) override;

  // http::DownstreamWatermarkCallbacks
  void onAboveWriteBufferHighWatermark() override;
  void onBelowWriteBufferLowWatermark() override;

 private:
  void start();
  // An attempt on `host`, or on a host chosen now when null.
  void attempt(upstream::HostSharedPtr host = nullptr);
  // The attempt failed before any response byte: retry or answer.
  void onAttemptFailed(bool connect_failure, const char* code, const std::string& message);
  void onUpstreamBrokeMidResponse(const std::string& message);
  void onTimeout();
  // Closes the upstream connection, if any, without returning it to a pool.
  void closeUpstream();
  // Ends the attempt and answers the client with `reply` (nothing of the
  // upstream's answer was sent yet).
  void failBeforeResponse(const http::ErrorReply& reply);
  // Counts a failure of `host` for outlier ejection (now_ms 0: now).
  void recordHostFailure(upstream::Host& host, uint64_t now_ms = 0);
  void finishUpstream(bool reusable);
  void releaseHost();

  RouterContext& context_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
  const upstream::ClusterInfo* cluster_;
  uint64_t timeout_ms_;
  Buffer request_head_;
  Buffer request_body_;
  bool request_is_head_ = false;
  http::Http1ClientCodec codec_;
  network::Connection* upstream_ = nullptr;
  upstream::HostSharedPtr host_;
  upstream::Host* failed_host_ = nullptr;
  bool reused_connection_ = false;
  bool response_started_ = false;  // headers passed to the client side
  bool response_sse_ = false;
  bool done_ = false;
  bool upstream_read_disabled_ = false;
  uint32_t attempts_ = 0;
  uint32_t stale_retries_ = 0;
  uint32_t address_index_ = 0;  // of host_, for a connection opened here
  size_t addresses_tried_ = 0;  // of host_ by this request
  TimerPtr timeout_;
};

}  // namespace eldric::router
