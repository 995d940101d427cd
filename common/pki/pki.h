#pragma once

// Keys, JWS signatures, certificate requests and certificates: what the
// ACME client (controlplane/core/acme) and the data plane's TLS stand-in
// need. Written to the part of the API that OpenSSL 3 and BoringSSL share
// and built twice: `:pki_openssl` for the control plane (which links
// OpenSSL 3 through gRPC) and `:pki_boringssl` for the Edge. The two must
// never meet in one binary.

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace eldric::pki {

enum class KeyType { EcdsaP256, Rsa2048 };

// "ecdsa-p256" / "rsa-2048" (the config's spelling) and back.
const char* keyTypeName(KeyType type);
bool parseKeyType(std::string_view name, KeyType* out);

class Key {
 public:
  static std::unique_ptr<Key> generate(KeyType type, std::string* error);
  // A PEM private key (PKCS#8 or the traditional EC/RSA forms).
  static std::unique_ptr<Key> fromPem(std::string_view pem, std::string* error);
  ~Key();
  Key(const Key&) = delete;
  Key& operator=(const Key&) = delete;

  KeyType type() const { return type_; }
  // PKCS#8 PEM. Secret: never logged.
  std::string privatePem() const;
  // The public key as a JWK with only the required members, in
  // lexicographic order and without whitespace: RFC 7638's input to the
  // thumbprint, and what a JWS header carries.
  std::string publicJwk() const;
  // "ES256" or "RS256".
  const char* jwsAlgorithm() const;
  // A JWS signature over `data` (SHA-256): for ES256 the 64-byte r||s of
  // RFC 7518 section 3.4, not DER.
  bool sign(std::string_view data, std::string* signature, std::string* error) const;
  // A PKCS#10 request (DER) for `names` (subjectAltName dNSName each; the
  // first also the common name when it fits in 64 characters).
  bool certificateRequest(const std::vector<std::string>& names, std::string* der,
                          std::string* error) const;
  // A self-signed certificate (PEM) for `names`, valid from an hour ago
  // for `days`.
  bool selfSigned(const std::vector<std::string>& names, int days, std::string* pem,
                  std::string* error) const;

 private:
  Key(void* pkey, KeyType type) : pkey_(pkey), type_(type) {}
  void* pkey_;  // EVP_PKEY*
  KeyType type_;
};

struct CertificateInfo {
  std::vector<std::string> names;  // the leaf's dNSNames, else its common name
  std::string subject;             // the leaf's common name
  std::string issuer;              // the issuer's common name (or organization)
  int64_t not_before = 0;          // Unix seconds
  int64_t not_after = 0;
  size_t chain_length = 0;  // certificates in the PEM
};

// The first certificate of a PEM chain. False with `*error` when there is
// none or it does not parse.
bool inspectChain(std::string_view pem, CertificateInfo* out, std::string* error);

// The chain's leaf holds `key`'s public half.
bool chainMatchesKey(std::string_view pem, const Key& key);

// ACME Renewal Information (RFC 9773 section 4.1): the leaf's certificate
// identifier, base64url(Authority Key Identifier's keyIdentifier) "."
// base64url(serial number's DER content octets). False with `*error` when
// the leaf has no Authority Key Identifier.
bool ariCertificateId(std::string_view chain_pem, std::string* id, std::string* error);

// OCSP (RFC 6960), for stapling. What to ask the leaf's responder: its
// URL (the leaf's Authority Information Access), the request (DER: one
// CertID, SHA-1 as RFC 5019 profiles it) and the leaf's serial (the
// INTEGER's DER), which the answer must name.
struct OcspRequest {
  std::string url;
  std::string der;
  std::string serial;
};
// False with `*error` when the leaf names no responder, or the chain does
// not hold its issuer (the second certificate).
bool ocspRequest(std::string_view chain_pem, OcspRequest* out, std::string* error);
// A responder's answer (DER, untrusted): "successful", a basic response
// whose entry for `serial` is "good", current at `now` (thisUpdate not in
// the future, nextUpdate not past). Sets its thisUpdate and nextUpdate
// (0 when it has none). The signature is left to the TLS client, which
// checks a stapled answer itself.
bool checkOcspResponse(std::string_view der, std::string_view serial, int64_t now,
                       int64_t* this_update, int64_t* next_update, std::string* error);

// The token a supervised farm's members present to the primary's control
// plane (metadata "eldric-farm-token", common/config/farm_plan.h): hex
// HMAC-SHA256 of a fixed label, keyed with the members' shared secret:
// `secret_file`'s first line (trailing blanks removed, 16 characters or
// more) when given, else the PKCS#8 encoding of the private key in
// `key_file` (so a key stored as PKCS#1 on one member and PKCS#8 on
// another gives the same token): whoever holds the key the farm serves
// with is a member. Both builds give the same token (pki_test checks one
// value in each). False with `*error` naming the file.
bool farmToken(const std::string& secret_file, const std::string& key_file, std::string* token,
               std::string* error);

}  // namespace eldric::pki
