#include "dataplane/upstream/http1_upstream.h"

namespace eldric::upstream {

Http1Upstream::Http1Upstream(Http1UpstreamFactory& factory, const ClusterInfo& cluster,
                             HostSharedPtr host, UpstreamCallbacks& callbacks)
    : factory_(factory),
      cluster_(cluster),
      host_(std::move(host)),
      callbacks_(callbacks),
      codec_(*this) {
  conn_ = factory_.pool(cluster_.index).acquire(host_);
  if (conn_) {
    reused_ = true;
    connected_ = true;
    conn_->setCallbacks(this);
  } else {
    connect();
  }
}

Http1Upstream::~Http1Upstream() { reset(); }

void Http1Upstream::connect() {
  factory_.stats_.upstream_cx_total.inc();
  address_index_ = host_->addressIndex();
  ++addresses_tried_;
  connected_ = false;
  conn_ = network::Connection::connect(factory_.dispatcher_, host_->address(address_index_),
                                       cluster_.connect_timeout_ms, network::ConnectionOptions());
  conn_->setCallbacks(this);
}

void Http1Upstream::encodeHeaders(const http::RequestHeaders& headers, bool end_stream) {
  codec_.beginResponse(headers.method == "HEAD");
  Buffer head;
  http::Http1ClientCodec::encodeRequestHead(headers, head);
  write(head);
  (void)end_stream;  // the head says how long the body is (Content-Length)
}

void Http1Upstream::encodeData(Buffer& data, bool) { write(data); }

void Http1Upstream::write(Buffer& data) {
  if (done_ || !conn_) {
    data.clear();
    return;
  }
  if (connected_) {
    conn_->write(data);
  } else {
    // Sent once connected (the connection would only queue it until then).
    pending_.move(data);
  }
}

void Http1Upstream::readDisable(bool disable) {
  if (!conn_ || disable == read_disabled_) return;
  read_disabled_ = disable;
  conn_->readDisable(disable);
}

void Http1Upstream::reset() {
  done_ = true;
  pending_.clear();
  if (conn_) {
    network::Connection* conn = conn_;
    conn_ = nullptr;
    conn->close(network::CloseType::NoFlush);
  }
}

void Http1Upstream::onData(Buffer& data) {
  if (done_) {
    data.clear();
    return;
  }
  codec_.dispatch(data);
}

void Http1Upstream::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      connected_ = true;
      if (!pending_.empty()) conn_->write(pending_);
      return;
    case network::ConnectionEvent::ConnectFailed:
      conn_ = nullptr;
      if (done_) return;
      factory_.stats_.upstream_cx_connect_fail.inc();
      // The host's next address, if it has one not tried by this request:
      // not a failure of the host, and not a retry (nothing was sent).
      if (host_->tryNextAddress(address_index_) && addresses_tried_ < host_->addresses().size()) {
        connect();
        return;
      }
      fail(UpstreamFailure::ConnectFailed, "could not connect to upstream " + host_->url());
      return;
    case network::ConnectionEvent::RemoteClose:
      conn_ = nullptr;
      if (done_) return;
      if (!codec_.responseStarted()) {
        fail(UpstreamFailure::ClosedBeforeResponse,
             "upstream " + host_->url() + " closed the connection before responding");
        return;
      }
      if (codec_.onEof()) return;  // a close-delimited body ended
      if (!headers_delivered_) {
        fail(UpstreamFailure::BadResponse,
             "upstream " + host_->url() +
                 " closed the connection in the middle of its response headers");
        return;
      }
      fail(UpstreamFailure::Reset, "upstream closed the connection mid-response");
      return;
    case network::ConnectionEvent::LocalClose:
      return;
  }
}

void Http1Upstream::onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) {
  if (done_) return;
  headers_delivered_ = true;
  if (end_stream) release();
  callbacks_.onUpstreamHeaders(std::move(headers), end_stream);
}

void Http1Upstream::onResponseData(Buffer& data, bool end_stream) {
  if (done_) {
    data.clear();
    return;
  }
  if (end_stream) release();
  callbacks_.onUpstreamData(data, end_stream);
}

void Http1Upstream::onResponseError(const std::string& reason) {
  if (done_) return;
  fail(UpstreamFailure::BadResponse, reason);
}

void Http1Upstream::release() {
  done_ = true;
  if (!conn_) return;  // a close-delimited body: the connection is gone
  network::Connection* conn = conn_;
  conn_ = nullptr;
  if (codec_.keepAlive() && conn->readEnabled()) {
    factory_.pool(cluster_.index)
        .release(host_, conn, cluster_.max_idle_per_host, cluster_.idle_connection_timeout_ms);
  } else {
    conn->close(network::CloseType::NoFlush);
  }
}

void Http1Upstream::fail(UpstreamFailure failure, const std::string& message) {
  reset();
  callbacks_.onUpstreamFailure(failure, message);
}

UpstreamRequestPtr Http1UpstreamFactory::newRequest(const ClusterInfo& cluster,
                                                    const HostSharedPtr& host,
                                                    UpstreamCallbacks& callbacks) {
  return std::make_unique<Http1Upstream>(*this, cluster, host, callbacks);
}

ConnPool& Http1UpstreamFactory::pool(uint32_t cluster_index) {
  while (pools_.size() <= cluster_index) {
    pools_.push_back(std::make_unique<ConnPool>(dispatcher_));
  }
  return *pools_[cluster_index];
}

void Http1UpstreamFactory::onClusters(const std::vector<ClusterInfoSharedPtr>& clusters) {
  // Indexes are stable across reloads: a removed cluster's pool stays
  // (empty once its hosts are retired).
  for (const auto& c : clusters) pool(c->index);
  for (auto& p : pools_) p->dropRetired();
}

}  // namespace eldric::upstream
