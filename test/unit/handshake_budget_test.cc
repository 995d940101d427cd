// A burst of new TLS connections on one loop (a restart's reconnect
// storm): with the loop's expensive-work budget, the server's first
// flights (key share and signature) are spread over loop iterations, first
// come first served, so the streams already running get the loop between
// them; every connection still completes. Real sockets, real BoringSSL on both ends.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <memory>
#include <vector>

#include "common/pki/pki.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/network/connection.h"
#include "dataplane/tls/server_context.h"

namespace eldric {
namespace {

// Which loop iteration each server connection finished its handshake in.
struct Side : network::ConnectionCallbacks {
  void onData(Buffer& data) override { data.clear(); }
  void onEvent(network::ConnectionEvent e) override {
    if (e == network::ConnectionEvent::Connected) {
      connected = true;
      if (iteration) done_in = *iteration;
    }
    if (e != network::ConnectionEvent::Connected) closed = true;
    if (e == network::ConnectionEvent::RemoteClose || e == network::ConnectionEvent::ConnectFailed)
      failed = true;
  }
  const uint64_t* iteration = nullptr;
  network::Connection* conn = nullptr;  // not to be touched once closed
  bool connected = false;
  bool closed = false;
  bool failed = false;
  uint64_t done_in = 0;
};

class HandshakeBudgetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error, pem;
    auto key = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
    ASSERT_TRUE(key) << error;
    ASSERT_TRUE(key->selfSigned({"localhost"}, 1, &pem, &error)) << error;
    edge::v1::TlsContext cfg;
    auto* c = cfg.add_certificates();
    c->set_certificate_chain_pem(pem);
    c->set_private_key_pem(key->privatePem());
    cfg.add_alpn_protocols("http/1.1");
    server_tls_ = tls::ServerContext::create(cfg, edge::v1::SessionTickets(), &error);
    ASSERT_TRUE(server_tls_) << error;
    client_tls_.reset(SSL_CTX_new(TLS_method()));
    SSL_CTX_set_min_proto_version(client_tls_.get(), TLS1_3_VERSION);

    uv_tcp_init(d_.loop(), &listener_);
    listener_.data = this;
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", 0, &addr);
    ASSERT_EQ(uv_tcp_bind(&listener_, reinterpret_cast<sockaddr*>(&addr), 0), 0);
    ASSERT_EQ(uv_listen(reinterpret_cast<uv_stream_t*>(&listener_), 128, &onAccept), 0);
    int len = sizeof addr_;
    uv_tcp_getsockname(&listener_, reinterpret_cast<sockaddr*>(&addr_), &len);
    d_.setIterationObserver([](void* ctx, uint64_t) { ++*static_cast<uint64_t*>(ctx); },
                            &iteration_);
  }

  void TearDown() override {
    for (auto* all : {&servers_, &clients_}) {
      for (auto& s : *all) {
        if (!s->closed) s->conn->close(network::CloseType::NoFlush);
      }
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&listener_), nullptr);
    uv_run(d_.loop(), UV_RUN_NOWAIT);
  }

  static void onAccept(uv_stream_t* s, int status) {
    auto* self = static_cast<HandshakeBudgetTest*>(s->data);
    if (status != 0) return;
    int error = 0;
    network::Connection* c = network::Connection::accept(self->d_, s, self->server_tls_->get(),
                                                         network::ConnectionOptions(), &error);
    if (!c) return;
    auto side = std::make_unique<Side>();
    side->iteration = &self->iteration_;
    side->conn = c;
    c->setCallbacks(side.get());
    self->servers_.push_back(std::move(side));
  }

  // Opens `n` clients at once, then runs the loop until every server side
  // has finished its handshake (or a bound of iterations passes).
  void connectClients(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      auto side = std::make_unique<Side>();
      side->conn = network::Connection::connect(d_, reinterpret_cast<const sockaddr*>(&addr_), 5000,
                                                network::ConnectionOptions(), client_tls_.get());
      ASSERT_NE(side->conn, nullptr);
      side->conn->setCallbacks(side.get());
      clients_.push_back(std::move(side));
    }
  }

  void storm(size_t n) {
    connectClients(n);
    for (int i = 0; i < 5000; ++i) {
      size_t done = 0;
      for (auto& s : servers_) done += s->connected;
      if (servers_.size() == n && done == n) break;
      uv_run(d_.loop(), UV_RUN_ONCE);
    }
  }

  Dispatcher d_;
  uv_tcp_t listener_;
  sockaddr_in addr_{};
  std::shared_ptr<tls::ServerContext> server_tls_;
  tls::SslCtxPtr client_tls_;
  uint64_t iteration_ = 0;
  std::vector<std::unique_ptr<Side>> servers_;
  std::vector<std::unique_ptr<Side>> clients_;
};

TEST_F(HandshakeBudgetTest, ATinyBudgetRunsOneServerFlightPerIterationAndAllComplete) {
  d_.setExpensiveWorkBudget(1);  // 1 ns: spent by the first handshake of each iteration
  storm(12);
  ASSERT_EQ(servers_.size(), 12u);
  std::map<uint64_t, int> per_iteration;
  for (auto& s : servers_) {
    EXPECT_TRUE(s->connected);
    EXPECT_FALSE(s->failed);
    ++per_iteration[s->done_in];
  }
  for (auto& c : clients_) EXPECT_TRUE(c->connected);
  // Each server finished in an iteration of its own: their first flights,
  // one iteration earlier, were one per iteration too.
  for (const auto& [it, count] : per_iteration) EXPECT_EQ(count, 1) << "iteration " << it;
}

