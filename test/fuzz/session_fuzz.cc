// Web chat sessions on untrusted bytes: the Cookie header and the token in
// it (cookieValue, verifySession), the auth filter's cookie path, and the
// body of POST /api/v1/session (a JSON document) through the auth filter
// and the session endpoint behind it.
// A token this code signs must verify to what it was signed with.
//
// Input: [mode][bytes]
//   mode & 3: 0 = Cookie header, 1 = session endpoint body,
//             2 = sign/verify round trip, 3 = token alone

#include <openssl/sha.h>
#include <time.h>

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/http/route.h"
#include "filters/auth/auth_filter.h"
#include "filters/auth/session.h"
#include "filters/auth/session_filter.h"
#include "test/fuzz/fuzz_util.h"
#include "test/unit/fake_stream.h"

namespace eldric::fuzz {
namespace {

constexpr char kKey[] = "sk-fuzz-0123456789";

std::shared_ptr<const filters::auth::AuthConfig> authConfig() {
  static auto config = [] {
    edge::v1::Auth auth;
    auth.set_require_api_key(true);
    auth.add_session_signing_keys("signing-key-one-0123456789abcdef");
    auth.add_session_signing_keys("signing-key-two-0123456789abcdef");
    auto* k = auth.add_api_keys();
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const uint8_t*>(kKey), sizeof kKey - 1, digest);
    k->set_sha256(std::string(reinterpret_cast<const char*>(digest), sizeof digest));
    k->set_client_id("c1");
    k->set_client_name("fuzz");
    k->add_scopes(edge::v1::SCOPE_INFERENCE);
    return std::make_shared<const filters::auth::AuthConfig>(auth);
  }();
  return config;
}

// The auth filter on a stream: an inference route, or the session endpoint
// (the auth filter, then the session handler).
void setUp(test::FakeStream& stream, bool session_route) {
  stream.matched_route.required_scope = session_route ? 0 : edge::v1::SCOPE_INFERENCE;
  stream.client_scheme = "https";
  stream.request.headers.add("host", "edge.test");
  stream.addDecoderFilter(
      std::make_unique<filters::auth::AuthFilter>(authConfig(), nullptr, nullptr));
  if (session_route) {
    stream.addDecoderFilter(
        std::make_unique<filters::auth::SessionFilter>(authConfig(), nullptr, nullptr));
  }
}

}  // namespace
}  // namespace eldric::fuzz

static int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  uint8_t mode = in.byte();
  std::string bytes(in.rest());
  const auto& config = fuzz::authConfig();
  int64_t now = static_cast<int64_t>(time(nullptr));

  switch (mode & 3) {
    case 0: {  // a Cookie header, through the filter as a request brings it
      std::string_view token = filters::auth::cookieValue(bytes, filters::auth::kSessionCookie);
      if (token.size() > bytes.size()) abort();
      test::FakeStream stream;
      fuzz::setUp(stream, false);
      stream.request.method = "GET";
      stream.request.path = "/v1/models";
      stream.request.headers.add("cookie", bytes);
      if (mode & 4) stream.request.headers.add("origin", "https://edge.test");
      stream.decodeHeaders(true);
      break;
    }
    case 1: {  // POST /api/v1/session with this body
      if (fuzz::skipKnownCrashes() && fuzz::jsonNesting(bytes) > 200) return 0;
      test::FakeStream stream;
      fuzz::setUp(stream, true);
      stream.request.method = (mode & 4) ? "GET" : "POST";
      stream.request.path = "/api/v1/session";
      stream.request.headers.add("content-type", "application/json");
      stream.decodeHeaders(false);
      stream.decodeData(bytes, true);
      break;
    }
    case 2: {  // what is signed verifies, to the same key hash and expiry
      std::string hash = bytes.substr(0, 32);
      hash.resize(32, '\0');
      int64_t expires = now + 1 + static_cast<int64_t>(mode >> 2) * 977;
      std::string key = bytes.size() > 32 ? bytes.substr(32) : std::string("k");
      std::string token = filters::auth::signSession(key, hash, expires);
      std::string got_hash;
      int64_t got_expires = 0;
      if (!filters::auth::verifySession(token, {"other", key}, now, &got_hash, &got_expires) ||
          got_hash != hash || got_expires != expires) {
        abort();
      }
      break;
    }
    default: {  // a token on its own
      std::string got_hash;
      int64_t got_expires = 0;
      if (filters::auth::verifySession(bytes, config->sessionKeys(), now, &got_hash,
                                       &got_expires) &&
          (got_hash.size() != 32 || got_expires <= now)) {
        abort();
      }
      break;
    }
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // JSON is parsed recursively: on a small stack, nesting overflows it at
  // a depth the fuzzer reaches (see runOnSmallStack).
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
