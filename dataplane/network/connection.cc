#include "dataplane/network/connection.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "dataplane/tls/server_context.h"

namespace eldric::network {

struct Connection::WriteReq {
  uv_write_t req;
  Buffer data;
  Connection* conn;
};

Connection::Connection(Dispatcher& dispatcher, const ConnectionOptions& options)
    : dispatcher_(dispatcher), options_(options) {
  uv_tcp_init(dispatcher.loop(), &tcp_);
  tcp_.data = this;
}

Connection::~Connection() {
  if (flush_scheduled_) dispatcher_.cancelFlush(this);
  if (handshake_queued_) dispatcher_.cancelExpensiveWork(this);
  if (ssl_) SSL_free(ssl_);
  if (in_flight_) in_flight_->conn = nullptr;
}

Connection* Connection::accept(Dispatcher& dispatcher, uv_stream_t* server, SSL_CTX* tls,
                               const ConnectionOptions& options, int* error) {
  auto* c = new Connection(dispatcher, options);
  int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp_));
  if (rc != 0) {
    *error = rc;
    c->closeSocket(false);
    return nullptr;
  }
  uv_tcp_nodelay(&c->tcp_, 1);
  int len = sizeof c->peer_;
  uv_tcp_getpeername(&c->tcp_, reinterpret_cast<sockaddr*>(&c->peer_), &len);
  if (tls) {
    c->ssl_ = SSL_new(tls);
    BIO* bio = BIO_new(bioMethod());
    BIO_set_data(bio, c);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl_, bio, bio);
    SSL_set_accept_state(c->ssl_);
  } else {
    c->handshake_done_ = true;
  }
  c->startReading();
  return c;
}

Connection* Connection::connect(Dispatcher& dispatcher, const sockaddr* addr, uint64_t timeout_ms,
                                const ConnectionOptions& options, SSL_CTX* client_tls,
                                const std::string& server_name) {
  auto* c = new Connection(dispatcher, options);
  c->connecting_ = true;
  memcpy(&c->peer_, addr, addr->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  bool tls_ok = true;
  if (client_tls) {
    tls_ok = c->startClientTls(client_tls, server_name);
  } else {
    c->handshake_done_ = true;
  }
  auto* req = new uv_connect_t;
  req->data = c;
  int rc = tls_ok ? uv_tcp_connect(req, &c->tcp_, addr, &Connection::onConnect) : UV_EINVAL;
  if (rc != 0) {
    delete req;
    // Report asynchronously so the caller has set its callbacks.
    c->timer_ = dispatcher.createTimer([c] {
      c->raise(ConnectionEvent::ConnectFailed);
      c->closeSocket(false);
    });
    c->timer_->enable(0);
    return c;
  }
  c->timer_ = dispatcher.createTimer([c] {
    // Connect timeout: closing the handle cancels the request.
    c->raise(ConnectionEvent::ConnectFailed);
    c->closeSocket(false);
  });
  c->timer_->enable(timeout_ms);
  return c;
}

bool Connection::startClientTls(SSL_CTX* ctx, const std::string& server_name) {
  client_tls_ = true;
  ssl_ = SSL_new(ctx);
  if (!ssl_) {
    tls_error_ = tls::lastError();
    return false;
  }
  BIO* bio = BIO_new(bioMethod());
  BIO_set_data(bio, this);
  BIO_set_init(bio, 1);
  SSL_set_bio(ssl_, bio, bio);
  SSL_set_connect_state(ssl_);
  if (server_name.empty()) return true;
  // An IP literal is matched against the certificate's IP SANs and is not
  // sent as SNI (RFC 6066 allows host names only); a name is both.
  std::string bare = server_name;
  if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']') {
    bare = bare.substr(1, bare.size() - 2);
  }
  sockaddr_storage ip;
  bool ok;
  if (parseIpAddress(bare, 0, &ip)) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl_), bare.c_str()) == 1;
  } else {
    ok =
        SSL_set_tlsext_host_name(ssl_, bare.c_str()) == 1 && SSL_set1_host(ssl_, bare.c_str()) == 1;
  }
  if (!ok) tls_error_ = "tls: bad server name " + server_name + ": " + tls::lastError();
  return ok;
}

