#pragma once

// The HTTP connection manager: one per downstream connection. It owns the
// codec, runs the connection's timers (header read, idle), and for each
// request an ActiveStream that matches a route and drives the filter chain.

#include <list>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/http/codec.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/filter_manager.h"
#include "dataplane/http/route.h"
#include "dataplane/network/connection.h"
#include "dataplane/stats/stats.h"

namespace eldric::http {

// What the manager needs from its worker. Long-lived, one per worker.
class ConnectionManagerContext {
 public:
  virtual ~ConnectionManagerContext() = default;
  virtual Dispatcher& dispatcher() = 0;
  // The worker's current config, read in place (the connection's limits
  // and timers; no reference count taken on every read).
  virtual const RouteConfig& currentConfig() = 0;
  // The same, held: a new stream keeps the config it started with.
  virtual RouteConfigSharedPtr holdCurrentConfig() = 0;
  virtual stats::WorkerStats& stats() = 0;
  // The worker's objects that filter factories look up (see
  // FilterChainBuilder::workerLocals).
  virtual const FilterState& workerLocals() = 0;
  virtual void logAccess(const RequestHeaders* request, const StreamInfo& info,
                         std::string_view route_name) = 0;
  virtual bool draining() = 0;
  // The overload manager's word for a new request to a router: null to
  // admit it, else why it is refused (503).
  virtual const char* overloaded() { return nullptr; }
  // Requests in progress on this process (every worker): +1 as a stream
  // starts, -1 as it is deleted.
  virtual void countActiveRequest(int delta) {}
};

class ConnectionManager;

// One request on the connection: matches the route, builds its filter
// chain (the FilterManager runs it) and hands the response to the codec.
class ActiveStream : public FilterManager, public RequestDecoder, public DeferredDeletable {
 public:
  ActiveStream(ConnectionManager& cm, ResponseEncoder& encoder);
  ~ActiveStream() override;

  // RequestDecoder
  void decodeHeaders(RequestHeadersPtr headers, bool end_stream) override;
  void decodeData(Buffer& data, bool end_stream) override;

  // StreamFilterCallbacks
  Dispatcher& dispatcher() override;
  const Route* route() override { return route_; }
  const RequestHeaders& requestHeaders() override { return *request_; }
  StreamInfo& streamInfo() override { return info_; }
  const std::string& peerIp() override;
  const std::string& peerCertificateSubject() override;
  std::string_view scheme() override;
  void closeConnectionAfterResponse() override;

  // FilterChainBuilder
  const FilterState& workerLocals() override { return context_.workerLocals(); }

  // The client went away or the connection is being torn down.
  void onConnectionClosed();
  // Local reply for a request the codec refused mid-stream.
  void onCodecError(const CodecError& error);
  bool responseStarted() const { return encoder_.headersSent(); }
  const StreamInfo& info() const { return info_; }
  const RequestHeaders* request() const { return request_.get(); }
  std::string_view routeName() const;

 private:
  // FilterManager
  RequestHeaders& requestForFilters() override { return *request_; }
  void writeHeaders(ResponseHeaders& headers, bool end_stream) override;
  void writeData(Buffer& data, bool end_stream) override;
  void abortResponse() override;
  void send100Continue() override;
  void readDisableConnection(bool disable) override;
  bool connectionAboveHighWatermark() override;

  ConnectionManager& cm_;
  ConnectionManagerContext& context_;
  ResponseEncoder& encoder_;
  RouteConfigSharedPtr config_;
  const Route* route_ = nullptr;
  RequestHeadersPtr request_;
  StreamInfo info_;
};

class ConnectionManager : public network::ConnectionCallbacks,
                          public ServerCodecCallbacks,
                          public DeferredDeletable {
 public:
  ConnectionManager(ConnectionManagerContext& context, network::Connection* connection,
                    const ListenerInfo& listener, bool tls);
  ~ConnectionManager() override;

  // network::ConnectionCallbacks
  void onData(Buffer& data) override;
  void onEvent(network::ConnectionEvent event) override;
  void onAboveWriteBufferHighWatermark() override;
  void onBelowWriteBufferLowWatermark() override;
  bool onRemoteHalfClose() override;

  // ServerCodecCallbacks
  RequestDecoder& newStream(ResponseEncoder& encoder) override;
  void onCodecError(const CodecError& error, ResponseEncoder& encoder) override;
  void onResponseComplete(bool keep_alive) override;
  bool inputPaused() const override { return awaiting_drain_; }
  uint64_t maxBodyBytes(const RequestHeaders& request, uint64_t default_limit) override;

  // SIGTERM: finish the current request, then close.
  void startDrain();
  // Overload: closes the connection if no request is in progress on it.
  bool closeIfIdle();
  // Drain deadline: resets the request in progress, if any, and closes now.
  void closeNow();
  bool closed() const { return closed_; }

  ConnectionManagerContext& context() { return context_; }
  network::Connection& connection() { return *connection_; }
  const ListenerInfo& listener() const { return listener_; }
  bool tls() const { return tls_; }
  // Set by the owner: called once, when this manager is finished.
  std::function<void(ConnectionManager*)> on_closed;
  std::list<ConnectionManager*>::iterator self_iter;

 private:
  friend class ActiveStream;
  void processInput();
  uint64_t bodyTimeoutMs();
  void armTimers();
  void onTimer();
  void closeConnection(network::CloseType type);
  void onResponseCompleteAfterClose();
  // Reads and parses the next pipelined request, if any.
  void resumeInput();
  void teardown();

  ConnectionManagerContext& context_;
  network::Connection* connection_;
  // Copied: the listener's entry in a config that a reload may replace.
  ListenerInfo listener_;
  bool tls_;
  std::unique_ptr<ServerCodec> codec_;
  std::unique_ptr<ActiveStream> stream_;
  Buffer input_;
  TimerPtr timer_;  // header-read or idle timeout
  enum class TimerKind { None, Header, Body, Idle } timer_kind_ = TimerKind::None;
  TimerPtr resume_timer_;  // pipelined input waiting for the next turn
  bool closed_ = false;
  bool dispatching_ = false;
  // A finished answer not yet taken by the client: the next request waits.
  bool awaiting_drain_ = false;
  // Our own read pauses, each released once (readDisable counts).
  bool read_paused_for_drain_ = false;
  bool read_paused_for_pipeline_ = false;
  bool handshake_counted_ = false;
  uint64_t bytes_rx_reported_ = 0;
  uint64_t bytes_tx_reported_ = 0;
};

}  // namespace eldric::http
