// Built against OpenSSL 3 and against BoringSSL (see pki.h): only calls
// both provide. OpenSSL 3 deprecates the EC_KEY/RSA accessors used for the
// JWK; they remain, and BoringSSL has nothing newer.
#define OPENSSL_SUPPRESS_DEPRECATED 1

#include "common/pki/pki.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstring>
#include <ctime>

#include "common/base64url.h"
#include "common/file.h"
#include "common/hex.h"

namespace eldric::pki {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(EVP_PKEY_CTX* p) const { EVP_PKEY_CTX_free(p); }
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_REQ* p) const { X509_REQ_free(p); }
  void operator()(X509_NAME* p) const { X509_NAME_free(p); }
  void operator()(ECDSA_SIG* p) const { ECDSA_SIG_free(p); }
  void operator()(GENERAL_NAMES* p) const { GENERAL_NAMES_free(p); }
  void operator()(BIGNUM* p) const { BN_free(p); }
  void operator()(AUTHORITY_INFO_ACCESS* p) const { AUTHORITY_INFO_ACCESS_free(p); }
  void operator()(AUTHORITY_KEYID* p) const { AUTHORITY_KEYID_free(p); }
  void operator()(STACK_OF(X509_EXTENSION) * p) const {
    sk_X509_EXTENSION_pop_free(p, X509_EXTENSION_free);
  }
};
template <typename T>
using Ptr = std::unique_ptr<T, Free>;

// The library's reason for the last failure, with `what` in front.
std::string sslError(const std::string& what) {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return what;
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return what + ": " + buf;
}

std::string bnBytes(const BIGNUM* bn, size_t len) {
  std::string out(len ? len : static_cast<size_t>(BN_num_bytes(bn)), '\0');
  BN_bn2binpad(bn, reinterpret_cast<uint8_t*>(out.data()), static_cast<int>(out.size()));
  return out;
}

std::string bioString(BIO* bio) {
  char* data = nullptr;
  long len = BIO_get_mem_data(bio, &data);
  return len > 0 ? std::string(data, static_cast<size_t>(len)) : std::string();
}

// dNSName entries for `names`.
Ptr<GENERAL_NAMES> dnsNames(const std::vector<std::string>& names) {
  Ptr<GENERAL_NAMES> gens(GENERAL_NAMES_new());
  if (!gens) return nullptr;
  for (const auto& n : names) {
    GENERAL_NAME* gen = GENERAL_NAME_new();
    ASN1_IA5STRING* ia5 = ASN1_IA5STRING_new();
    if (!gen || !ia5 || !ASN1_STRING_set(ia5, n.data(), static_cast<int>(n.size()))) {
      GENERAL_NAME_free(gen);
      ASN1_IA5STRING_free(ia5);
      return nullptr;
    }
    GENERAL_NAME_set0_value(gen, GEN_DNS, ia5);
    if (!sk_GENERAL_NAME_push(gens.get(), gen)) {
      GENERAL_NAME_free(gen);
      return nullptr;
    }
  }
  return gens;
}

Ptr<X509_NAME> commonName(const std::string& cn) {
  Ptr<X509_NAME> name(X509_NAME_new());
  if (!name) return nullptr;
  if (!cn.empty() && !X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                                 reinterpret_cast<const unsigned char*>(cn.data()),
                                                 static_cast<int>(cn.size()), -1, 0))
    return nullptr;
  return name;
}

std::string nameEntry(const X509_NAME* name, int nid) {
  int i = X509_NAME_get_index_by_NID(name, nid, -1);
  if (i < 0) return "";
  const ASN1_STRING* s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
  if (!s) return "";
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

// Unix seconds of an ASN.1 time (relative to now, which both libraries
// can compute).
bool unixTime(const ASN1_TIME* t, int64_t* out) {
  int days = 0, secs = 0;
  if (!t || !ASN1_TIME_diff(&days, &secs, nullptr, t)) return false;
  *out = static_cast<int64_t>(time(nullptr)) + int64_t{days} * 86400 + secs;
  return true;
}

}  // namespace

const char* keyTypeName(KeyType type) {
  return type == KeyType::Rsa2048 ? "rsa-2048" : "ecdsa-p256";
}