void Connection::onConnect(uv_connect_t* req, int status) {
  auto* c = static_cast<Connection*>(req->data);
  delete req;
  if (status == UV_ECANCELED || c->socket_closed_) return;
  c->dispatcher_.markBusy();
  if (status != 0) {
    c->timer_->disable();
    c->raise(ConnectionEvent::ConnectFailed);
    c->closeSocket(false);
    return;
  }
  c->connecting_ = false;
  uv_tcp_nodelay(&c->tcp_, 1);
  c->startReading();
  if (c->client_tls_) {
    // The connect timeout keeps running until the handshake is done.
    // Sends the ClientHello; failures are reported from inside.
    c->doHandshake();
    return;
  }
  c->timer_->disable();
  c->raise(ConnectionEvent::Connected);
  if (!c->closing_) c->flush();
}

void Connection::startReading() {
  if (read_disable_count_ == 0 && !socket_closed_ && !remote_closed_) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&tcp_), &Connection::onAlloc, &Connection::onRead);
  }
}

void Connection::onAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(h->data);
  c->dispatcher_.markBusy();  // libuv asks for a buffer before each read
  // Reuse the current slab while no one else holds it and it has room:
  // small reads (SSE frames, requests) then share one slab.
  if (!c->read_slab_ || !c->read_slab_->exclusive() ||
      c->read_slab_->capacity() - c->read_offset_ < 2048) {
    c->read_slab_ = SlabRef(Slab::create(Slab::kDefaultSize));
    c->read_offset_ = 0;
  }
  buf->base = c->read_slab_->data() + c->read_offset_;
  buf->len = c->read_slab_->capacity() - c->read_offset_;
}

void Connection::onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t*) {
  static_cast<Connection*>(s->data)->handleRead(nread);
}

void Connection::handleRead(ssize_t nread) {
  if (nread == 0) return;  // EAGAIN
  if (nread < 0) {
    read_slab_ = SlabRef();
    if (closing_) {
      // The peer went away while we flushed; nothing more can be sent.
      closeSocket(false);
      return;
    }
    if (nread == UV_EOF && callbacks_ && (!ssl_ || handshake_done_) &&
        callbacks_->onRemoteHalfClose()) {
      // Half-closed: nothing more to read, the answer still to write.
      remote_closed_ = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
      return;
    }
    remote_closed_ = true;
    if (client_tls_ && !handshake_done_) tls_error_ = "tls: connection closed during the handshake";
    raise(failureEvent());
    closeSocket(false);
    return;
  }
  bytes_received_ += static_cast<uint64_t>(nread);
  Buffer& target = ssl_ ? tls_in_ : read_buffer_;
  target.addSlice(read_slab_, read_offset_, static_cast<uint32_t>(nread));
  read_offset_ += static_cast<uint32_t>(nread);
  if (closing_) {
    // Draining a closing connection: discard input.
    target.clear();
    return;
  }
  if (ssl_) {
    doTlsRead();
  } else {
    deliver();
  }
  // Idle connections should not pin a slab: when everything read has been
  // consumed, give it back to the thread's cache (the next read takes one
  // from there again). Ten thousand idle keep-alive connections then hold
  // no read buffers at all.
  if (read_slab_ && read_slab_->exclusive() && read_buffer_.empty() && tls_in_.empty()) {
    read_slab_ = SlabRef();
    read_offset_ = 0;
  }
}

void Connection::holdWhileQueued() {
  // Nothing more is read until its turn (the kernel's buffer holds the
  // rest and pushes back on the client), and what was read, a ClientHello
  // of a few hundred bytes, moves out of its 16 KB read slab: a long queue
  // of waiting connections costs their hellos, not 16 KB each.
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
  size_t n = tls_in_.length();
  if (n == 0 || n >= Slab::kDefaultSize) return;
  Slab* copy = Slab::createExact(n);
  tls_in_.copyOut(n, copy->data());
  tls_in_.clear();
  tls_in_.addSlice(SlabRef(copy), 0, static_cast<uint32_t>(n));
  read_slab_ = SlabRef();
  read_offset_ = 0;
}