TEST_F(HandshakeBudgetTest, NoBudgetStillCompletesEveryHandshake) {
  d_.setExpensiveWorkBudget(0);
  storm(12);
  ASSERT_EQ(servers_.size(), 12u);
  for (auto& s : servers_) EXPECT_TRUE(s->connected);
  for (auto& c : clients_) EXPECT_TRUE(c->connected);
}

// A ClientHello as a real client writes it (BoringSSL, into a memory BIO).
std::string clientHello(SSL_CTX* ctx) {
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rbio, wbio);
  SSL_set_connect_state(ssl);
  SSL_set_tlsext_host_name(ssl, "localhost");
  SSL_do_handshake(ssl);
  const uint8_t* data = nullptr;
  size_t len = 0;
  BIO_mem_contents(wbio, &data, &len);
  std::string out(reinterpret_cast<const char*>(data), len);
  SSL_free(ssl);
  return out;
}

TEST_F(HandshakeBudgetTest, AClientHelloInTwoPiecesStillWaitsForTheBudget) {
  d_.setExpensiveWorkBudget(1);
  // Four raw clients send the first bytes of a ClientHello (nothing to
  // compute yet), then the rest all at once: their flights must still go
  // one per iteration, not all in the poll that brings the rest.
  std::vector<int> fds;
  std::vector<std::string> hellos;
  for (int i = 0; i < 4; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_), 0);
    hellos.push_back(clientHello(client_tls_.get()));
    ASSERT_GT(hellos.back().size(), 20u);
    ASSERT_EQ(write(fd, hellos.back().data(), 10), 10);
    fds.push_back(fd);
  }
  for (int i = 0; i < 200 && servers_.size() < 4; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);
  for (int i = 0; i < 5; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);  // the first pieces read
  ASSERT_EQ(servers_.size(), 4u);
  for (auto& s : servers_) EXPECT_EQ(s->conn->bytesSent(), 0u);
  for (size_t i = 0; i < fds.size(); ++i) {
    ssize_t rest = static_cast<ssize_t>(hellos[i].size() - 10);
    ASSERT_EQ(write(fds[i], hellos[i].data() + 10, rest), rest);
  }
  size_t sent_before = 0;
  for (int i = 0; i < 50 && sent_before < 4; ++i) {
    uv_run(d_.loop(), UV_RUN_ONCE);
    size_t sent = 0;
    for (auto& s : servers_) sent += s->conn->bytesSent() > 0;
    EXPECT_LE(sent - sent_before, 1u) << "flights in one iteration";
    sent_before = sent;
  }
  EXPECT_EQ(sent_before, 4u);
  for (int fd : fds) close(fd);
  for (int i = 0; i < 20; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);
}

TEST_F(HandshakeBudgetTest, AWaitingConnectionReadsNothingMore) {
  d_.setExpensiveWorkBudget(1);
  // Three ClientHellos in one poll: one flight runs, two wait. Then each
  // client sends 256 KB more: a waiting connection must leave it in the
  // kernel (which pushes back on the client), not buffer it.
  std::vector<int> fds;
  std::string hello = clientHello(client_tls_.get());
  for (int i = 0; i < 3; ++i) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_EQ(connect(fd, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_), 0);
    fds.push_back(fd);
  }
  for (int i = 0; i < 200 && servers_.size() < 3; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);
  ASSERT_EQ(servers_.size(), 3u);
  for (int fd : fds) ASSERT_EQ(write(fd, hello.data(), hello.size()), ssize_t(hello.size()));
  for (int i = 0; i < 50; ++i) {
    size_t sent = 0;
    for (auto& s : servers_) sent += s->conn->bytesSent() > 0;
    if (sent) break;
    uv_run(d_.loop(), UV_RUN_NOWAIT);
  }
  std::string junk(256 * 1024, 'x');
  for (int fd : fds) {
    fcntl(fd, F_SETFL, O_NONBLOCK);
    ASSERT_GT(write(fd, junk.data(), junk.size()), 0);
  }
  uv_run(d_.loop(), UV_RUN_NOWAIT);  // admits at most one more
  size_t waiting = 0;
  for (auto& s : servers_) {
    if (s->closed || s->conn->bytesSent() > 0) continue;
    ++waiting;
    EXPECT_EQ(s->conn->bytesReceived(), hello.size()) << "a waiting connection read on";
  }
  EXPECT_GE(waiting, 1u);
  for (int fd : fds) close(fd);
  for (int i = 0; i < 20; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);
}

TEST_F(HandshakeBudgetTest, AConnectionClosedWhileItWaitsIsForgotten) {
  d_.setExpensiveWorkBudget(1);
  // Clients whose ClientHellos arrive in one poll: all but the first
  // server side wait for a later iteration. Close every server side as
  // soon as the first has sent its flight; the loop must run on without
  // touching the closed ones (ASan would see a use after free).
  connectClients(4);
  for (int i = 0; i < 2000; ++i) {
    if (servers_.size() == 4 && servers_[0]->conn->bytesSent() > 0) break;
    uv_run(d_.loop(), UV_RUN_ONCE);
  }
  ASSERT_EQ(servers_.size(), 4u);
  for (auto& s : servers_) {
    if (!s->closed) s->conn->close(network::CloseType::NoFlush);
  }
  for (int i = 0; i < 20; ++i) uv_run(d_.loop(), UV_RUN_NOWAIT);
  for (auto& c : clients_) EXPECT_TRUE(c->closed);
}

}  // namespace
}  // namespace eldric
