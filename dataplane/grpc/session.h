#pragma once

// One connection attempt sequence, then one HTTP/2 connection, carrying a
// Channel's calls (internal to the Channel; see channel.h).

#include <nghttp2/nghttp2.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/grpc/call.h"
#include "dataplane/grpc/channel.h"
#include "dataplane/network/connection.h"

namespace eldric::grpc::detail {

// One connection attempt sequence, then one HTTP/2 connection. Deleted only
// through the dispatcher's deferred delete: it may be in an nghttp2 or
// Connection callback when its Channel lets go of it.
class Session : public network::ConnectionCallbacks, public Flushable, public DeferredDeletable {
 public:
  enum class State { Connecting, Ready, Draining, Dead };

  Session(Channel& channel, std::weak_ptr<bool> alive);
  ~Session() override;

  State state() const { return state_; }
  const std::string& target() const { return target_; }

  void start(const std::shared_ptr<Call>& call);
  // New bytes in the call's send queue, or closeSend().
  void sendQueued(Call* call);
  // The caller cancelled (callbacks already cleared).
  void cancel(Call* call);
  // Ends the session: stops its timers, name lookup and connection and
  // takes every call off it. While the Channel is alive, the Channel lets
  // go of the session (deferred delete) and every call still open ends
  // with `status`; once the Channel is gone (its destructor stops its
  // sessions, or a callback below destroyed it) the calls left are
  // silenced instead. Idempotent.
  void stop(int status, const std::string& reason);

  // network::ConnectionCallbacks
  void onData(Buffer& data) override;
  void onEvent(network::ConnectionEvent event) override;
  void onBelowWriteBufferLowWatermark() override { scheduleSend(); }
  // Flushable: serializes what nghttp2 has queued into the connection.
  void onFlush() override;

 private:
  struct Resolve {
    uv_getaddrinfo_t req;
    Session* session;
  };

  bool channelAlive() const { return !alive_.expired(); }
  void nextAttempt();
  void startResolve(const std::string& host);
  static void onResolved(uv_getaddrinfo_t* req, int status, addrinfo* res);
  void abandonResolve();
  void connectTo(const sockaddr_storage& addr);
  void onConnected();
  bool submit(const std::shared_ptr<Call>& call);
  void scheduleSend();
  void afterIo();
  void closeConnection();
  void onKeepalive();
  void onPingTimeout();
  Call* callFor(int32_t stream_id);
  void onStreamEnd(Call* call);
  void endAndReset(Call* call, int status, std::string message, uint32_t h2_error);
  std::string lostReason() const;

  static int onBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                      void* user);
  static int onFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int onDataChunk(nghttp2_session*, uint8_t flags, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user);
  static int onStreamClose(nghttp2_session*, int32_t stream_id, uint32_t error_code, void* user);
  static ssize_t readData(nghttp2_session*, int32_t stream_id, uint8_t* buf, size_t length,
                          uint32_t* data_flags, nghttp2_data_source* source, void* user);
  static int onError(nghttp2_session*, int lib_error_code, const char* msg, size_t len, void* user);

  Channel& channel_;  // use only while channelAlive()
  std::weak_ptr<bool> alive_;
  Dispatcher& dispatcher_;
  const ChannelOptions options_;  // a copy: this may outlive the Channel
  SSL_CTX* ssl_ctx_;              // a reference of our own, for the same reason
  uint64_t keepalive_ms_;
  State state_ = State::Connecting;
  network::ConnectionOptions conn_options_;
  network::Connection* conn_ = nullptr;
  nghttp2_session* h2_ = nullptr;
  std::vector<std::shared_ptr<Call>> pending_;  // waiting for the connection
  std::unordered_map<int32_t, std::shared_ptr<Call>> streams_;
  bool flush_scheduled_ = false;

  // Connecting: targets in order, each name's addresses in order.
  size_t target_index_ = 0;
  std::vector<sockaddr_storage> addrs_;
  size_t addr_index_ = 0;
  std::string target_;
  std::string authority_;
  std::string server_name_;
  std::string last_error_;
  Resolve* resolve_ = nullptr;
  TimerPtr attempt_timer_;  // the first attempt (from a fresh stack) and name lookups

  // Keepalive.
  TimerPtr keepalive_timer_;
  TimerPtr ping_timer_;
  uint64_t last_read_ms_ = 0;
  bool read_since_ping_ = false;
  std::string goaway_;  // what the server said, for the calls it fails
};

}  // namespace eldric::grpc::detail
