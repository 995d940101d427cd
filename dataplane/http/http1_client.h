#pragma once

// One HTTP/1.1 exchange at a time over a kept-alive client connection
// (plain or TLS), on the Connection and the client codec, for the few
// places that talk to one known server rather than a cluster: the tunnel
// agent (the Edge and its local model server) and a farm member relaying a
// tunnel forward to the member that holds the tunnel. (The router's
// upstreams, with pools, balancing and retries, are upstream/.)
//
// Re-entrancy: a Handler may start the next exchange, or abandon this one,
// from inside any of its callbacks.

#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/address.h"
#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/headers.h"
#include "dataplane/http/http1_client_codec.h"
#include "dataplane/network/connection.h"

namespace eldric::http {

// Where a client connects. Owned by its user; outlives its clients.
struct ClientTarget {
  sockaddr_storage addr{};
  SSL_CTX* tls = nullptr;   // null: plain TCP
  std::string server_name;  // SNI and the name the certificate must match
  std::string authority;    // the Host header
  std::string base_path;    // prefixed to request paths ("" or "/ollama")
  uint64_t connect_timeout_ms = 10000;
};

// `url` as a target: its address (an IP literal as it is, a name looked up
// now, blocking: for start-up and the main thread), the Host header (the
// port left out when it is the scheme's), the base path, and for https the
// client context `tls` and the name the certificate must match. False with
// `*error`. The connect timeout is left as it was.
bool makeClientTarget(const network::Url& url, SSL_CTX* tls, ClientTarget* out, std::string* error);

class Http1Client : public network::ConnectionCallbacks, public ClientCodecCallbacks {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onHeaders(const ResponseHeaders& headers, bool end) = 0;
    // Consumes `data`.
    virtual void onData(Buffer& data, bool end) = 0;
    // Connect failed, the connection went away, the response was malformed
    // or nothing came for the idle timeout. The exchange is over.
    virtual void onError(const std::string& why) = 0;
    // The request's bytes drained below the low watermark again.
    virtual void onWritable() {}
  };

  Http1Client(Dispatcher& dispatcher, const ClientTarget& target);
  ~Http1Client() override;
  Http1Client(const Http1Client&) = delete;
  Http1Client& operator=(const Http1Client&) = delete;

  // Starts an exchange: writes the head (the target's Host is set, the
  // base path prefixed). `idle_timeout_ms`: no byte from the server for
  // that long fails it (0: no limit). The body, if any, follows with send().
  void start(RequestHeaders& head, Handler* handler, uint64_t idle_timeout_ms);
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
  void onResponseHeaders(ResponseHeadersPtr headers, bool end_stream) override;
  void onResponseData(Buffer& data, bool end_stream) override;
  void onResponseError(const std::string& reason) override;
  // The exchange ends; the connection is kept if it can carry another.
  void complete();
  void fail(const std::string& why);
  void closeConnection();
  void armIdle();
  // After a parse: the codec starts over for an exchange begun inside it.
  void runPendingBegin();
  // The codec's callbacks belong to the current exchange.
  bool current() const { return handler_ != nullptr && dispatch_gen_ == gen_; }

  Dispatcher& dispatcher_;
  const ClientTarget& target_;
  network::Connection* conn_ = nullptr;
  Http1ClientCodec codec_;
  Handler* handler_ = nullptr;
  std::unique_ptr<Timer> idle_;
  uint64_t idle_timeout_ms_ = 0;
  bool read_disabled_ = false;
  bool in_dispatch_ = false;
  bool reused_ = false;     // this exchange runs on a connection used before
  bool got_bytes_ = false;  // a byte of its answer came
  bool stale_failure_ = false;
  bool begin_pending_ = false;  // start() ran inside the codec: reset it after
  bool pending_head_ = false;   // ... for a HEAD request
  // Counts exchanges (start, abandon): codec callbacks of an earlier one,
  // still parsing the old connection's bytes, reach no handler.
  uint64_t gen_ = 0;
  uint64_t dispatch_gen_ = 0;  // the exchange the codec is parsing for
};

}  // namespace eldric::http
