#pragma once

// A TCP connection on one dispatcher, optionally wrapped in TLS. TLS runs
// over a custom BIO that reads from the bytes libuv delivered and writes
// into the connection's outgoing buffer, so ciphertext is never copied
// through a memory BIO.
//
// Lifetime: a Connection deletes itself once its socket is closed (as a
// libuv handle does). Its owner learns of the close through onEvent() and
// must not touch the pointer after that event or after calling close().

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/address.h"
#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"

namespace eldric::network {

enum class ConnectionEvent {
  Connected,      // client side: the TCP connect finished
  ConnectFailed,  // client side: refused, unreachable or timed out
  RemoteClose,    // the peer closed or reset, or a read/TLS error
  LocalClose,     // close() was called
};

class ConnectionCallbacks {
 public:
  virtual ~ConnectionCallbacks() = default;
  // Plaintext bytes; take what is needed (move or drain), the rest is kept
  // and offered again with the next read.
  virtual void onData(Buffer& data) = 0;
  virtual void onEvent(ConnectionEvent event) = 0;
  // The outgoing buffer crossed the high watermark / fell below the low one.
  virtual void onAboveWriteBufferHighWatermark() {}
  virtual void onBelowWriteBufferLowWatermark() {}
  // The peer shut down its sending side (a TCP FIN) while this side may
  // still write. Return true to keep the connection open for writing (it
  // is closed with close() later); false to treat it as RemoteClose.
  virtual bool onRemoteHalfClose() { return false; }
};

enum class CloseType { FlushWrite, NoFlush };

struct ConnectionOptions {
  size_t high_watermark = 256 * 1024;
  size_t low_watermark = 64 * 1024;
  // How long a FlushWrite close may wait for a peer that does not read.
  uint64_t flush_timeout_ms = 5000;
};

class Connection : public Flushable, public ExpensiveWork {
 public:
  // Adopts an accepted socket. `tls` (may be null) is the server context.
  static Connection* accept(Dispatcher& dispatcher, uv_stream_t* server, SSL_CTX* tls,
                            const ConnectionOptions& options, int* error);
  // Starts a client connection to `addr`. With `client_tls` (a client
  // context; it decides verification and ALPN), the TLS handshake runs
  // after the TCP connect and Connected is raised only once it is done;
  // `timeout_ms` covers both. `server_name` is sent as SNI (unless it is an
  // IP literal, which SNI cannot carry) and is the name the certificate
  // must match when the context verifies the peer. A failed handshake is
  // ConnectFailed, with the reason in tlsError().
  static Connection* connect(Dispatcher& dispatcher, const sockaddr* addr, uint64_t timeout_ms,
                             const ConnectionOptions& options, SSL_CTX* client_tls = nullptr,
                             const std::string& server_name = std::string());

  void setCallbacks(ConnectionCallbacks* cb) { callbacks_ = cb; }
  // Queues `data` (plaintext) for the peer; consumes it.
  void write(Buffer& data);
  // Reference-counted: reading resumes when every disable is undone.
  void readDisable(bool disable);
  bool readEnabled() const { return read_disable_count_ == 0; }
  // Delivers LocalClose to the callbacks, then detaches them.
  void close(CloseType type);

  size_t bufferedWriteBytes() const {
    return write_buffer_.length() + in_flight_bytes_ + pending_plain_.length();
  }
  bool aboveHighWatermark() const { return above_high_; }
  bool isTls() const { return ssl_ != nullptr; }
  bool tlsHandshakeDone() const { return handshake_done_; }
  // "h2", "http/1.1" or empty.
  std::string alpn() const;
  const char* tlsVersion() const;
  // Why the TLS handshake or session failed ("CERTIFICATE_VERIFY_FAILED
  // ..."); empty otherwise. Read it inside onEvent().
  const std::string& tlsError() const { return tls_error_; }
  const sockaddr_storage& peerAddress() const { return peer_; }
  // The peer's IP as text ("203.0.113.9", "::1"), computed once.
  const std::string& peerIp();
  // The subject common name of the client certificate the peer presented
  // and the TLS context verified (client_ca_pem); "" when none.
  const std::string& peerCertificateSubject();
  uint64_t bytesReceived() const { return bytes_received_; }
  uint64_t bytesSent() const { return bytes_sent_; }
  Dispatcher& dispatcher() { return dispatcher_; }

 private:
  Connection(Dispatcher& dispatcher, const ConnectionOptions& options);
  ~Connection() override;

  // Flushable: encrypts what was written during this loop iteration (one
  // TLS record per 16 KB, not one per write) and starts the socket write.
  void onFlush() override;
  // A TLS server connection whose first handshake step waited for the
  // loop's expensive-work budget takes it now.
  void onAdmitted() override;
  void holdWhileQueued();
  void scheduleFlush();
  void encryptPending();

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWrite(uv_write_t* req, int status);
  static void onConnect(uv_connect_t* req, int status);
  static void onClosed(uv_handle_t* h);

  void startReading();
  void handleRead(ssize_t nread);
  void deliver();
  void doTlsRead();
  bool doHandshake();
  bool startClientTls(SSL_CTX* ctx, const std::string& server_name);
  // A client still in its TLS handshake reports failures as ConnectFailed.
  ConnectionEvent failureEvent() const {
    return client_tls_ && !handshake_done_ ? ConnectionEvent::ConnectFailed
                                           : ConnectionEvent::RemoteClose;
  }
  void flush();
  void checkWatermarks();
  void raise(ConnectionEvent e);
  void closeSocket(bool reset);
  void resumeBufferedTls();

  static BIO_METHOD* bioMethod();
  static int bioRead(BIO* b, char* out, int len);
  static int bioWrite(BIO* b, const char* in, int len);
  static long bioCtrl(BIO* b, int cmd, long num, void* ptr);

  Dispatcher& dispatcher_;
  ConnectionOptions options_;
  uv_tcp_t tcp_;
  ConnectionCallbacks* callbacks_ = nullptr;
  SSL* ssl_ = nullptr;
  bool handshake_done_ = false;
  bool handshake_queued_ = false;    // waiting for the loop's budget
  bool handshake_admitted_ = false;  // its first handshake step may run
  bool client_tls_ = false;          // TLS as the client (connect() with a context)
  std::string tls_error_;
  bool connecting_ = false;
  bool closing_ = false;  // close() called; flushing or closed
  bool socket_closed_ = false;
  bool remote_closed_ = false;
  bool above_high_ = false;
  int read_disable_count_ = 0;

  // The slab libuv reads into; kept while it still has room.
  SlabRef read_slab_;
  uint32_t read_offset_ = 0;
  Buffer tls_in_;         // ciphertext not yet consumed by BoringSSL
  Buffer read_buffer_;    // plaintext not yet taken by the callbacks
  Buffer write_buffer_;   // bytes for the wire (ciphertext under TLS)
  Buffer pending_plain_;  // TLS: plaintext written this iteration, not yet encrypted
  bool flush_scheduled_ = false;
  struct WriteReq;
  WriteReq* in_flight_ = nullptr;
  size_t in_flight_bytes_ = 0;
  std::unique_ptr<Timer> timer_;  // connect timeout or flush timeout
  std::unique_ptr<Timer> resume_timer_;
  bool resume_posted_ = false;

  sockaddr_storage peer_{};
  std::string peer_ip_;
  std::string peer_subject_;
  bool peer_subject_read_ = false;
  uint64_t bytes_received_ = 0;
  uint64_t bytes_sent_ = 0;
};

}  // namespace eldric::network