bool parseKeyType(std::string_view name, KeyType* out) {
  if (name == "ecdsa-p256") {
    *out = KeyType::EcdsaP256;
  } else if (name == "rsa-2048") {
    *out = KeyType::Rsa2048;
  } else {
    return false;
  }
  return true;
}

std::unique_ptr<Key> Key::generate(KeyType type, std::string* error) {
  Ptr<EVP_PKEY_CTX> ctx(
      EVP_PKEY_CTX_new_id(type == KeyType::Rsa2048 ? EVP_PKEY_RSA : EVP_PKEY_EC, nullptr));
  EVP_PKEY* raw = nullptr;
  bool ok = ctx && EVP_PKEY_keygen_init(ctx.get()) == 1 &&
            (type == KeyType::Rsa2048
                 ? EVP_PKEY_CTX_set_rsa_keygen_bits(ctx.get(), 2048) == 1
                 : EVP_PKEY_CTX_set_ec_paramgen_curve_nid(ctx.get(), NID_X9_62_prime256v1) == 1) &&
            EVP_PKEY_keygen(ctx.get(), &raw) == 1;
  if (!ok) {
    *error = sslError("cannot generate a key");
    return nullptr;
  }
  return std::unique_ptr<Key>(new Key(raw, type));
}

std::unique_ptr<Key> Key::fromPem(std::string_view pem, std::string* error) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Ptr<EVP_PKEY> pkey(bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!pkey) {
    *error = sslError("not a PEM private key");
    return nullptr;
  }
  KeyType type;
  if (EVP_PKEY_id(pkey.get()) == EVP_PKEY_RSA && EVP_PKEY_bits(pkey.get()) >= 2048) {
    type = KeyType::Rsa2048;
  } else if (EVP_PKEY_id(pkey.get()) == EVP_PKEY_EC &&
             EC_GROUP_get_curve_name(EC_KEY_get0_group(EVP_PKEY_get0_EC_KEY(pkey.get()))) ==
                 NID_X9_62_prime256v1) {
    type = KeyType::EcdsaP256;
  } else {
    *error = "the key is neither ECDSA P-256 nor RSA of 2048 bits or more";
    return nullptr;
  }
  return std::unique_ptr<Key>(new Key(pkey.release(), type));
}

Key::~Key() { EVP_PKEY_free(static_cast<EVP_PKEY*>(pkey_)); }

std::string Key::privatePem() const {
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!bio || !PEM_write_bio_PrivateKey(bio.get(), static_cast<EVP_PKEY*>(pkey_), nullptr, nullptr,
                                        0, nullptr, nullptr))
    return "";
  return bioString(bio.get());
}

std::string Key::publicJwk() const {
  auto* pkey = static_cast<EVP_PKEY*>(pkey_);
  if (type_ == KeyType::Rsa2048) {
    const BIGNUM *n = nullptr, *e = nullptr;
    RSA_get0_key(EVP_PKEY_get0_RSA(pkey), &n, &e, nullptr);
    return "{\"e\":\"" + base64UrlEncode(bnBytes(e, 0)) + "\",\"kty\":\"RSA\",\"n\":\"" +
           base64UrlEncode(bnBytes(n, 0)) + "\"}";
  }
  const EC_KEY* ec = EVP_PKEY_get0_EC_KEY(pkey);
  Ptr<BIGNUM> x(BN_new()), y(BN_new());
  if (!x || !y ||
      !EC_POINT_get_affine_coordinates_GFp(EC_KEY_get0_group(ec), EC_KEY_get0_public_key(ec),
                                           x.get(), y.get(), nullptr))
    return "";
  return "{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"" + base64UrlEncode(bnBytes(x.get(), 32)) +
         "\",\"y\":\"" + base64UrlEncode(bnBytes(y.get(), 32)) + "\"}";
}

const char* Key::jwsAlgorithm() const { return type_ == KeyType::Rsa2048 ? "RS256" : "ES256"; }

