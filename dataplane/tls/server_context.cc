#include "dataplane/tls/server_context.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <mutex>

#include "common/pki/pki.h"

namespace eldric::tls {

std::string lastError() {
  uint32_t e = ERR_get_error();
  std::string out;
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  out = buf;
  ERR_clear_error();
  return out;
}

namespace {

// TLS 1.2 suites: ECDHE only (forward secrecy), AEAD only. TLS 1.3 suites
// are fixed by BoringSSL and are all modern.
constexpr const char* kCipherList =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

struct BioDeleter {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Deleter {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyDeleter {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};

}  // namespace

std::shared_ptr<ServerContext> ServerContext::create(const edge::v1::TlsContext& config,
                                                     std::string* error) {
  if (config.certificates_size() == 0) {
    *error = "tls: no certificate configured";
    return nullptr;
  }
  if (config.certificates_size() > 1) {
    *error = "tls: only one certificate per listener is supported";
    return nullptr;
  }
  const auto& cert = config.certificates(0);
  auto self = std::shared_ptr<ServerContext>(new ServerContext());
  self->ctx_.reset(SSL_CTX_new(TLS_method()));
  SSL_CTX* ctx = self->ctx_.get();
  // Mozilla's profiles: intermediate offers TLS 1.2 (ECDHE, AEAD only)
  // and 1.3; modern, 1.3 alone.
  bool modern = config.profile() == edge::v1::TlsContext::PROFILE_MODERN;
  SSL_CTX_set_min_proto_version(ctx, modern ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  if (!SSL_CTX_set_strict_cipher_list(ctx, kCipherList)) {
    *error = "tls: cipher list rejected: " + lastError();
    return nullptr;
  }
  SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
  // Idle connections hold no read/write buffers (BoringSSL frees them when
  // empty by default; say so explicitly for older builds).
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);

  const std::string& chain_pem = cert.certificate_chain_pem();
  std::unique_ptr<BIO, BioDeleter> bio(BIO_new_mem_buf(chain_pem.data(), chain_pem.size()));
  std::unique_ptr<X509, X509Deleter> leaf(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!leaf) {
    ERR_clear_error();
    *error = "tls: no PEM certificate in " + cert.certificate_source();
    return nullptr;
  }
  if (!SSL_CTX_use_certificate(ctx, leaf.get())) {
    *error = "tls: certificate in " + cert.certificate_source() + " rejected: " + lastError();
    return nullptr;
  }
  for (;;) {
    std::unique_ptr<X509, X509Deleter> extra(
        PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!extra) break;
    if (!SSL_CTX_add1_chain_cert(ctx, extra.get())) {
      *error =
          "tls: chain certificate in " + cert.certificate_source() + " rejected: " + lastError();
      return nullptr;
    }
  }
  ERR_clear_error();  // the loop ends on a "no start line" error

  const std::string& key_pem = cert.private_key_pem();
  std::unique_ptr<BIO, BioDeleter> kbio(BIO_new_mem_buf(key_pem.data(), key_pem.size()));
  std::unique_ptr<EVP_PKEY, PkeyDeleter> key(
      PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr));
  if (!key) {
    ERR_clear_error();
    *error = "tls: no readable PEM private key in " + cert.private_key_source();
    return nullptr;
  }
  int type = EVP_PKEY_id(key.get());
  if (type != EVP_PKEY_RSA && type != EVP_PKEY_EC && type != EVP_PKEY_ED25519) {
    *error = "tls: unsupported key type in " + cert.private_key_source() + " (use RSA or ECDSA)";
    return nullptr;
  }
  if (!SSL_CTX_use_PrivateKey(ctx, key.get()) || !SSL_CTX_check_private_key(ctx)) {
    ERR_clear_error();
    *error = "tls: private key in " + cert.private_key_source() +
             " does not match certificate in " + cert.certificate_source();
    return nullptr;
  }

  for (const auto& proto : config.alpn_protocols()) {
    if (proto.empty() || proto.size() > 255) {
      *error = "tls: bad ALPN protocol name";
      return nullptr;
    }
    self->alpn_wire_.push_back(static_cast<unsigned char>(proto.size()));
    self->alpn_wire_.insert(self->alpn_wire_.end(), proto.begin(), proto.end());
  }
  if (!self->alpn_wire_.empty()) {
    SSL_CTX_set_alpn_select_cb(ctx, &ServerContext::selectAlpn, self.get());
  }

  unsigned char md[SHA256_DIGEST_LENGTH];
  unsigned int md_len = 0;
  X509_digest(leaf.get(), EVP_sha256(), md, &md_len);
  static const char* kHex = "0123456789abcdef";
  for (unsigned i = 0; i < md_len; ++i) {
    self->fingerprint_.push_back(kHex[md[i] >> 4]);
    self->fingerprint_.push_back(kHex[md[i] & 15]);
  }
  return self;
}

int ServerContext::selectAlpn(SSL*, const uint8_t** out, uint8_t* out_len, const uint8_t* in,
                              unsigned in_len, void* arg) {
  auto* self = static_cast<ServerContext*>(arg);
  uint8_t* selected = nullptr;
  // Server preference order. A client that offers none of ours still gets
  // HTTP/1.1 (no ALPN extension in the answer) rather than a failed
  // handshake: curl without ALPN support and old SDKs stay usable.
  if (SSL_select_next_proto(&selected, out_len, self->alpn_wire_.data(),
                            static_cast<unsigned>(self->alpn_wire_.size()), in,
                            in_len) != OPENSSL_NPN_NEGOTIATED) {
    return SSL_TLSEXT_ERR_NOACK;
  }
  *out = selected;
  return SSL_TLSEXT_ERR_OK;
}

bool standInCertificate(edge::v1::TlsCertificate* out, std::string* error) {
  static std::mutex mu;
  static edge::v1::TlsCertificate made;
  std::lock_guard<std::mutex> lock(mu);
  if (made.certificate_chain_pem().empty()) {
    auto key = pki::Key::generate(pki::KeyType::EcdsaP256, error);
    std::string pem;
    if (!key || !key->selfSigned({"eldric-edge-acme-stand-in"}, 3650, &pem, error)) return false;
    made.set_certificate_chain_pem(pem);
    made.set_private_key_pem(key->privatePem());
    made.set_certificate_source("stand-in");
    made.set_private_key_source("stand-in");
  }
  *out = made;
  return true;
}

}  // namespace eldric::tls
