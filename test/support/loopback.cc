#include "test/support/loopback.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>

namespace eldric::test {

Loopback::Loopback() {
  uv_tcp_init(dispatcher_.loop(), &server_);
  server_.data = this;
  sockaddr_in addr{};
  uv_ip4_addr("127.0.0.1", 0, &addr);
  if (uv_tcp_bind(&server_, reinterpret_cast<sockaddr*>(&addr), 0) != 0) abort();
  if (uv_listen(reinterpret_cast<uv_stream_t*>(&server_), 4, &Loopback::onAccept) != 0) abort();
  int len = sizeof addr;
  uv_tcp_getsockname(&server_, reinterpret_cast<sockaddr*>(&addr), &len);
  peer_ = socket(AF_INET, SOCK_STREAM, 0);
  if (peer_ < 0 || connect(peer_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) abort();
  // The connect above finished, so the listener is readable: accept()
  // runs within the first iterations (bounded, not timed).
  for (int i = 0; i < 1000 && !conn_; ++i) uv_run(dispatcher_.loop(), UV_RUN_ONCE);
  if (!conn_) abort();
}

Loopback::~Loopback() {
  if (conn_ && !conn_closed_) conn_->close(network::CloseType::NoFlush);
  uv_close(reinterpret_cast<uv_handle_t*>(&server_), nullptr);
  // The Connection deletes itself once its socket's close callback ran.
  for (int i = 0; i < 100; ++i) uv_run(dispatcher_.loop(), UV_RUN_NOWAIT);
  if (peer_ >= 0) ::close(peer_);
}

void Loopback::onAccept(uv_stream_t* server, int status) {
  auto* self = static_cast<Loopback*>(server->data);
  if (status != 0 || self->conn_) return;
  int error = 0;
  self->conn_ = network::Connection::accept(self->dispatcher_, server, nullptr,
                                            network::ConnectionOptions{}, &error);
  if (!self->conn_) abort();
  self->conn_->setCallbacks(self);
}

void Loopback::onEvent(network::ConnectionEvent event) {
  if (event == network::ConnectionEvent::RemoteClose ||
      event == network::ConnectionEvent::LocalClose) {
    conn_closed_ = true;
  }
}

std::string Loopback::takeWritten() {
  std::string out;
  char buf[64 * 1024];
  // A loopback write lands in the peer's socket before send() returns, so
  // one loop iteration (the flush) and a non-blocking read get it all; more
  // rounds only while the Connection still holds bytes (a partial write).
  for (int round = 0; round < 64; ++round) {
    uv_run(dispatcher_.loop(), UV_RUN_NOWAIT);
    ssize_t n;
    while ((n = recv(peer_, buf, sizeof buf, MSG_DONTWAIT)) > 0) out.append(buf, size_t(n));
    if (conn_closed_ || conn_->bufferedWriteBytes() == 0) break;
  }
  return out;
}

}  // namespace eldric::test