bool Key::sign(std::string_view data, std::string* signature, std::string* error) const {
  Ptr<EVP_MD_CTX> md(EVP_MD_CTX_new());
  size_t len = 0;
  if (!md ||
      EVP_DigestSignInit(md.get(), nullptr, EVP_sha256(), nullptr, static_cast<EVP_PKEY*>(pkey_)) !=
          1 ||
      EVP_DigestSign(md.get(), nullptr, &len, reinterpret_cast<const uint8_t*>(data.data()),
                     data.size()) != 1) {
    *error = sslError("cannot sign");
    return false;
  }
  std::string der(len, '\0');
  if (EVP_DigestSign(md.get(), reinterpret_cast<uint8_t*>(der.data()), &len,
                     reinterpret_cast<const uint8_t*>(data.data()), data.size()) != 1) {
    *error = sslError("cannot sign");
    return false;
  }
  der.resize(len);
  if (type_ == KeyType::Rsa2048) {
    *signature = std::move(der);
    return true;
  }
  const auto* p = reinterpret_cast<const uint8_t*>(der.data());
  Ptr<ECDSA_SIG> sig(d2i_ECDSA_SIG(nullptr, &p, static_cast<long>(der.size())));
  if (!sig) {
    *error = sslError("cannot decode the ECDSA signature");
    return false;
  }
  const BIGNUM *r = nullptr, *s = nullptr;
  ECDSA_SIG_get0(sig.get(), &r, &s);
  *signature = bnBytes(r, 32) + bnBytes(s, 32);
  return true;
}

bool Key::certificateRequest(const std::vector<std::string>& names, std::string* der,
                             std::string* error) const {
  auto* pkey = static_cast<EVP_PKEY*>(pkey_);
  Ptr<X509_REQ> req(X509_REQ_new());
  Ptr<GENERAL_NAMES> gens = dnsNames(names);
  Ptr<X509_NAME> subject =
      commonName(!names.empty() && names[0].size() <= 64 ? names[0] : std::string());
  Ptr<STACK_OF(X509_EXTENSION)> exts(sk_X509_EXTENSION_new_null());
  bool ok = req && gens && subject && exts && X509_REQ_set_version(req.get(), 0) &&
            X509_REQ_set_subject_name(req.get(), subject.get()) &&
            X509_REQ_set_pubkey(req.get(), pkey) &&
            X509V3_add1_i2d(reinterpret_cast<STACK_OF(X509_EXTENSION)**>(&exts),
                            NID_subject_alt_name, gens.get(), 0, 0) == 1 &&
            X509_REQ_add_extensions(req.get(), exts.get()) &&
            X509_REQ_sign(req.get(), pkey, EVP_sha256()) > 0;
  if (!ok) {
    *error = sslError("cannot make the certificate request");
    return false;
  }
  int len = i2d_X509_REQ(req.get(), nullptr);
  if (len <= 0) {
    *error = sslError("cannot encode the certificate request");
    return false;
  }
  der->assign(static_cast<size_t>(len), '\0');
  auto* out = reinterpret_cast<uint8_t*>(der->data());
  i2d_X509_REQ(req.get(), &out);
  return true;
}

bool Key::selfSigned(const std::vector<std::string>& names, int days, std::string* pem,
                     std::string* error) const {
  auto* pkey = static_cast<EVP_PKEY*>(pkey_);
  Ptr<X509> x(X509_new());
  Ptr<GENERAL_NAMES> gens = dnsNames(names);
  Ptr<X509_NAME> name = commonName(names.empty() ? "eldric-edge" : names[0].substr(0, 64));
  Ptr<BIGNUM> serial(BN_new());
  bool ok =
      x && gens && name && serial && X509_set_version(x.get(), 2) &&
      BN_rand(serial.get(), 64, 0, 0) &&
      BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(x.get())) &&
      X509_gmtime_adj(X509_getm_notBefore(x.get()), -3600) &&
      X509_gmtime_adj(X509_getm_notAfter(x.get()), long{days} * 86400) &&
      X509_set_subject_name(x.get(), name.get()) && X509_set_issuer_name(x.get(), name.get()) &&
      X509_set_pubkey(x.get(), pkey) &&
      (names.empty() || X509_add1_ext_i2d(x.get(), NID_subject_alt_name, gens.get(), 0, 0) == 1) &&
      X509_sign(x.get(), pkey, EVP_sha256()) > 0;
  Ptr<BIO> bio(BIO_new(BIO_s_mem()));
  if (!ok || !bio || !PEM_write_bio_X509(bio.get(), x.get())) {
    *error = sslError("cannot make a self-signed certificate");
    return false;
  }
  *pem = bioString(bio.get());
  return true;
}

