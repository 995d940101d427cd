#include "dataplane/tls/server_context.h"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cstring>
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

namespace {

// The ServerContext an SSL_CTX belongs to, for the ticket callback.
int contextIndex() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

constexpr size_t kTicketKeyBytes = 80;  // name 16, AES-256 32, HMAC-SHA256 32

}  // namespace

int ServerContext::ticketKey(SSL* ssl, uint8_t* key_name, uint8_t* iv, EVP_CIPHER_CTX* cipher,
                             HMAC_CTX* hmac, int encrypt) {
  auto* self =
      static_cast<ServerContext*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), contextIndex()));
  if (!self || self->ticket_keys_.empty()) return encrypt ? -1 : 0;
  auto use = [&](const std::string& k, bool enc) {
    const auto* b = reinterpret_cast<const uint8_t*>(k.data());
    return HMAC_Init_ex(hmac, b + 48, 32, EVP_sha256(), nullptr) &&
           (enc ? EVP_EncryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, b + 16, iv)
                : EVP_DecryptInit_ex(cipher, EVP_aes_256_cbc(), nullptr, b + 16, iv));
  };
  if (encrypt) {
    const std::string& k = self->ticket_keys_.front();
    memcpy(key_name, k.data(), SSL_TICKET_KEY_NAME_LEN);
    if (!RAND_bytes(iv, EVP_CIPHER_iv_length(EVP_aes_256_cbc()))) return -1;
    return use(k, true) ? 1 : -1;
  }
  for (size_t i = 0; i < self->ticket_keys_.size(); ++i) {
    const std::string& k = self->ticket_keys_[i];
    if (CRYPTO_memcmp(key_name, k.data(), SSL_TICKET_KEY_NAME_LEN) != 0) continue;
    if (!use(k, false)) return -1;
    return i == 0 ? 1 : 2;  // under an older key: accepted, and renewed
  }
  return 0;  // unknown key (rotated out, or another farm's): a full handshake
}

std::shared_ptr<ServerContext> ServerContext::create(const edge::v1::TlsContext& config,
                                                     const edge::v1::SessionTickets& tickets,
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
  // Resumption by tickets only (no server-side cache), under the farm's
  // keys when the snapshot has them: valid on every member and across
  // config changes. A ticket lives at most two rotations.
  if (tickets.has_rotation()) {
    int64_t rotation = tickets.rotation().seconds();
    if (rotation <= 0) {
      SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    } else {
      for (const auto& k : tickets.keys()) {
        if (k.size() != kTicketKeyBytes) {
          *error = "tls: a session ticket key is not " + std::to_string(kTicketKeyBytes) + " bytes";
          return nullptr;
        }
        self->ticket_keys_.push_back(k);
      }
      uint32_t lifetime = static_cast<uint32_t>(std::min<int64_t>(2 * rotation, 7 * 86400));
      SSL_CTX_set_timeout(ctx, lifetime);
      SSL_CTX_set_session_psk_dhe_timeout(ctx, lifetime);
      if (!self->ticket_keys_.empty()) {
        SSL_CTX_set_ex_data(ctx, contextIndex(), self.get());
        SSL_CTX_set_tlsext_ticket_key_cb(ctx, &ServerContext::ticketKey);
      }
    }
  }

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

  // OCSP stapling: the responder's answer the orderer fetched, sent to a
  // client that asks (status_request).
  if (!cert.ocsp_response().empty() &&
      !SSL_CTX_set_ocsp_response(ctx, reinterpret_cast<const uint8_t*>(cert.ocsp_response().data()),
                                 cert.ocsp_response().size())) {
    *error =
        "tls: the OCSP answer for " + cert.certificate_source() + " was refused: " + lastError();
    return nullptr;
  }

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

  // Client certificates: verified against client_ca_pem's CAs (whose
  // names the server sends as acceptable); one that does not verify fails
  // the handshake, none at all only when they are required.
  if (!config.client_ca_pem().empty()) {
    const std::string& ca_pem = config.client_ca_pem();
    std::unique_ptr<BIO, BioDeleter> cbio(BIO_new_mem_buf(ca_pem.data(), ca_pem.size()));
    X509_STORE* store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_NAME)* names = sk_X509_NAME_new_null();
    size_t loaded = 0;
    for (;;) {
      std::unique_ptr<X509, X509Deleter> ca(
          PEM_read_bio_X509(cbio.get(), nullptr, nullptr, nullptr));
      if (!ca) break;
      if (!X509_STORE_add_cert(store, ca.get())) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        *error = "tls: client CA in " + config.client_ca_source() + " rejected: " + lastError();
        return nullptr;
      }
      sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca.get())));
      ++loaded;
    }
    ERR_clear_error();
    if (loaded == 0) {
      sk_X509_NAME_pop_free(names, X509_NAME_free);
      *error = "tls: no PEM certificate in the client CA file " + config.client_ca_source();
      return nullptr;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(
        ctx,
        SSL_VERIFY_PEER |
            (config.require_client_certificate() ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
    SSL_CTX_set_verify_depth(ctx, 5);
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
