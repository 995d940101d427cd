#include "dataplane/tls/farm_token.h"

#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/mem.h>
#include <openssl/pem.h>

#include "common/file.h"
#include "common/hex.h"
#include "dataplane/tls/server_context.h"

namespace eldric::tls {

namespace {
constexpr char kLabel[] = "eldric-edge farm member token v1";

}  // namespace

bool farmToken(const std::string& secret_file, const std::string& key_file, std::string* token,
               std::string* error) {
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
    bssl::UniquePtr<BIO> bio(BIO_new_file(key_file.c_str(), "r"));
    bssl::UniquePtr<EVP_PKEY> key(
        bio ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr) : nullptr);
    CBB cbb;
    uint8_t* der = nullptr;
    size_t len = 0;
    if (!key || !CBB_init(&cbb, 0) || !EVP_marshal_private_key(&cbb, key.get()) ||
        !CBB_finish(&cbb, &der, &len)) {
      if (key) CBB_cleanup(&cbb);
      *error = "tls.key_file " + key_file +
               ": cannot derive the farm's member token from it: " + lastError();
      return false;
    }
    secret.assign(reinterpret_cast<char*>(der), len);
    OPENSSL_cleanse(der, len);
    OPENSSL_free(der);
  }
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned mac_len = 0;
  bool ok = HMAC(EVP_sha256(), secret.data(), secret.size(),
                 reinterpret_cast<const uint8_t*>(kLabel), sizeof kLabel - 1, mac, &mac_len);
  OPENSSL_cleanse(secret.data(), secret.size());
  if (!ok) {
    *error = "farm token: HMAC failed";
    return false;
  }
  *token = hexEncode(std::string(reinterpret_cast<char*>(mac), mac_len));
  return true;
}

}  // namespace eldric::tls