bool inspectChain(std::string_view pem, CertificateInfo* out, std::string* error) {
  *out = CertificateInfo{};
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Ptr<X509> leaf(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  if (!leaf) {
    ERR_clear_error();
    *error = "no PEM certificate";
    return false;
  }
  out->chain_length = 1;
  while (Ptr<X509>(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr))) ++out->chain_length;
  ERR_clear_error();
  out->subject = nameEntry(X509_get_subject_name(leaf.get()), NID_commonName);
  const X509_NAME* issuer = X509_get_issuer_name(leaf.get());
  out->issuer = nameEntry(issuer, NID_commonName);
  if (out->issuer.empty()) out->issuer = nameEntry(issuer, NID_organizationName);
  Ptr<GENERAL_NAMES> gens(static_cast<GENERAL_NAMES*>(
      X509_get_ext_d2i(leaf.get(), NID_subject_alt_name, nullptr, nullptr)));
  for (size_t i = 0; gens && i < sk_GENERAL_NAME_num(gens.get()); ++i) {
    const GENERAL_NAME* gen = sk_GENERAL_NAME_value(gens.get(), i);
    if (gen->type != GEN_DNS) continue;
    const ASN1_STRING* s = gen->d.dNSName;
    out->names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                            static_cast<size_t>(ASN1_STRING_length(s)));
  }
  if (out->names.empty() && !out->subject.empty()) out->names.push_back(out->subject);
  if (!unixTime(X509_get0_notBefore(leaf.get()), &out->not_before) ||
      !unixTime(X509_get0_notAfter(leaf.get()), &out->not_after)) {
    *error = "the certificate's validity does not parse";
    return false;
  }
  return true;
}

bool chainMatchesKey(std::string_view pem, const Key& key) {
  Ptr<BIO> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  Ptr<X509> leaf(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!leaf) return false;
  // Compare the public halves through the private key's own serialization
  // of its public part (both libraries agree on i2d_PUBKEY).
  const std::string key_pem = key.privatePem();
  Ptr<BIO> probe(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
  Ptr<EVP_PKEY> priv(probe ? PEM_read_bio_PrivateKey(probe.get(), nullptr, nullptr, nullptr)
                           : nullptr);
  EVP_PKEY* pub = X509_get_pubkey(leaf.get());
  bool same = false;
  if (priv && pub) {
    uint8_t *a = nullptr, *b = nullptr;
    int la = i2d_PUBKEY(priv.get(), &a), lb = i2d_PUBKEY(pub, &b);
    same = la > 0 && la == lb && memcmp(a, b, static_cast<size_t>(la)) == 0;
    OPENSSL_free(a);
    OPENSSL_free(b);
  }
  EVP_PKEY_free(pub);
  ERR_clear_error();
  return same;
}

namespace {

// DER, as much as OCSP needs.
void appendTlv(std::string& out, uint8_t tag, std::string_view content) {
  out.push_back(static_cast<char>(tag));
  size_t n = content.size();
  if (n < 0x80) {
    out.push_back(static_cast<char>(n));
  } else {
    std::string len;
    for (; n; n >>= 8) len.insert(len.begin(), static_cast<char>(n & 0xff));
    out.push_back(static_cast<char>(0x80 | len.size()));
    out += len;
  }
  out.append(content.data(), content.size());
}

// Reads one TLV off the front of `*in` (definite lengths, single-byte
// tags). False on anything malformed or truncated.
bool readTlv(std::string_view* in, uint8_t* tag, std::string_view* content) {
  if (in->size() < 2) return false;
  *tag = static_cast<uint8_t>((*in)[0]);
  if ((*tag & 0x1f) == 0x1f) return false;  // multi-byte tags: not in OCSP
  size_t len = static_cast<uint8_t>((*in)[1]);
  size_t head = 2;
  if (len & 0x80) {
    size_t bytes = len & 0x7f;
    if (bytes == 0 || bytes > 4 || in->size() < 2 + bytes) return false;
    len = 0;
    for (size_t i = 0; i < bytes; ++i) len = (len << 8) | static_cast<uint8_t>((*in)[2 + i]);
    head += bytes;
  }
  if (len > in->size() - head) return false;
  *content = in->substr(head, len);
  in->remove_prefix(head + len);
  return true;
}

// Reads a TLV that must have tag `want`.
bool expect(std::string_view* in, uint8_t want, std::string_view* content) {
  uint8_t tag = 0;
  return readTlv(in, &tag, content) && tag == want;
}

// "YYYYMMDDHHMMSSZ" (RFC 5280's GeneralizedTime, no fractions).
bool generalizedTime(std::string_view t, int64_t* out) {
  if (t.size() != 15 || t[14] != 'Z') return false;
  int v[6] = {0};
  const int widths[6] = {4, 2, 2, 2, 2, 2};
  size_t at = 0;
  for (int i = 0; i < 6; ++i) {
    for (int j = 0; j < widths[i]; ++j, ++at) {
      if (t[at] < '0' || t[at] > '9') return false;
      v[i] = v[i] * 10 + (t[at] - '0');
    }
  }
  if (v[1] < 1 || v[1] > 12 || v[2] < 1 || v[2] > 31 || v[3] > 23 || v[4] > 59 || v[5] > 60)
    return false;
  struct tm tm = {};
  tm.tm_year = v[0] - 1900;
  tm.tm_mon = v[1] - 1;
  tm.tm_mday = v[2];
  tm.tm_hour = v[3];
  tm.tm_min = v[4];
  tm.tm_sec = v[5];
  *out = static_cast<int64_t>(timegm(&tm));
  return true;
}

bool sha1(const void* data, size_t len, std::string* out) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (!EVP_Digest(data, len, md, &n, EVP_sha1(), nullptr)) return false;
  out->assign(reinterpret_cast<char*>(md), n);
  return true;
}

}  // namespace

