// What the Edge's TLS library can do alone (issue 23): the primitives of a
// TLS 1.3 ECDHE-ECDSA handshake, and whole handshakes between a client and
// a server in memory (a BIO pair, no sockets), the server's share timed.
// Linked against the same BoringSSL as eldric-edge, so row 3's figures can
// be read against the floor the library sets. CPU time of this thread.
//
//   tls_floor --cert CERT.pem --key KEY.pem [--n 2000] [--handshakes 1000]
//
// One JSON line on stdout: microseconds per operation.

#include <openssl/bio.h>
#include <openssl/curve25519.h>
#include <openssl/ec_key.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <time.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

double cpuSeconds() {
  timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + static_cast<double>(t.tv_nsec) / 1e9;
}

int usage() {
  fprintf(stderr, "usage: tls_floor --cert CERT.pem --key KEY.pem [--n N] [--handshakes N]\n");
  return 2;
}

// One full TLS 1.3 handshake over a BIO pair; the server's CPU time added
// to *server. False if it did not complete.
bool handshake(SSL_CTX* sctx, SSL_CTX* cctx, double* server) {
  SSL* s = SSL_new(sctx);
  SSL* c = SSL_new(cctx);
  BIO* sb = nullptr;
  BIO* cb = nullptr;
  BIO_new_bio_pair(&sb, 0, &cb, 0);
  SSL_set_bio(s, sb, sb);
  SSL_set_bio(c, cb, cb);
  SSL_set_accept_state(s);
  SSL_set_connect_state(c);
  bool done = false;
  for (int step = 0; step < 10 && !done; ++step) {
    int rc = SSL_do_handshake(c);
    double t0 = cpuSeconds();
    int rs = SSL_do_handshake(s);
    *server += cpuSeconds() - t0;
    done = rc == 1 && rs == 1;
  }
  uint8_t byte;
  SSL_read(c, &byte, 0);  // the client takes the session tickets
  SSL_free(s);
  SSL_free(c);
  return done;
}

}  // namespace

int main(int argc, char** argv) {
  std::string cert, key;
  int n = 2000, handshakes = 1000;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return usage();
    if (a == "--cert") {
      cert = argv[++i];
    } else if (a == "--key") {
      key = argv[++i];
    } else if (a == "--n") {
      n = atoi(argv[++i]);
    } else if (a == "--handshakes") {
      handshakes = atoi(argv[++i]);
    } else {
      return usage();
    }
  }
  if (cert.empty() || key.empty() || n <= 0 || handshakes <= 0) return usage();
  FILE* f = fopen(key.c_str(), "r");
  if (!f) return usage();
  EVP_PKEY* pkey = PEM_read_PrivateKey(f, nullptr, nullptr, nullptr);
  fclose(f);
  const EC_KEY* ec = pkey ? EVP_PKEY_get0_EC_KEY(pkey) : nullptr;
  if (!ec) {
    fprintf(stderr, "tls_floor: %s is not an EC private key\n", key.c_str());
    return 1;
  }

  uint8_t pub[32], priv[32], shared[32];
  double t0 = cpuSeconds();
  for (int i = 0; i < n; ++i) X25519_keypair(pub, priv);
  double keypair = (cpuSeconds() - t0) / n;
  t0 = cpuSeconds();
  for (int i = 0; i < n; ++i) X25519(shared, priv, pub);
  double derive = (cpuSeconds() - t0) / n;
  uint8_t digest[32] = {1};
  uint8_t sig[160];  // a DER P-256 signature is at most 72 bytes
  t0 = cpuSeconds();
  for (int i = 0; i < n; ++i) {
    unsigned len = sizeof sig;
    ECDSA_sign(0, digest, sizeof digest, sig, &len, ec);
  }
  double sign = (cpuSeconds() - t0) / n;

  SSL_CTX* sctx = SSL_CTX_new(TLS_method());
  SSL_CTX* cctx = SSL_CTX_new(TLS_method());
  SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
  SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
  if (SSL_CTX_use_certificate_chain_file(sctx, cert.c_str()) != 1 ||
      SSL_CTX_use_PrivateKey(sctx, pkey) != 1) {
    fprintf(stderr, "tls_floor: %s does not load with its key\n", cert.c_str());
    return 1;
  }
  double server = 0;
  t0 = cpuSeconds();
  for (int i = 0; i < handshakes; ++i) {
    if (!handshake(sctx, cctx, &server)) {
      fprintf(stderr, "tls_floor: a handshake did not complete\n");
      return 1;
    }
  }
  double both = (cpuSeconds() - t0) / handshakes;
  printf(
      "{\"library\":\"%s\",\"x25519_keypair_us\":%.1f,\"x25519_us\":%.1f,"
      "\"ecdsa_p256_sign_us\":%.1f,\"handshake_server_us\":%.1f,\"handshake_both_us\":%.1f}\n",
      OPENSSL_VERSION_TEXT, keypair * 1e6, derive * 1e6, sign * 1e6, server / handshakes * 1e6,
      both * 1e6);
  SSL_CTX_free(sctx);
  SSL_CTX_free(cctx);
  EVP_PKEY_free(pkey);
  return 0;
}