void Connection::onAdmitted() {
  handshake_queued_ = false;
  handshake_admitted_ = true;
  if (socket_closed_ || closing_) return;
  startReading();
  doTlsRead();
}

void Connection::deliver() {
  if (read_buffer_.empty() || closing_ || socket_closed_ || !callbacks_) return;
  if (read_disable_count_ > 0) return;
  callbacks_->onData(read_buffer_);
}

bool Connection::doHandshake() {
  int rc = SSL_do_handshake(ssl_);
  if (rc == 1) {
    handshake_done_ = true;
    return true;
  }
  int err = SSL_get_error(ssl_, rc);
  flush();  // the handshake's own messages
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  tls_error_ = tls::lastError();
  if (client_tls_) {
    long verify = SSL_get_verify_result(ssl_);
    if (verify != X509_V_OK) {
      tls_error_ += std::string(": ") + X509_verify_cert_error_string(verify);
    }
  }
  log::debug("tls handshake failed",
             {{"peer", log::str(peerIp())}, {"error", log::str(tls_error_)}});
  ERR_clear_error();
  ConnectionEvent event = failureEvent();
  remote_closed_ = true;
  raise(event);
  closeSocket(false);
  return false;
}

void Connection::doTlsRead() {
  if (!handshake_done_) {
    if (handshake_queued_) return;  // its turn comes in a later iteration
    // A server's first flight (key share, certificate, signature) is the
    // expensive step: it waits for the loop's budget, in arrival order.
    if (!client_tls_ && !handshake_admitted_) {
      if (!dispatcher_.admitExpensiveWork()) {
        handshake_queued_ = true;
        dispatcher_.queueExpensiveWork(this);
        holdWhileQueued();
        return;
      }
      handshake_admitted_ = true;
    }
    if (!doHandshake()) {
      // Only part of the ClientHello came: nothing was computed or sent.
      // The rest asks the budget again (else a client sending hellos in
      // two pieces would have its flights run outside it).
      if (!client_tls_ && bytes_sent_ == 0 && write_buffer_.empty() && !in_flight_)
        handshake_admitted_ = false;
      return;
    }
    if (client_tls_) timer_->disable();  // the connect timeout
    if (callbacks_) callbacks_->onEvent(ConnectionEvent::Connected);
    if (socket_closed_ || closing_) return;
    // A client's writes wait for the handshake (see encryptPending).
    if (!pending_plain_.empty()) scheduleFlush();
  }
  bool eof = false;
  // Decrypt into plaintext slabs until BoringSSL wants more ciphertext.
  while (read_disable_count_ == 0 || read_buffer_.length() < 64 * 1024) {
    Slab* slab = Slab::create(Slab::kDefaultSize);
    int n = SSL_read(ssl_, slab->data(), static_cast<int>(slab->capacity()));
    if (n > 0) {
      read_buffer_.addSlice(SlabRef(slab), 0, static_cast<uint32_t>(n));
      // A read returns at most one record and the slab holds a whole one:
      // with no ciphertext left and nothing decrypted pending, the next
      // SSL_read could only say WANT_READ (and reset the error queue).
      if (tls_in_.empty() && !SSL_has_pending(ssl_)) break;
      continue;
    }
    slab->unref();
    int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ) break;
    if (err == SSL_ERROR_ZERO_RETURN) {
      eof = true;
    } else {
      // Kept for the owner: a TLS 1.3 server rejects a client certificate
      // only after the client's handshake has finished.
      if (err == SSL_ERROR_SSL) tls_error_ = tls::lastError();
      ERR_clear_error();
      eof = true;
    }
    break;
  }
  flush();  // post-handshake messages (tickets) and alerts
  deliver();
  if (eof && !socket_closed_ && !closing_) {
    remote_closed_ = true;
    raise(ConnectionEvent::RemoteClose);
    closeSocket(false);
  }
}

