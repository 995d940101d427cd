#include "common/pki/pki.h"

#include <gtest/gtest.h>
#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <ctime>

#include "common/base64url.h"

namespace eldric::pki {
namespace {

// Verifies a JWS signature with the library directly, from the PEM.
bool verify(const Key& key, const std::string& data, const std::string& sig) {
  std::string pem = key.privatePem();
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  EVP_PKEY* pkey = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  std::string der = sig;
  if (key.type() == KeyType::EcdsaP256) {
    if (sig.size() != 64) return false;
    ECDSA_SIG* s = ECDSA_SIG_new();
    BIGNUM* r = BN_bin2bn(reinterpret_cast<const uint8_t*>(sig.data()), 32, nullptr);
    BIGNUM* ss = BN_bin2bn(reinterpret_cast<const uint8_t*>(sig.data()) + 32, 32, nullptr);
    ECDSA_SIG_set0(s, r, ss);
    uint8_t* out = nullptr;
    int len = i2d_ECDSA_SIG(s, &out);
    der.assign(reinterpret_cast<char*>(out), static_cast<size_t>(len));
    OPENSSL_free(out);
    ECDSA_SIG_free(s);
  }
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  bool ok = EVP_DigestVerifyInit(md, nullptr, EVP_sha256(), nullptr, pkey) == 1 &&
            EVP_DigestVerify(md, reinterpret_cast<const uint8_t*>(der.data()), der.size(),
                             reinterpret_cast<const uint8_t*>(data.data()), data.size()) == 1;
  EVP_MD_CTX_free(md);
  EVP_PKEY_free(pkey);
  return ok;
}

class PkiTest : public ::testing::TestWithParam<KeyType> {};

TEST_P(PkiTest, SignsVerifiablyAndRoundTrips) {
  std::string error;
  auto key = Key::generate(GetParam(), &error);
  ASSERT_TRUE(key) << error;
  std::string sig;
  ASSERT_TRUE(key->sign("header.payload", &sig, &error)) << error;
  EXPECT_TRUE(verify(*key, "header.payload", sig));
  EXPECT_FALSE(verify(*key, "header.payloaD", sig));

  auto again = Key::fromPem(key->privatePem(), &error);
  ASSERT_TRUE(again) << error;
  EXPECT_EQ(again->type(), GetParam());
  EXPECT_EQ(again->publicJwk(), key->publicJwk());
  std::string jwk = key->publicJwk();
  if (GetParam() == KeyType::EcdsaP256) {
    EXPECT_EQ(jwk.rfind("{\"crv\":\"P-256\",\"kty\":\"EC\",\"x\":\"", 0), 0u) << jwk;
    EXPECT_STREQ(key->jwsAlgorithm(), "ES256");
  } else {
    EXPECT_EQ(jwk.rfind("{\"e\":\"AQAB\",\"kty\":\"RSA\",\"n\":\"", 0), 0u) << jwk;
    EXPECT_STREQ(key->jwsAlgorithm(), "RS256");
  }
}

TEST_P(PkiTest, RequestCarriesTheNamesAndVerifies) {
  std::string error, der;
  auto key = Key::generate(GetParam(), &error);
  ASSERT_TRUE(key->certificateRequest({"edge.example", "www.edge.example"}, &der, &error)) << error;
  const auto* p = reinterpret_cast<const uint8_t*>(der.data());
  X509_REQ* req = d2i_X509_REQ(nullptr, &p, static_cast<long>(der.size()));
  ASSERT_NE(req, nullptr);
  EVP_PKEY* pub = X509_REQ_get_pubkey(req);
  EXPECT_EQ(X509_REQ_verify(req, pub), 1);
  EVP_PKEY_free(pub);
  STACK_OF(X509_EXTENSION)* exts = X509_REQ_get_extensions(req);
  ASSERT_NE(exts, nullptr);
  EXPECT_EQ(sk_X509_EXTENSION_num(exts), 1u);
  sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
  X509_REQ_free(req);
}

TEST_P(PkiTest, SelfSignedInspects) {
  std::string error, pem;
  auto key = Key::generate(GetParam(), &error);
  ASSERT_TRUE(key->selfSigned({"a.example", "b.example"}, 7, &pem, &error)) << error;
  CertificateInfo info;
  ASSERT_TRUE(inspectChain(pem + pem, &info, &error)) << error;
  EXPECT_EQ(info.names, (std::vector<std::string>{"a.example", "b.example"}));
  EXPECT_EQ(info.subject, "a.example");
  EXPECT_EQ(info.issuer, "a.example");
  EXPECT_EQ(info.chain_length, 2u);
  int64_t now = time(nullptr);
  EXPECT_NEAR(static_cast<double>(info.not_after), static_cast<double>(now + 7 * 86400), 5);
  EXPECT_NEAR(static_cast<double>(info.not_before), static_cast<double>(now - 3600), 5);
  EXPECT_TRUE(chainMatchesKey(pem, *key));
  auto other = Key::generate(GetParam(), &error);
  EXPECT_FALSE(chainMatchesKey(pem, *other));
}

INSTANTIATE_TEST_SUITE_P(Keys, PkiTest, ::testing::Values(KeyType::EcdsaP256, KeyType::Rsa2048));

TEST(Pki, RefusesWhatIsNotAKeyOrCertificate) {
  std::string error;
  EXPECT_FALSE(
      Key::fromPem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", &error));
  EXPECT_FALSE(error.empty());
  CertificateInfo info;
  EXPECT_FALSE(inspectChain("garbage", &info, &error));
  EXPECT_FALSE(inspectChain("", &info, &error));
  KeyType t;
  EXPECT_TRUE(parseKeyType("rsa-2048", &t));
  EXPECT_EQ(t, KeyType::Rsa2048);
  EXPECT_FALSE(parseKeyType("dsa", &t));
}

// RFC 9773's certificate identifier, against one openssl made (AKI
// A2:D3:F3:31:..., serial 156EFA1AC6...).
TEST(Pki, AriCertificateId) {
  const char kLeaf[] = R"(-----BEGIN CERTIFICATE-----
MIIBtzCCAV2gAwIBAgIUFW76GsYwhVmMXt4BNbLAMw4CxvgwCgYIKoZIzj0EAwIw
DTELMAkGA1UEAwwCY2EwHhcNMjYxMjA2MjAzNTM2WhcNMjYxMjA4MjAzNTM2WjAU
MRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARv
k7tuVW3wCTzWVKI55j7iJDDEfvpZ031hapvUiBhSbNfnKZbI/n6b8U8Skl16KBii
OMJCqeaC8u8SDKrNgnTPo4GTMIGQMBoGA1UdEQQTMBGCCWxvY2FsaG9zdIcEfwAA
ATAyBggrBgEFBQcBAQQmMCQwIgYIKwYBBQUHMAGGFmh0dHA6Ly8xMjcuMC4wLjE6
MTg5OTkwHQYDVR0OBBYEFCsFS5w0LR8DY9fEuJ7ZdcQa6aYmMB8GA1UdIwQYMBaA
FKLT8zEPmezvTyWcJWdF8PsJLQwaMAoGCCqGSM49BAMCA0gAMEUCIHp7A9LHSMRG
I8vj2r08PPq4Rn/Un765mKuXsuWPRSexAiEA7hRhVf5y69bIkcVx3SY7vN/SMAZL
POdtAIQCm1xmaBA=
-----END CERTIFICATE-----
)";
  std::string id, error;
  ASSERT_TRUE(ariCertificateId(kLeaf, &id, &error)) << error;
  EXPECT_EQ(id, "otPzMQ-Z7O9PJZwlZ0Xw-wktDBo.FW76GsYwhVmMXt4BNbLAMw4Cxvg");
  // Its OCSP request names the responder in its AIA; without the issuer
  // in the chain there is nothing to ask.
  OcspRequest req;
  EXPECT_FALSE(ocspRequest(kLeaf, &req, &error));
  EXPECT_NE(error.find("issuer"), std::string::npos) << error;
  // A self-signed certificate made here has no AKI: no identifier.
  auto key = Key::generate(KeyType::EcdsaP256, &error);
  ASSERT_TRUE(key);
  std::string pem;
  ASSERT_TRUE(key->selfSigned({"a.example"}, 1, &pem, &error));
  EXPECT_FALSE(ariCertificateId(pem, &id, &error));
}

// The farm token: one fixed P-256 key as SEC1 and as PKCS#8 gives the value
// OpenSSL's command line and Python's hmac give (`openssl pkcs8 -topk8
// -outform DER`, HMAC-SHA256 of the label): the Edge (BoringSSL) and
// eldricctl (OpenSSL) derive the same token.
TEST(FarmTokenTest, SameTokenInEveryBuildAndEncoding) {
  const std::string dir = ::testing::TempDir();
  auto write = [&](const char* name, const std::string& text) {
    std::string path = dir + "/" + name;
    FILE* f = fopen(path.c_str(), "w");
    fputs(text.c_str(), f);
    fclose(f);
    return path;
  };
  const char kSec1[] = R"(-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIKdleoQIbM8H0W5EYSCVVLqq6yhV572uMwaHnSP3k+RAoAoGCCqGSM49
AwEHoUQDQgAEphOnHYs4VQSnAXS7kBFteeU/MPeUfpp9712nzSUgOYoeY/yzzI2l
udX3UAu35w1f1hCiyn8FW8fKbCrfOK+1JQ==
-----END EC PRIVATE KEY-----
)";
  const char kPkcs8[] = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgp2V6hAhszwfRbkRh
IJVUuqrrKFXnva4zBoedI/eT5EChRANCAASmE6cdizhVBKcBdLuQEW155T8w95R+
mn3vXafNJSA5ih5j/LPMjaW51fdQC7fnDV/WEKLKfwVbx8psKt84r7Ul
-----END PRIVATE KEY-----
)";
  const char kExpected[] = "c5fab761c9c6f2d0df33120a7172ea5096d6e2eaaac5cc787c52544c1174e243";
  std::string token, error;
  ASSERT_TRUE(farmToken("", write("sec1.pem", kSec1), &token, &error)) << error;
  EXPECT_EQ(token, kExpected);
  ASSERT_TRUE(farmToken("", write("pkcs8.pem", kPkcs8), &token, &error)) << error;
  EXPECT_EQ(token, kExpected);
  // A secret file: its first line, trailing blanks left out.
  std::string a, b;
  ASSERT_TRUE(farmToken(write("s1", "a-farm-secret-of-enough-length\n"), "", &a, &error));
  ASSERT_TRUE(farmToken(write("s2", "a-farm-secret-of-enough-length  \r\nmore\n"), "", &b, &error));
  EXPECT_EQ(a, b);
  EXPECT_NE(a, kExpected);
  EXPECT_FALSE(farmToken(write("short", "short\n"), "", &token, &error));
  EXPECT_NE(error.find("16 characters"), std::string::npos) << error;
  EXPECT_FALSE(farmToken("", dir + "/missing.pem", &token, &error));
  EXPECT_NE(error.find("tls.key_file"), std::string::npos) << error;
  EXPECT_FALSE(farmToken("", write("junk.pem", "not a key"), &token, &error));
}

}  // namespace
}  // namespace eldric::pki
