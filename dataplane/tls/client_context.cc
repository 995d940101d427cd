#include "dataplane/tls/client_context.h"

#include <openssl/err.h>
#include <openssl/mem.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <string>

namespace eldric::tls {

namespace {
// The same TLS 1.2 suites the listeners accept: ECDHE and AEAD only.
constexpr const char* kCipherList =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
constexpr const char* kSystemBundle = "/etc/ssl/certs/ca-certificates.crt";

// The pinned key's SubjectPublicKeyInfo (DER), on the context.
int pinIndex() {
  static const int index = SSL_CTX_get_ex_new_index(
      0, nullptr, nullptr, nullptr, [](void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
        delete static_cast<std::string*>(ptr);
      });
  return index;
}

std::string spkiOf(X509* cert) {
  uint8_t* der = nullptr;
  int len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &der);
  if (len <= 0) return "";
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

// The server's leaf must carry the pinned key; nothing else is checked.
ssl_verify_result_t verifyPin(SSL* ssl, uint8_t* alert) {
  *alert = SSL_AD_BAD_CERTIFICATE;
  const auto* pin =
      static_cast<const std::string*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), pinIndex()));
  const STACK_OF(CRYPTO_BUFFER)* chain = SSL_get0_peer_certificates(ssl);
  if (!pin || !chain || sk_CRYPTO_BUFFER_num(chain) == 0) return ssl_verify_invalid;
  bssl::UniquePtr<X509> leaf(X509_parse_from_buffer(sk_CRYPTO_BUFFER_value(chain, 0)));
  if (!leaf) return ssl_verify_invalid;
  std::string spki = spkiOf(leaf.get());
  bool same = !spki.empty() && spki.size() == pin->size() &&
              CRYPTO_memcmp(spki.data(), pin->data(), spki.size()) == 0;
  return same ? ssl_verify_ok : ssl_verify_invalid;
}

}  // namespace

SslCtxPtr makeClientContext(const std::string& ca_file, const std::string& cert_file,
                            const std::string& key_file, const std::vector<std::string>& alpn,
                            std::string* error, const std::string& pin_certificate_file) {
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
  if (!pin_certificate_file.empty()) {
    bssl::UniquePtr<BIO> bio(BIO_new_file(pin_certificate_file.c_str(), "r"));
    bssl::UniquePtr<X509> cert(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                                   : nullptr);
    std::string spki = cert ? spkiOf(cert.get()) : std::string();
    if (spki.empty()) {
      *error = "tls: cannot read the certificate to pin from " + pin_certificate_file + ": " +
               lastError();
      return nullptr;
    }
    SSL_CTX_set_ex_data(c, pinIndex(), new std::string(std::move(spki)));
    SSL_CTX_set_custom_verify(c, SSL_VERIFY_PEER, verifyPin);
  } else {
    const std::string& ca = ca_file.empty() ? std::string(kSystemBundle) : ca_file;
    if (!SSL_CTX_load_verify_locations(c, ca.c_str(), nullptr)) {
      *error = "tls: cannot load CA file " + ca + ": " + lastError();
      return nullptr;
    }
    // The handshake fails unless the chain verifies; the name check is set
    // per connection (SSL_set1_host / the IP SAN) by network::Connection.
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
  }
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
