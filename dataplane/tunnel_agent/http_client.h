#pragma once

// One HTTP/1.1 exchange at a time over a kept-alive client connection
// (plain or TLS), built on the data plane's Connection and client codec.
// The agent has one per slot and side: the Edge (polls, then the answer
// posted on the same connection) and the local server.
//
// Re-entrancy: a Handler may start the next exchange, or abandon this one,
// from inside any of its callbacks.

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/headers.h"
#include "dataplane/http/http1_client_codec.h"
#include "dataplane/network/connection.h"

namespace eldric::tunnel_agent {

// Where a client connects. Owned by the agent; outlives its clients.
struct Target {
  sockaddr_storage addr{};
  SSL_CTX* tls = nullptr;   // null: plain TCP
  std::string server_name;  // SNI and the name the certificate must match
  std::string authority;    // the Host header
  std::string base_path;    // prefixed to request paths ("" or "/ollama")
  uint64_t connect_timeout_ms = 10000;
};

class HttpClient : public network::ConnectionCallbacks, public http::ClientCodecCallbacks {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onHeaders(const http::ResponseHeaders& headers, bool end) = 0;
    // Consumes `data`.
    virtual void onData(Buffer& data, bool end) = 0;
    // Connect failed, the connection went away, the response was malformed
    // or nothing came for the idle timeout. The exchange is over.
    virtual void onError(const std::string& why) = 0;
    // The request's bytes drained below the low watermark again.
    virtual void onWritable() {}
  };

  HttpClient(Dispatcher& dispatcher, const Target& target);
  ~HttpClient() override;
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Starts an exchange: writes the head (the target's Host is set, the
  // base path prefixed). `idle_timeout_ms`: no byte from the server for
  // that long fails it (0: no limit). The body, if any, follows with send().
  void start(http::RequestHeaders& head, Handler* handler, uint64_t idle_timeout_ms);
  void send(Buffer& data);
  // Changes the exchange's idle timeout (0: none) from now on.
  void setIdleTimeout(uint64_t ms);
  void send(std::string_view bytes);
  // The request is waiting on a slow reader: stop producing.
  bool congested() const { return conn_ != nullptr && conn_->aboveHighWatermark(); }
  // Stops (or resumes) reading the response: backpressure from the far side.
  void readDisable(bool disable);
  // Ends the exchange now, closing the connection (a body sent chunked is
  // cut short, which the server sees as an aborted request).
  void abandon();
  bool busy() const { return handler_ != nullptr; }
  // The last exchange failed on a kept-alive connection before a byte of
  // its answer came: most likely the server had closed it while idle, so
  // the request may be sent again on a new one.
  bool failedOnStaleConnection() const { return stale_failure_; }

 private:
  void onData(Buffer& data) override;
  void onEvent(network::ConnectionEvent event) override;
  void onBelowWriteBufferLowWatermark() override;
  void onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) override;
  void onResponseData(Buffer& data, bool end_stream) override;
  void onResponseError(const std::string& reason) override;
  // The exchange ends; the connection is kept if it can carry another.
  void complete();
  void fail(const std::string& why);
  void closeConnection();
  void armIdle();

  Dispatcher& dispatcher_;
  const Target& target_;
  network::Connection* conn_ = nullptr;
  http::Http1ClientCodec codec_;
  Handler* handler_ = nullptr;
  std::unique_ptr<Timer> idle_;
  uint64_t idle_timeout_ms_ = 0;
  bool read_disabled_ = false;
  bool in_dispatch_ = false;
  bool reused_ = false;     // this exchange runs on a connection used before
  bool got_bytes_ = false;  // a byte of its answer came
  bool stale_failure_ = false;
  bool begin_pending_ = false;  // start() ran inside the codec: reset it after
};

}  // namespace eldric::tunnel_agent
