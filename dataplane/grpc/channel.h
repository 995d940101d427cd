#pragma once

// A gRPC client for the data plane: HTTP/2 by nghttp2 (client session),
// TLS by BoringSSL through network::Connection, I/O by the dispatcher's
// libuv loop. The data plane must not link libgrpc (it brings OpenSSL 3,
// which crashes beside BoringSSL; see DESIGN.md "Why the data plane has its
// own gRPC client"), so this speaks the gRPC wire protocol itself.
//
// One Channel holds at most one live HTTP/2 connection (plus connections
// draining after a GOAWAY) and multiplexes every call on it. Everything
// runs on the dispatcher's thread: create, use and destroy a Channel and
// its Streams there, and expect every callback there.
//
// Connecting is lazy: the first call connects, trying `targets` in order
// (each name's addresses in turn). When the connection is lost every open
// call ends with UNAVAILABLE and the next call connects again; backoff
// between attempts is the caller's.
//
// Callbacks may start, cancel or destroy streams, and may destroy the
// Channel. Destroying the Channel (or a Stream) is silent: no onClose or
// `done` runs for what it ends.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/grpc/status.h"
#include "dataplane/tls/server_context.h"

namespace eldric::grpc {

struct ChannelOptions {
  // "host:port" or "[v6]:port", tried in order on each (re)connect; a host
  // name is resolved and each of its addresses tried in turn.
  std::vector<std::string> targets;
  bool tls = false;
  // The CA bundle that verifies the server; empty: the system bundle.
  std::string ca_file;
  // A client certificate and key (mTLS); both or neither.
  std::string cert_file, key_file;
  // Instead of a CA and a name: the server must present a certificate
  // with the same public key as this file's first certificate (a farm's
  // members, which share the Edge's certificate and key).
  std::string pin_certificate_file;
  // Sent in every call's HEADERS (lowercase names), before a call's own.
  // All metadata is kept out of HPACK's dynamic table (it is credentials:
  // "authorization", "eldric-farm-token").
  std::vector<std::pair<std::string, std::string>> metadata;
  // The :authority header, the SNI and the name the server certificate
  // must carry (its host part); default: the target ("host:port") for
  // :authority and its host for SNI and verification.
  std::string authority;
  // Per address: TCP connect plus TLS handshake (and the name lookup).
  uint64_t connect_timeout_ms = 2000;
  // While calls are open and nothing has been read for this long, send an
  // HTTP/2 PING; if neither its PONG nor anything else arrives within as
  // long again, the connection is dropped (its calls end UNAVAILABLE).
  // 0 disables. By default a libgrpc server treats pings that come less
  // than 5 minutes apart while it sends no data as abuse: past
  // grpc.http2.max_ping_strikes (2) of them it ends the calls (UNAVAILABLE
  // "Too many pings") and sends GOAWAY "too_many_pings".
  // It must set grpc.http2.min_ping_interval_without_data_ms to at most
  // this interval. On that GOAWAY the channel doubles its interval for
  // later connections, as libgrpc's own client does.
  uint64_t keepalive_ms = 10000;
  // A larger incoming message ends its call with RESOURCE_EXHAUSTED.
  size_t max_receive_message_bytes = 64 * 1024 * 1024;
};

class StreamCallbacks {
 public:
  virtual ~StreamCallbacks() = default;
  // One gRPC message, already de-framed.
  virtual void onMessage(std::string message) = 0;
  // Exactly once, last (unless the Stream is cancelled or destroyed, or the
  // Channel destroyed, first). UNAVAILABLE (14) when the connection fails
  // or is lost.
  virtual void onClose(int grpc_status, std::string message) = 0;
};

// A bidi or server-streaming call. Destroying it cancels the call.
class Stream {
 public:
  virtual ~Stream() = default;
  // Frames the message with the 5-byte prefix and queues it; it leaves as
  // HTTP/2 flow control allows (queued bytes are held in memory: see
  // queuedBytes()). Ignored after closeSend(), cancel() or onClose.
  virtual void send(const std::string& message) = 0;
  // Half-close: no more messages from this side (END_STREAM after what is
  // queued).
  virtual void closeSend() = 0;
  // RST_STREAM(CANCEL); onClose is not called after.
  virtual void cancel() = 0;
  // Bytes given to send() and not yet handed to HTTP/2 (a slow or stalled
  // peer makes this grow; the caller decides how much is too much).
  virtual size_t queuedBytes() const { return 0; }
};

// Counters for tests and metrics.
struct ChannelStats {
  uint64_t connects = 0;          // HTTP/2 connections established
  uint64_t connect_failures = 0;  // addresses that failed (refused, timeout, TLS, not h2)
  uint64_t connections_lost = 0;  // established connections that failed with calls open or not
  uint64_t goaways_received = 0;
  uint64_t pings_sent = 0;
  uint64_t keepalive_timeouts = 0;
  uint64_t calls_started = 0;
  uint64_t messages_sent = 0;
  uint64_t messages_received = 0;
  uint64_t data_frames_received = 0;  // DATA frames that carried bytes
};

namespace detail {
struct Call;
class Session;
class UnaryCall;
}  // namespace detail

class Channel {
 public:
  Channel(Dispatcher& dispatcher, ChannelOptions options);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Starts a call on the current connection (connecting first if needed).
  // `path` is "/package.Service/Method". `callbacks` must outlive the call
  // (until onClose, or until the Stream is cancelled or destroyed).
  // Never calls back before returning.
  std::unique_ptr<Stream> startStream(const std::string& path, StreamCallbacks& callbacks);