bool ariCertificateId(std::string_view chain_pem, std::string* id, std::string* error) {
  Ptr<BIO> bio(BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())));
  Ptr<X509> leaf(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!leaf) {
    *error = "no PEM certificate";
    return false;
  }
  Ptr<AUTHORITY_KEYID> aki(static_cast<AUTHORITY_KEYID*>(
      X509_get_ext_d2i(leaf.get(), NID_authority_key_identifier, nullptr, nullptr)));
  if (!aki || !aki->keyid || ASN1_STRING_length(aki->keyid) <= 0) {
    *error = "the certificate has no Authority Key Identifier";
    return false;
  }
  unsigned char* serial_der = nullptr;
  int n = i2d_ASN1_INTEGER(X509_get_serialNumber(leaf.get()), &serial_der);
  std::string_view serial_tlv(reinterpret_cast<char*>(serial_der), n > 0 ? n : 0);
  std::string_view content;
  bool ok = n > 0 && expect(&serial_tlv, 0x02, &content);
  if (ok) {
    *id = base64UrlEncode(
              std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(aki->keyid)),
                               static_cast<size_t>(ASN1_STRING_length(aki->keyid)))) +
          "." + base64UrlEncode(content);
  }
  OPENSSL_free(serial_der);
  if (!ok) *error = "the certificate's serial number does not encode";
  return ok;
}