void Connection::write(Buffer& data) {
  if (closing_ || socket_closed_) {
    data.clear();
    return;
  }
  (ssl_ ? pending_plain_ : write_buffer_).move(data);
  scheduleFlush();
  checkWatermarks();
}

void Connection::scheduleFlush() {
  if (flush_scheduled_) return;
  flush_scheduled_ = true;
  dispatcher_.scheduleFlush(this);
}

void Connection::onFlush() {
  flush_scheduled_ = false;
  if (socket_closed_) return;
  encryptPending();
  if (!connecting_) flush();
}

void Connection::encryptPending() {
  // Before the handshake is done SSL_write would drive the handshake itself
  // and fail; the plaintext waits (a client may write before Connected).
  if (!ssl_ || pending_plain_.empty() || !handshake_done_) return;
  // Up to 16 KB per record: small pieces (status line, headers, chunk
  // framing, SSE frames) share records instead of one record each.
  // Pieces in several slices are gathered in a per-thread scratch record
  // (SSL_write copies its input into the record anyway), not into a new
  // slab of the buffer.
  constexpr size_t kRecord = 16 * 1024;
  thread_local char t_record[kRecord];
  while (!pending_plain_.empty()) {
    size_t n = std::min(pending_plain_.length(), kRecord);
    const Slice& first = pending_plain_.slice(0);
    const char* p = first.data();
    if (first.length < n) {
      pending_plain_.copyOut(n, t_record);
      p = t_record;
    }
    int w = SSL_write(ssl_, p, static_cast<int>(n));
    if (w <= 0) {
      ERR_clear_error();
      pending_plain_.clear();
      break;
    }
    pending_plain_.drain(static_cast<size_t>(w));
  }
}

void Connection::flush() {
  if (in_flight_ || socket_closed_ || connecting_) return;
  if (write_buffer_.empty()) {
    if (closing_) closeSocket(false);
    return;
  }
  constexpr size_t kMaxIov = 16;
  uv_buf_t iov[kMaxIov];
  size_t n = std::min(kMaxIov, write_buffer_.sliceCount());
  for (size_t i = 0; i < n; ++i) {
    const Slice& s = write_buffer_.slice(i);
    iov[i] = uv_buf_init(const_cast<char*>(s.data()), s.length);
  }
  auto* stream = reinterpret_cast<uv_stream_t*>(&tcp_);
  int written = uv_try_write(stream, iov, static_cast<unsigned>(n));
  if (written > 0) {
    bytes_sent_ += static_cast<uint64_t>(written);
    write_buffer_.drain(static_cast<size_t>(written));
    if (write_buffer_.empty()) {
      checkWatermarks();
      if (closing_) closeSocket(false);
      return;
    }
  } else if (written < 0 && written != UV_EAGAIN && written != UV_ENOSYS) {
    // The peer is gone. Reads will report it; stop writing.
    write_buffer_.clear();
    if (closing_) {
      closeSocket(false);
    } else if (!remote_closed_) {
      remote_closed_ = true;
      raise(ConnectionEvent::RemoteClose);
      closeSocket(false);
    }
    return;
  }
  // Queue the rest; the request keeps its slices alive until it completes.
  in_flight_ = new WriteReq;
  in_flight_->conn = this;
  in_flight_->req.data = in_flight_;
  n = std::min(kMaxIov, write_buffer_.sliceCount());
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) bytes += write_buffer_.slice(i).length;
  in_flight_->data.move(write_buffer_, bytes);
  in_flight_bytes_ = bytes;
  for (size_t i = 0; i < n; ++i) {
    const Slice& s = in_flight_->data.slice(i);
    iov[i] = uv_buf_init(const_cast<char*>(s.data()), s.length);
  }
  int rc = uv_write(&in_flight_->req, stream, iov, static_cast<unsigned>(n), &Connection::onWrite);
  if (rc != 0) {
    delete in_flight_;
    in_flight_ = nullptr;
    in_flight_bytes_ = 0;
    write_buffer_.clear();
    if (!remote_closed_ && !closing_) {
      remote_closed_ = true;
      raise(ConnectionEvent::RemoteClose);
    }
    closeSocket(false);
  }
}