  // A unary call; `done` runs on the dispatcher thread exactly once (not
  // if the Channel is destroyed first). `timeout_ms` (0: none) is sent as
  // grpc-timeout and enforced locally too (DEADLINE_EXCEEDED); it counts
  // from this call, connecting included. Success is status 0 with exactly
  // one response message.
  // `metadata` goes in the call's HEADERS (lowercase names), marked never
  // to be indexed by HPACK.
  using Metadata = std::vector<std::pair<std::string, std::string>>;
  void unary(const std::string& path, std::string request, uint64_t timeout_ms,
             std::function<void(int grpc_status, std::string message, std::string response)> done,
             Metadata metadata = {});

  // An HTTP/2 connection is established and accepting new calls.
  bool connected() const;
  // "host:port" of that connection; empty when not connected.
  const std::string& connectedTarget() const;
  const ChannelStats& stats() const { return stats_; }
  // The TLS options did not load (every call fails with UNAVAILABLE and
  // this message); empty when fine.
  const std::string& configError() const { return config_error_; }

 private:
  friend class detail::Session;
  friend class detail::UnaryCall;

  detail::Session* sessionForNewCall();
  void onSessionGoaway(detail::Session* s);
  void onSessionDead(detail::Session* s);
  // Ends a call on the next loop iteration: for failures found while the
  // caller is still inside startStream()/unary().
  void failLater(std::shared_ptr<detail::Call> call, int status, std::string message);
  void runFailures();

  Dispatcher& dispatcher_;
  ChannelOptions options_;
  uint64_t keepalive_ms_;  // options_.keepalive_ms, doubled on "too_many_pings"
  // Reset first thing in the destructor: sessions and streams outlive the
  // Channel (deferred delete, caller-held handles) and check it before
  // calling back or touching Channel state.
  std::shared_ptr<bool> alive_;
  tls::SslCtxPtr ssl_ctx_;
  std::string config_error_;
  std::unique_ptr<detail::Session> current_;
  std::vector<std::unique_ptr<detail::Session>> draining_;
  std::vector<std::unique_ptr<detail::UnaryCall>> unaries_;
  struct Failure {
    std::weak_ptr<detail::Call> call;
    int status;
    std::string message;
  };
  std::vector<Failure> failures_;
  TimerPtr failure_timer_;
  ChannelStats stats_;
};

}  // namespace eldric::grpc
