#pragma once

// A server-side network::Connection accepted on 127.0.0.1 from a plain
// socket (the peer), on its own dispatcher: for code that writes to a real
// Connection (the HTTP/1 server codec) and tests that read what it wrote.
// Nothing is read from the peer into the Connection; the code under test
// is fed directly.

#include <uv.h>

#include <string>

#include "dataplane/event/dispatcher.h"
#include "dataplane/network/connection.h"

namespace eldric::test {

class Loopback : private network::ConnectionCallbacks {
 public:
  // Aborts if the socket pair cannot be made (nothing to test without it).
  Loopback();
  // Closes the Connection (if still open), the listener and the peer.
  ~Loopback() override;
  Loopback(const Loopback&) = delete;
  Loopback& operator=(const Loopback&) = delete;

  Dispatcher& dispatcher() { return dispatcher_; }
  network::Connection& connection() { return *conn_; }
  // Flushes what was written to the Connection and returns the bytes that
  // reached the peer since the last call.
  std::string takeWritten();

 private:
  static void onAccept(uv_stream_t* server, int status);
  // ConnectionCallbacks: the peer sends nothing.
  void onData(Buffer& data) override { data.clear(); }
  void onEvent(network::ConnectionEvent event) override;

  Dispatcher dispatcher_;
  uv_tcp_t server_;
  int peer_ = -1;
  network::Connection* conn_ = nullptr;
  bool conn_closed_ = false;
};

}  // namespace eldric::test