void Connection::onWrite(uv_write_t* req, int status) {
  auto* w = static_cast<WriteReq*>(req->data);
  Connection* c = w->conn;
  delete w;
  if (!c) return;
  c->dispatcher_.markBusy();
  c->in_flight_ = nullptr;
  if (status == 0) c->bytes_sent_ += c->in_flight_bytes_;
  c->in_flight_bytes_ = 0;
  if (c->socket_closed_) return;
  if (status != 0) {
    c->write_buffer_.clear();
    if (!c->remote_closed_ && !c->closing_) {
      c->remote_closed_ = true;
      c->raise(ConnectionEvent::RemoteClose);
    }
    c->closeSocket(false);
    return;
  }
  c->flush();
  if (!c->socket_closed_) c->checkWatermarks();
}

void Connection::checkWatermarks() {
  size_t buffered = bufferedWriteBytes();
  if (!above_high_ && buffered > options_.high_watermark) {
    above_high_ = true;
    if (callbacks_ && !closing_) callbacks_->onAboveWriteBufferHighWatermark();
  } else if (above_high_ && buffered <= options_.low_watermark) {
    above_high_ = false;
    if (callbacks_ && !closing_) callbacks_->onBelowWriteBufferLowWatermark();
  }
}

void Connection::readDisable(bool disable) {
  if (socket_closed_) return;
  if (disable) {
    if (read_disable_count_++ == 0 && !remote_closed_) {
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&tcp_));
    }
    return;
  }
  if (read_disable_count_ == 0) return;
  if (--read_disable_count_ == 0) {
    startReading();
    // Bytes already read (pipelined requests, decrypted TLS records) would
    // otherwise wait for the next packet. Deliver them from a fresh stack.
    if (!read_buffer_.empty() || (ssl_ && (!tls_in_.empty() || SSL_has_pending(ssl_)))) {
      resumeBufferedTls();
    }
  }
}

void Connection::resumeBufferedTls() {
  if (resume_posted_) return;
  resume_posted_ = true;
  if (!resume_timer_) {
    resume_timer_ = dispatcher_.createTimer([this] {
      resume_posted_ = false;
      if (socket_closed_ || closing_ || read_disable_count_ > 0) return;
      if (ssl_) {
        doTlsRead();
      } else {
        deliver();
      }
    });
  }
  resume_timer_->enable(0);
}

void Connection::close(CloseType type) {
  if (closing_ || socket_closed_) return;
  closing_ = true;
  ConnectionCallbacks* cb = callbacks_;
  callbacks_ = nullptr;
  if (cb) cb->onEvent(ConnectionEvent::LocalClose);
  if (type == CloseType::NoFlush || connecting_) {
    closeSocket(type == CloseType::NoFlush && !connecting_);
    return;
  }
  if (ssl_ && handshake_done_) {
    encryptPending();    // what was written before close() goes first
    SSL_shutdown(ssl_);  // queues close_notify into write_buffer_
    ERR_clear_error();
  }
  if (write_buffer_.empty() && !in_flight_) {
    closeSocket(false);
    return;
  }
  flush();
  if (!socket_closed_) {
    // Not inside a timer callback here: close() is called by owners.
    timer_ = dispatcher_.createTimer([this] { closeSocket(true); });
    timer_->enable(options_.flush_timeout_ms);
  }
}

void Connection::raise(ConnectionEvent e) {
  if (callbacks_) {
    ConnectionCallbacks* cb = callbacks_;
    if (e == ConnectionEvent::RemoteClose || e == ConnectionEvent::ConnectFailed)
      callbacks_ = nullptr;
    cb->onEvent(e);
  }
}

