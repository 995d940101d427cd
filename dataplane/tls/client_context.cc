#include "dataplane/tls/client_context.h"

#include <openssl/err.h>

namespace eldric::tls {

namespace {
// The same TLS 1.2 suites the listeners accept: ECDHE and AEAD only.
constexpr const char* kCipherList =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kSystemBundle = "/etc/ssl/certs/ca-certificates.crt";
}  // namespace

SslCtxPtr makeClientContext(const std::string& ca_file, const std::string& cert_file,
                            const std::string& key_file, const std::vector<std::string>& alpn,
                            std::string* error) {
  SslCtxPtr ctx(SSL_CTX_new(TLS_method()));
  if (!ctx) {
    *error = "tls: " + lastError();
    return nullptr;
  }
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
  if (!SSL_CTX_set_strict_cipher_list(c, kCipherList)) {
    *error = "tls: cipher list rejected: " + lastError();
    return nullptr;
  }
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  const std::string& ca = ca_file.empty() ? std::string(kSystemBundle) : ca_file;
  if (!SSL_CTX_load_verify_locations(c, ca.c_str(), nullptr)) {
    *error = "tls: cannot load CA file " + ca + ": " + lastError();
    return nullptr;
  }
  // The handshake fails unless the chain verifies; the name check is set
  // per connection (SSL_set1_host / the IP SAN) by network::Connection.
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  if (cert_file.empty() != key_file.empty()) {
    *error = "tls: a client certificate needs both cert_file and key_file";
    return nullptr;
  }
  if (!cert_file.empty()) {
    if (!SSL_CTX_use_certificate_chain_file(c, cert_file.c_str())) {
      *error = "tls: cannot load client certificate " + cert_file + ": " + lastError();
      return nullptr;
    }
    if (!SSL_CTX_use_PrivateKey_file(c, key_file.c_str(), SSL_FILETYPE_PEM) ||
        !SSL_CTX_check_private_key(c)) {
      *error = "tls: client key " + key_file + " does not load or match " + cert_file + ": " +
               lastError();
      return nullptr;
    }
  }
  std::string wire;  // length-prefixed names
  for (const auto& p : alpn) {
    if (p.empty() || p.size() > 255) {
      *error = "tls: bad ALPN protocol name";
      return nullptr;
    }
    wire += static_cast<char>(p.size());
    wire += p;
  }
  // Returns 0 on success (unlike most of this API).
  if (!wire.empty() &&
      SSL_CTX_set_alpn_protos(c, reinterpret_cast<const uint8_t*>(wire.data()), wire.size()) != 0) {
    *error = "tls: cannot set ALPN";
    return nullptr;
  }
  return ctx;
}

}  // namespace eldric::tls
