#pragma once

// UpstreamRequest over HTTP/1.1 on a plaintext TCP connection, reused from
// the worker's keep-alive pool when one is idle for the host.

#include <memory>
#include <vector>

#include "dataplane/http/http1_client_codec.h"
#include "dataplane/network/connection.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/conn_pool.h"
#include "dataplane/upstream/upstream_request.h"

namespace eldric::upstream {

class Http1UpstreamFactory;

class Http1Upstream : public UpstreamRequest,
                      public network::ConnectionCallbacks,
                      public http::ClientCodecCallbacks {
 public:
  Http1Upstream(Http1UpstreamFactory& factory, const ClusterInfo& cluster, HostSharedPtr host,
                UpstreamCallbacks& callbacks);
  ~Http1Upstream() override;

  // UpstreamRequest
  void encodeHeaders(const http::RequestHeaders& headers, bool end_stream) override;
  void encodeData(Buffer& data, bool end_stream) override;
  void readDisable(bool disable) override;
  void reset() override;
  bool reusedConnection() const override { return reused_; }

  // network::ConnectionCallbacks
  void onData(Buffer& data) override;
  void onEvent(network::ConnectionEvent event) override;

  // http::ClientCodecCallbacks
  void onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) override;
  void onResponseData(Buffer& data, bool end_stream) override;
  void onResponseError(const std::string& reason) override;

 private:
  // Opens a connection to the host's current address.
  void connect();
  void write(Buffer& data);
  // The response completed: the connection goes back to the pool if it
  // can carry another request, else it is closed.
  void release();
  // Ends the exchange with `failure` (the connection, if any, is closed).
  void fail(UpstreamFailure failure, const std::string& message);

  Http1UpstreamFactory& factory_;
  const ClusterInfo& cluster_;
  HostSharedPtr host_;
  UpstreamCallbacks& callbacks_;
  http::Http1ClientCodec codec_;
  network::Connection* conn_ = nullptr;
  // The request, kept until a new connection is up: a host name with
  // several addresses (localhost: ::1 and 127.0.0.1) whose upstream
  // listens on some only gets it again on the next address.
  Buffer pending_;
  bool connected_ = false;
  bool reused_ = false;
  bool headers_delivered_ = false;
  bool done_ = false;  // completed, failed or reset: no more callbacks
  bool read_disabled_ = false;
  uint32_t address_index_ = 0;
  size_t addresses_tried_ = 0;
};

// One per worker: the keep-alive pools (one per cluster, indexed by
// ClusterInfo::index, which is stable across reloads).
class Http1UpstreamFactory : public UpstreamFactory {
 public:
  Http1UpstreamFactory(Dispatcher& dispatcher, stats::WorkerStats& stats)
      : dispatcher_(dispatcher), stats_(stats) {}

  UpstreamRequestPtr newRequest(const ClusterInfo& cluster, const HostSharedPtr& host,
                                UpstreamCallbacks& callbacks) override;

  // A new config's clusters: pools for new ones; idle connections to
  // retired hosts closed.
  void onClusters(const std::vector<ClusterInfoSharedPtr>& clusters);
  // Closes every idle connection (the worker is stopping).
  void clear() { pools_.clear(); }

 private:
  friend class Http1Upstream;
  ConnPool& pool(uint32_t cluster_index);

  Dispatcher& dispatcher_;
  stats::WorkerStats& stats_;
  std::vector<std::unique_ptr<ConnPool>> pools_;
};

}  // namespace eldric::upstream