void Connection::closeSocket(bool reset) {
  if (socket_closed_) return;
  socket_closed_ = true;
  callbacks_ = nullptr;
  // Timers are only disabled here: this may run inside a timer's callback.
  if (timer_) timer_->disable();
  if (resume_timer_) resume_timer_->disable();
  write_buffer_.clear();
  read_buffer_.clear();
  tls_in_.clear();
  read_slab_ = SlabRef();
  auto* h = reinterpret_cast<uv_handle_t*>(&tcp_);
  if (reset && !connecting_) {
    // An abortive close (RST) for a peer we give up on.
    uv_tcp_close_reset(&tcp_, &Connection::onClosed);
  } else {
    uv_close(h, &Connection::onClosed);
  }
}

void Connection::onClosed(uv_handle_t* h) { delete static_cast<Connection*>(h->data); }

std::string Connection::alpn() const {
  if (!ssl_) return {};
  const uint8_t* p = nullptr;
  unsigned len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return std::string(reinterpret_cast<const char*>(p), len);
}

const char* Connection::tlsVersion() const { return ssl_ ? SSL_get_version(ssl_) : ""; }

const std::string& Connection::peerCertificateSubject() {
  if (peer_subject_read_ || !ssl_ || !handshake_done_ || client_tls_) return peer_subject_;
  peer_subject_read_ = true;
  // Only a certificate the context verified (SSL_VERIFY_PEER fails the
  // handshake otherwise; the check is kept against a context without it).
  X509* cert = SSL_get_peer_certificate(ssl_);
  if (!cert) return peer_subject_;
  if (SSL_get_verify_result(ssl_) == X509_V_OK) {
    X509_NAME* name = X509_get_subject_name(cert);
    int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
    if (i >= 0) {
      ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
      unsigned char* utf8 = nullptr;
      int len = ASN1_STRING_to_UTF8(&utf8, cn);
      // A name with a NUL or a control character matches no client.
      if (len > 0 && len <= 256 &&
          std::all_of(utf8, utf8 + len, [](unsigned char ch) { return ch >= 0x20 && ch != 0x7f; }))
        peer_subject_.assign(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
      OPENSSL_free(utf8);
    }
  }
  X509_free(cert);
  return peer_subject_;
}

const std::string& Connection::peerIp() {
  if (peer_ip_.empty()) {
    char buf[INET6_ADDRSTRLEN] = {0};
    if (peer_.ss_family == AF_INET) {
      inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer_)->sin_addr, buf, sizeof buf);
    } else if (peer_.ss_family == AF_INET6) {
      auto* a6 = reinterpret_cast<sockaddr_in6*>(&peer_);
      if (IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr)) {
        inet_ntop(AF_INET, &a6->sin6_addr.s6_addr[12], buf, sizeof buf);
      } else {
        inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof buf);
      }
    }
    peer_ip_ = buf[0] ? buf : "unknown";
  }
  return peer_ip_;
}

BIO_METHOD* Connection::bioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_TYPE_SOCKET, "eldric-connection");
    BIO_meth_set_read(m, &Connection::bioRead);
    BIO_meth_set_write(m, &Connection::bioWrite);
    BIO_meth_set_ctrl(m, &Connection::bioCtrl);
    return m;
  }();
  return method;
}

int Connection::bioRead(BIO* b, char* out, int len) {
  auto* c = static_cast<Connection*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  if (c->tls_in_.empty()) {
    BIO_set_retry_read(b);
    return -1;
  }
  size_t n = std::min<size_t>(static_cast<size_t>(len), c->tls_in_.length());
  c->tls_in_.copyOut(n, out);
  c->tls_in_.drain(n);
  return static_cast<int>(n);
}

int Connection::bioWrite(BIO* b, const char* in, int len) {
  auto* c = static_cast<Connection*>(BIO_get_data(b));
  BIO_clear_retry_flags(b);
  c->write_buffer_.add(in, static_cast<size_t>(len));
  return len;
}

long Connection::bioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

}  // namespace eldric::network