bool ocspRequest(std::string_view chain_pem, OcspRequest* out, std::string* error) {
  *out = OcspRequest{};
  Ptr<BIO> bio(BIO_new_mem_buf(chain_pem.data(), static_cast<int>(chain_pem.size())));
  Ptr<X509> leaf(bio ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  Ptr<X509> issuer(leaf ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!leaf) {
    *error = "no PEM certificate";
    return false;
  }
  Ptr<AUTHORITY_INFO_ACCESS> aia(static_cast<AUTHORITY_INFO_ACCESS*>(
      X509_get_ext_d2i(leaf.get(), NID_info_access, nullptr, nullptr)));
  for (size_t i = 0; aia && i < sk_ACCESS_DESCRIPTION_num(aia.get()); ++i) {
    const ACCESS_DESCRIPTION* ad = sk_ACCESS_DESCRIPTION_value(aia.get(), i);
    if (OBJ_obj2nid(ad->method) != NID_ad_OCSP || ad->location->type != GEN_URI) continue;
    const ASN1_STRING* uri = ad->location->d.uniformResourceIdentifier;
    out->url.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                    static_cast<size_t>(ASN1_STRING_length(uri)));
    break;
  }
  if (out->url.empty()) {
    *error = "the certificate names no OCSP responder";
    return false;
  }
  if (!issuer) {
    *error = "the chain holds no issuer certificate (needed to ask its OCSP responder)";
    return false;
  }
  // CertID: SHA-1 of the issuer's name (DER) and of its key's bits, and
  // the leaf's serial.
  unsigned char* name_der = nullptr;
  int name_len = i2d_X509_NAME(X509_get_subject_name(issuer.get()), &name_der);
  std::string name_hash, key_hash;
  bool hashed = name_len > 0 && sha1(name_der, static_cast<size_t>(name_len), &name_hash);
  OPENSSL_free(name_der);
  const ASN1_BIT_STRING* key_bits = X509_get0_pubkey_bitstr(issuer.get());
  hashed = hashed && key_bits &&
           sha1(ASN1_STRING_get0_data(key_bits), static_cast<size_t>(ASN1_STRING_length(key_bits)),
                &key_hash);
  unsigned char* serial_der = nullptr;
  int serial_len = i2d_ASN1_INTEGER(X509_get_serialNumber(leaf.get()), &serial_der);
  if (!hashed || serial_len <= 0) {
    OPENSSL_free(serial_der);
    *error = "the certificate's OCSP identity could not be computed";
    return false;
  }
  out->serial.assign(reinterpret_cast<char*>(serial_der), static_cast<size_t>(serial_len));
  OPENSSL_free(serial_der);
  static const char kSha1Algorithm[] = "\x30\x09\x06\x05\x2b\x0e\x03\x02\x1a\x05\x00";
  std::string cert_id(kSha1Algorithm, sizeof kSha1Algorithm - 1);
  appendTlv(cert_id, 0x04, name_hash);
  appendTlv(cert_id, 0x04, key_hash);
  cert_id += out->serial;
  std::string req, list, tbs;
  appendTlv(req, 0x30, [&] {
    std::string c;
    appendTlv(c, 0x30, cert_id);
    return c;
  }());
  appendTlv(list, 0x30, req);
  appendTlv(tbs, 0x30, list);
  appendTlv(out->der, 0x30, tbs);
  return true;
}

