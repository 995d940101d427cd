#pragma once

// A server-side TLS context built from a Snapshot's TlsContext: TLS 1.2 and
// 1.3 only, AEAD ciphers with forward secrecy only, ALPN from the snapshot.
// One context is shared by every worker (SSL_CTX is thread-safe); a reload
// builds a new one, and open connections keep the one they started with.

#include <openssl/ssl.h>

#include <memory>
#include <string>
#include <vector>

#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::tls {

struct SslCtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

class ServerContext {
 public:
  // Returns nullptr and sets `error` (naming the offending source) when the
  // material does not load: a bad PEM, a key that does not match, ...
  // `tickets`: the farm's session ticket keys (Snapshot.session_tickets).
  static std::shared_ptr<ServerContext> create(const edge::v1::TlsContext& config,
                                               const edge::v1::SessionTickets& tickets,
                                               std::string* error);
  SSL_CTX* get() const { return ctx_.get(); }
  // SHA-256 of the leaf certificate, hex; for logs after a reload.
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  SslCtxPtr ctx_;
  std::vector<unsigned char> alpn_wire_;
  std::string fingerprint_;
  // Session ticket keys, newest first (80 bytes: name, AES-256, HMAC).
  std::vector<std::string> ticket_keys_;
  static int ticketKey(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                       HMAC_CTX* hmac, int encrypt);
  static int selectAlpn(SSL* ssl, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                        unsigned in_len, void* arg);
};
using ServerContextSharedPtr = std::shared_ptr<ServerContext>;

// What a listener with tls.mode "acme" serves until its first certificate
// is issued: a self-signed ECDSA certificate ("eldric-edge ACME stand-in"),
// made once per process. Clients do not trust it, and /health says why.
bool standInCertificate(edge::v1::TlsCertificate* out, std::string* error);

// The most recent BoringSSL error as text (and clears the queue).
std::string lastError();

}  // namespace eldric::tls