bool checkOcspResponse(std::string_view der, std::string_view serial, int64_t now,
                       int64_t* this_update, int64_t* next_update, std::string* error) {
  *this_update = *next_update = 0;
  auto bad = [&](const char* why) {
    *error = std::string("the OCSP answer ") + why;
    return false;
  };
  std::string_view in = der, response, status, bytes, type, basic;
  if (!expect(&in, 0x30, &response) || !in.empty()) return bad("is not DER");
  if (!expect(&response, 0x0a, &status) || status.size() != 1) return bad("has no status");
  if (status[0] != 0) {
    static const char* const kNames[] = {
        "successful", "malformedRequest", "internalError", "tryLater",
        "(4)",        "sigRequired",      "unauthorized"};
    uint8_t st = static_cast<uint8_t>(status[0]);
    *error =
        std::string("the OCSP responder answered ") + (st < 7 ? kNames[st] : "an unknown status");
    return false;
  }
  std::string_view explicit0;
  if (!expect(&response, 0xa0, &explicit0) || !expect(&explicit0, 0x30, &bytes))
    return bad("has no response");
  static const char kBasic[] = "\x2b\x06\x01\x05\x05\x07\x30\x01\x01";  // id-pkix-ocsp-basic
  if (!expect(&bytes, 0x06, &type) || type != std::string_view(kBasic, sizeof kBasic - 1))
    return bad("is not a basic response");
  if (!expect(&bytes, 0x04, &basic)) return bad("is truncated");
  std::string_view basic_seq, tbs, tag_content;
  if (!expect(&basic, 0x30, &basic_seq) || !expect(&basic_seq, 0x30, &tbs))
    return bad("has no response data");
  uint8_t tag = 0;
  std::string_view item;
  // [0] version (optional), then the responder's id ([1] or [2]).
  if (!readTlv(&tbs, &tag, &item)) return bad("is truncated");
  if (tag == 0xa0 && !readTlv(&tbs, &tag, &item)) return bad("is truncated");
  if (tag != 0xa1 && tag != 0xa2) return bad("names no responder");
  std::string_view produced, responses;
  if (!expect(&tbs, 0x18, &produced) || !expect(&tbs, 0x30, &responses))
    return bad("has no responses");
  while (!responses.empty()) {
    std::string_view single, cert_id, field;
    if (!expect(&responses, 0x30, &single) || !expect(&single, 0x30, &cert_id))
      return bad("has a malformed response");
    std::string_view alg, name_hash, key_hash, number;
    if (!expect(&cert_id, 0x30, &alg) || !expect(&cert_id, 0x04, &name_hash) ||
        !expect(&cert_id, 0x04, &key_hash) || !expect(&cert_id, 0x02, &number))
      return bad("has a malformed certificate id");
    std::string encoded;
    appendTlv(encoded, 0x02, number);
    if (encoded != serial) continue;
    if (!readTlv(&single, &tag, &field)) return bad("is truncated");
    if (tag == 0xa1) return bad("says the certificate is revoked");
    if (tag != 0x80) return bad("does not say the certificate is good");
    std::string_view t;
    if (!expect(&single, 0x18, &t) || !generalizedTime(t, this_update))
      return bad("has no thisUpdate");
    if (!single.empty()) {
      std::string_view next;
      if (readTlv(&single, &tag, &next) && tag == 0xa0) {
        std::string_view nt;
        if (!expect(&next, 0x18, &nt) || !generalizedTime(nt, next_update))
          return bad("has a malformed nextUpdate");
      }
    }
    if (*this_update > now + 300) return bad("is from the future");
    if (*next_update != 0 && *next_update < now) return bad("is out of date");
    return true;
  }
  return bad("does not name this certificate");
}

bool farmToken(const std::string& secret_file, const std::string& key_file, std::string* token,
               std::string* error) {
  static constexpr char kLabel[] = "eldric-edge farm member token v1";
  std::string secret;
  if (!secret_file.empty()) {
    std::string text;
    if (!readWholeFile(secret_file, &text, error)) {
      *error = "farm.secret_file " + *error;
      return false;
    }
    secret = text.substr(0, text.find('\n'));
    while (!secret.empty() && (secret.back() == '\r' || secret.back() == ' ')) secret.pop_back();
    OPENSSL_cleanse(text.data(), text.size());
    if (secret.size() < 16) {
      *error = "farm.secret_file " + secret_file + ": the secret must be 16 characters or more";
      return false;
    }
  } else {
    std::string pem;
    if (!readWholeFile(key_file, &pem, error)) {
      *error = "tls.key_file " + *error;
      return false;
    }
    BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
    EVP_PKEY* key = bio ? PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr) : nullptr;
    BIO_free(bio);
    OPENSSL_cleanse(pem.data(), pem.size());
    PKCS8_PRIV_KEY_INFO* p8 = key ? EVP_PKEY2PKCS8(key) : nullptr;
    EVP_PKEY_free(key);
    unsigned char* der = nullptr;
    int len = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len <= 0) {
      *error =
          sslError("tls.key_file " + key_file + ": cannot derive the farm's member token from it");
      return false;
    }
    secret.assign(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_cleanse(der, static_cast<size_t>(len));
    OPENSSL_free(der);
  }
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  bool ok = HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
                 reinterpret_cast<const unsigned char*>(kLabel), sizeof kLabel - 1, mac,
                 &mac_len) != nullptr;
  OPENSSL_cleanse(secret.data(), secret.size());
  if (!ok) {
    *error = "farm token: HMAC failed";
    return false;
  }
  *token = hexEncode(std::string_view(reinterpret_cast<char*>(mac), mac_len));
  return true;
}

}  // namespace eldric::pki
