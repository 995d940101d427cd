// The auth filter on a fake stream: every way a request is authenticated
// (API key in Authorization or X-API-Key, session cookie) or refused
// (missing, malformed, unknown, expired or removed key, wrong scope,
// cross-site cookie use, too many failed attempts), what it leaves for
// later filters and what it strips, and the session endpoint
// (/api/v1/session: log in, who am I, log out).

#include "filters/auth/auth_filter.h"

#include <gtest/gtest.h>
#include <openssl/sha.h>
#include <time.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "filters/auth/session.h"
#include "filters/auth/session_filter.h"
#include "filters/ratelimit/limiter.h"
#include "filters/ratelimit/ratelimit_filter.h"
#include "test/unit/fake_stream.h"

namespace eldric::filters::auth {
namespace {

using test::FakeStream;

constexpr char kInferenceKey[] = "sk-inference-0001-SECRETPART";
constexpr char kAdminKey[] = "sk-admin-0002-SECRETPART";  // admin and inference
constexpr char kWorkerKey[] = "sk-worker-0003-SECRETPART";
constexpr char kExpiredKey[] = "sk-expired-0004-SECRETPART";
constexpr char kSoonKey[] = "sk-soon-0005-SECRETPART";  // expires in an hour
constexpr char kNoScopeKey[] = "sk-noscope-0006-SECRETPART";
constexpr char kWildScopeKey[] = "sk-wild-0007-SECRETPART";  // scope 34 (not in the enum)
constexpr char kSigningKey[] = "signing-key-current-0123456789ab";
constexpr char kOldSigningKey[] = "signing-key-previous-0123456789";

int64_t now() { return static_cast<int64_t>(time(nullptr)); }

std::string sha256(std::string_view s) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(s.data()), s.size(), d);
  return std::string(reinterpret_cast<const char*>(d), sizeof d);
}

void addKey(edge::v1::Auth& auth, std::string_view key, const std::string& client,
            std::vector<int> scopes, int64_t expires_at = 0) {
  auto* k = auth.add_api_keys();
  k->set_sha256(sha256(key));
  k->set_prefix(std::string(key.substr(0, 9)));
  k->set_client_id("id-" + client);
  k->set_client_name(client);
  for (int s : scopes) k->add_scopes(static_cast<edge::v1::Scope>(s));
  k->set_expires_at(expires_at);
}

edge::v1::Auth authConfig(bool require_key = true) {
  edge::v1::Auth auth;
  auth.set_require_api_key(require_key);
  addKey(auth, kInferenceKey, "inference-client", {edge::v1::SCOPE_INFERENCE});
  addKey(auth, kAdminKey, "admin-client", {edge::v1::SCOPE_ADMIN, edge::v1::SCOPE_INFERENCE});
  addKey(auth, kWorkerKey, "worker-client", {edge::v1::SCOPE_WORKER});
  addKey(auth, kExpiredKey, "expired-client", {edge::v1::SCOPE_INFERENCE}, now() - 60);
  addKey(auth, kSoonKey, "soon-client", {edge::v1::SCOPE_INFERENCE}, now() + 3600);
  addKey(auth, kNoScopeKey, "noscope-client", {});
  addKey(auth, kWildScopeKey, "wild-client", {34});
  auth.add_session_signing_keys(kSigningKey);
  auth.add_session_signing_keys(kOldSigningKey);
  return auth;
}

// The value of the cookie a Set-Cookie header sets.
std::string cookieToken(const std::string& set_cookie) {
  size_t eq = set_cookie.find('=');
  size_t semi = set_cookie.find(';');
  return set_cookie.substr(eq + 1, semi - eq - 1);
}

class AuthFilterTest : public ::testing::Test {
 protected:
  AuthFilterTest() {
    auto l = std::make_shared<ratelimit::RateLimitConfig>();
    l->auth_failures_per_ip = 3;
    ratelimit::Cidr proxy;
    EXPECT_TRUE(ratelimit::parseCidr("10.0.0.0/8", &proxy));
    l->trusted_proxies.push_back(proxy);
    limits = l;
  }

  // A stream on a route that needs `scope` (an inference route by
  // default), with the auth filter in its chain.
  std::unique_ptr<FakeStream> stream(int scope = edge::v1::SCOPE_INFERENCE) {
    auto s = std::make_unique<FakeStream>();
    s->matched_route.required_scope = scope;
    s->request.method = "POST";
    s->request.path = "/v1/chat/completions";
    s->request.headers.add("host", "edge.test");
    s->addFilters(makeFactory(std::make_shared<const AuthConfig>(auth), limits, state));
    return s;
  }
  // A headers-only request with `Authorization: Bearer <key>`.
  std::unique_ptr<FakeStream> withKey(std::string_view key, int scope = edge::v1::SCOPE_INFERENCE) {
    auto s = stream(scope);
    s->request.headers.add("authorization", "Bearer " + std::string(key));
    s->decodeHeaders(true);
    return s;
  }
  // A headers-only request carrying a session cookie.
  std::unique_ptr<FakeStream> withCookie(const std::string& token,
                                         int scope = edge::v1::SCOPE_INFERENCE,
                                         std::string_view name = kSessionCookie) {
    auto s = stream(scope);
    s->request.headers.add("cookie", "theme=dark; " + std::string(name) + "=" + token);
    s->request.headers.add("sec-fetch-site", "same-origin");
    s->decodeHeaders(true);
    return s;
  }
  // A stream on the session endpoint: the auth filter, then the session
  // handler.
  std::unique_ptr<FakeStream> sessionStream(std::string method) {
    auto s = stream(0);
    s->matched_route.handler = "session";
    s->addFilters(makeSessionFactory(std::make_shared<const AuthConfig>(auth), limits, state));
    s->request.method = std::move(method);
    s->request.path = "/api/v1/session";
    return s;
  }
  // POST /api/v1/session with `body`; `prepare` may add headers first.
  std::unique_ptr<FakeStream> postSession(
      std::string_view content_type, std::string_view body,
      const std::function<void(FakeStream&)>& prepare = nullptr) {
    auto s = sessionStream("POST");
    s->request.headers.add("content-type", content_type);
    if (prepare) prepare(*s);
    s->decodeHeaders(false);
    s->decodeData(body, true);
    return s;
  }
  // Logs in with `key` (a JSON body, as the web chat sends it).
  std::unique_ptr<FakeStream> login(std::string_view key, std::string_view scheme = "http",
                                    const std::function<void(FakeStream&)>& prepare = nullptr) {
    return postSession("application/json", R"({"api_key":")" + std::string(key) + R"("})",
                       [&](FakeStream& s) {
                         s.client_scheme = std::string(scheme);
                         if (prepare) prepare(s);
                       });
  }
  // A session token, as a login would set it.
  std::string sessionToken(std::string_view key = kInferenceKey) {
    auto s = login(key);
    EXPECT_EQ(s->responseStatus(), 200);
    return cookieToken(s->responseHeader("set-cookie").value_or(""));
  }

  edge::v1::Auth auth = authConfig();
  ratelimit::RateLimitConfigSharedPtr limits;
  ratelimit::StateSharedPtr state = std::make_shared<ratelimit::State>(60);
};

// The response is an OpenAI-shaped error with this status, type and code,
// and the request went no further.
void expectRefused(const FakeStream& s, int status, const std::string& type,
                   const std::string& code) {
  EXPECT_EQ(s.responseStatus(), status);
  auto error = s.responseError();
  ASSERT_TRUE(error) << s.response_body;
  EXPECT_EQ(error->type, type);
  EXPECT_EQ(error->code, code);
  EXPECT_FALSE(s.end_stream_passed_chain);
}

void expectAuthenticatedAs(const FakeStream& s, const std::string& client) {
  EXPECT_EQ(s.responseStatus(), 0) << s.response_body;
  EXPECT_TRUE(s.headers_passed_chain);
  ASSERT_NE(s.info.identity, nullptr);
  EXPECT_EQ(s.info.identity->client_name, client);
  EXPECT_EQ(s.info.client_name, client);
}

// ---------------------------------------------------------------------------
// API keys

TEST_F(AuthFilterTest, MissingKeyIs401WithBearerChallenge) {
  uint64_t missing = stats().missing.load();
  auto s = stream();
  s->decodeHeaders(true);
  expectRefused(*s, 401, "authentication_error", "missing_api_key");
  EXPECT_EQ(s->responseHeader("www-authenticate"), "Bearer");
  EXPECT_EQ(stats().missing.load(), missing + 1);
}

TEST_F(AuthFilterTest, AnonymousPassesWhenKeysAreNotRequired) {
  auth = authConfig(/*require_key=*/false);
  auto s = stream();
  s->decodeHeaders(true);
  EXPECT_TRUE(s->headers_passed_chain);
  EXPECT_EQ(s->info.identity, nullptr);
  EXPECT_EQ(s->responseStatus(), 0);
}

TEST_F(AuthFilterTest, AdminAndWorkerRoutesAlwaysNeedAKey) {
  auth = authConfig(/*require_key=*/false);
  for (int scope : {edge::v1::SCOPE_ADMIN, edge::v1::SCOPE_WORKER}) {
    SCOPED_TRACE(scope);
    auto s = stream(scope);
    s->decodeHeaders(true);
    expectRefused(*s, 401, "authentication_error", "missing_api_key");
  }
}

TEST_F(AuthFilterTest, RouteWithoutScopeNeedsNoKey) {
  auto s = stream(0);
  s->decodeHeaders(true);
  EXPECT_TRUE(s->headers_passed_chain);
  EXPECT_EQ(s->responseStatus(), 0);
}

TEST_F(AuthFilterTest, MalformedAuthorizationIsNoKeyAtAll) {
  for (const char* value : {"Basic dXNlcjpwYXNz", "Bearer", "Bearer    ", "Token sk-x", ""}) {
    SCOPED_TRACE(value);
    auto s = stream();
    s->request.headers.add("authorization", value);
    s->decodeHeaders(true);
    expectRefused(*s, 401, "authentication_error", "missing_api_key");
  }
}

TEST_F(AuthFilterTest, BearerIsCaseInsensitiveAndSpacesAroundTheKeyAreIgnored) {
  for (std::string value :
       {std::string("bearer ") + kInferenceKey, std::string("BEARER   ") + kInferenceKey + "  "}) {
    SCOPED_TRACE(value);
    auto s = stream();
    s->request.headers.add("authorization", value);
    s->decodeHeaders(true);
    expectAuthenticatedAs(*s, "inference-client");
  }
}

TEST_F(AuthFilterTest, XApiKeyHeaderIsAccepted) {
  auto s = stream();
  s->request.headers.add("x-api-key", kInferenceKey);
  s->decodeHeaders(true);
  expectAuthenticatedAs(*s, "inference-client");
}

TEST_F(AuthFilterTest, NonBearerAuthorizationFallsBackToXApiKey) {
  auto s = stream();
  s->request.headers.add("authorization", "Basic dXNlcjpwYXNz");
  s->request.headers.add("x-api-key", kInferenceKey);
  s->decodeHeaders(true);
  expectAuthenticatedAs(*s, "inference-client");
}

TEST_F(AuthFilterTest, BearerWinsOverXApiKey) {
  auto s = stream();
  s->request.headers.add("authorization", std::string("Bearer ") + kInferenceKey);
  s->request.headers.add("x-api-key", "sk-not-a-key");
  s->decodeHeaders(true);
  expectAuthenticatedAs(*s, "inference-client");
}

TEST_F(AuthFilterTest, UnknownKeyIs401InvalidApiKey) {
  uint64_t invalid = stats().invalid.load();
  auto s = withKey("sk-unknown-key");
  expectRefused(*s, 401, "authentication_error", "invalid_api_key");
  EXPECT_EQ(s->info.identity, nullptr);
  EXPECT_EQ(s->responseError()->message, "invalid API key");
  EXPECT_EQ(s->responseHeader("www-authenticate"), "Bearer");
  EXPECT_EQ(stats().invalid.load(), invalid + 1);
}

TEST_F(AuthFilterTest, ExpiredKeyIsRefusedExactlyLikeAnUnknownOne) {
  uint64_t expired = stats().expired.load();
  auto s = withKey(kExpiredKey);
  auto unknown = withKey("sk-unknown-key");
  expectRefused(*s, 401, "authentication_error", "invalid_api_key");
  EXPECT_EQ(s->response_body, unknown->response_body);
  EXPECT_EQ(stats().expired.load(), expired + 1);
}

TEST_F(AuthFilterTest, KeyThatExpiresLaterIsValidNow) {
  expectAuthenticatedAs(*withKey(kSoonKey), "soon-client");
}

TEST_F(AuthFilterTest, KeyRemovedFromTheConfigIsRefused) {
  // Revoking a key is the control plane dropping it from the snapshot.
  auto before = withKey(kInferenceKey);
  expectAuthenticatedAs(*before, "inference-client");
  auth.mutable_api_keys()->DeleteSubrange(0, 1);
  expectRefused(*withKey(kInferenceKey), 401, "authentication_error", "invalid_api_key");
}

TEST_F(AuthFilterTest, KeyWithAMalformedHashIsNeverLoaded) {
  auth.mutable_api_keys(0)->set_sha256(sha256(kInferenceKey).substr(0, 31));
  EXPECT_EQ(AuthConfig(auth).keyCount(), 6u);
  expectRefused(*withKey(kInferenceKey), 401, "authentication_error", "invalid_api_key");
}

TEST_F(AuthFilterTest, ValidKeyLeavesItsIdentityForLaterFilters) {
  auto* k = auth.mutable_api_keys(0);
  k->set_requests_per_minute(7);
  k->set_tokens_per_minute(700);
  k->set_max_concurrent_requests(2);
  k->add_allowed_models("gpt-4o");
  uint64_t ok = stats().ok.load();
  auto s = withKey(kInferenceKey);
  expectAuthenticatedAs(*s, "inference-client");
  const http::ClientIdentity& id = *s->info.identity;
  EXPECT_EQ(id.client_id, "id-inference-client");
  EXPECT_EQ(id.key_prefix, "sk-infere");
  EXPECT_EQ(id.scopes, 1u << edge::v1::SCOPE_INFERENCE);
  EXPECT_EQ(id.requests_per_window, 7u);
  EXPECT_EQ(id.tokens_per_window, 700u);
  EXPECT_EQ(id.max_concurrent, 2u);
  EXPECT_EQ(id.allowed_models, std::vector<std::string>{"gpt-4o"});
  EXPECT_EQ(stats().ok.load(), ok + 1);
  // Only an admin route keeps the key (for the control plane).
  EXPECT_EQ(s->info.filter_state.get(http::kClientCredential), nullptr);
}

TEST_F(AuthFilterTest, ValidKeyIsNotForwardedUpstream) {
  auto s = stream();
  s->request.headers.add("authorization", std::string("Bearer ") + kInferenceKey);
  s->request.headers.add("x-api-key", "sk-other");
  s->request.headers.add("cookie", "theme=dark");
  s->decodeHeaders(true);
  expectAuthenticatedAs(*s, "inference-client");
  EXPECT_FALSE(s->request.headers.get("authorization"));
  EXPECT_FALSE(s->request.headers.get("x-api-key"));
  EXPECT_EQ(s->request.headers.get("cookie"), "theme=dark");
}

TEST_F(AuthFilterTest, KeyWithoutTheRoutesScopeIs403) {
  struct Case {
    const char* key;
    int scope;
  } cases[] = {
      {kInferenceKey, edge::v1::SCOPE_ADMIN},   {kInferenceKey, edge::v1::SCOPE_WORKER},
      {kWorkerKey, edge::v1::SCOPE_INFERENCE},  {kWorkerKey, edge::v1::SCOPE_ADMIN},
      {kNoScopeKey, edge::v1::SCOPE_INFERENCE}, {kAdminKey, edge::v1::SCOPE_WORKER},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.key) + " on scope " + std::to_string(c.scope));
    uint64_t forbidden = stats().forbidden.load();
    auto s = withKey(c.key, c.scope);
    expectRefused(*s, 403, "permission_error", "insufficient_scope");
    EXPECT_EQ(s->info.identity, nullptr);
    EXPECT_FALSE(s->responseHeader("www-authenticate"));
    EXPECT_EQ(stats().forbidden.load(), forbidden + 1);
  }
}

TEST_F(AuthFilterTest, ScopesGrantTheirOwnRoutes) {
  expectAuthenticatedAs(*withKey(kWorkerKey, edge::v1::SCOPE_WORKER), "worker-client");
  expectAuthenticatedAs(*withKey(kAdminKey, edge::v1::SCOPE_INFERENCE), "admin-client");
  // Any valid key on a route that needs no scope, even one with none.
  expectAuthenticatedAs(*withKey(kNoScopeKey, 0), "noscope-client");
}

TEST_F(AuthFilterTest, ScopeOutsideTheEnumGrantsNothing) {
  // 34 would shift to bit 2 (admin) on x86 if it were not filtered out.
  auto s = withKey(kWildScopeKey, edge::v1::SCOPE_ADMIN);
  expectRefused(*s, 403, "permission_error", "insufficient_scope");
  EXPECT_EQ(AuthConfig(auth).keyCount(), 7u);
}

TEST_F(AuthFilterTest, AdminRouteKeepsTheKeyForTheControlPlane) {
  auto s = withKey(kAdminKey, edge::v1::SCOPE_ADMIN);
  expectAuthenticatedAs(*s, "admin-client");
  const std::string* kept = s->info.filter_state.get(http::kClientCredential);
  ASSERT_NE(kept, nullptr);
  EXPECT_EQ(*kept, kAdminKey);
  EXPECT_FALSE(s->request.headers.get("authorization"));
}

TEST_F(AuthFilterTest, PresentedKeyMustBeValidEvenWhereNoneIsNeeded) {
  auth = authConfig(/*require_key=*/false);
  expectRefused(*withKey("sk-unknown-key", 0), 401, "authentication_error", "invalid_api_key");
}

TEST_F(AuthFilterTest, TheKeyNeverAppearsInARefusal) {
  const std::string secret = "sk-SECRET-material-never-echo";
  auto invalid = withKey(secret);
  auto forbidden = withKey(kInferenceKey, edge::v1::SCOPE_ADMIN);
  for (int i = 0; i < 3; ++i) withKey(secret);
  auto throttled = withKey(secret);
  EXPECT_EQ(throttled->responseStatus(), 429);
  for (const auto* s : {invalid.get(), forbidden.get(), throttled.get()}) {
    std::string seen = s->response_body + s->info.error_code + s->info.client_name;
    for (const auto& [name, value] : s->response_headers->headers.entries()) {
      seen.append(name).append(value);
    }
    EXPECT_EQ(seen.find("SECRET"), std::string::npos) << seen;
  }
}

// ---------------------------------------------------------------------------
// Failed-attempt throttling (RateLimits.auth_failures_per_ip)

TEST_F(AuthFilterTest, TooManyFailedKeysFromOneAddressAre429EvenForAValidKey) {
  uint64_t throttled = stats().throttled.load();
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(withKey("sk-guess-" + std::to_string(i))->responseStatus(), 401);
  }
  auto s = withKey(kInferenceKey);
  expectRefused(*s, 429, "rate_limit_error", "auth_rate_limit_exceeded");
  EXPECT_EQ(s->responseHeader("x-ratelimit-tier"), "auth");
  int retry = std::stoi(s->responseHeader("retry-after").value_or("0"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 60);
  EXPECT_NE(s->responseError()->message.find("too many failed API key attempts"),
            std::string::npos);
  EXPECT_EQ(stats().throttled.load(), throttled + 1);
}

TEST_F(AuthFilterTest, SuccessfulAndKeylessRequestsDoNotCountAsFailures) {
  for (int i = 0; i < 10; ++i) withKey(kInferenceKey);
  for (int i = 0; i < 10; ++i) stream()->decodeHeaders(true);                  // 401 missing key
  for (int i = 0; i < 10; ++i) withKey(kInferenceKey, edge::v1::SCOPE_ADMIN);  // 403
  expectAuthenticatedAs(*withKey(kInferenceKey), "inference-client");
}

TEST_F(AuthFilterTest, ThrottledAddressWithoutAKeyStillGetsTheMissingKeyAnswer) {
  for (int i = 0; i < 3; ++i) withKey("sk-guess");
  auto s = stream();
  s->decodeHeaders(true);
  expectRefused(*s, 401, "authentication_error", "missing_api_key");
}

TEST_F(AuthFilterTest, FailuresAreCountedPerClientAddress) {
  for (int i = 0; i < 3; ++i) withKey("sk-guess");
  auto other = stream();
  other->peer_ip = "198.51.100.7";
  other->request.headers.add("authorization", std::string("Bearer ") + kInferenceKey);
  other->decodeHeaders(true);
  expectAuthenticatedAs(*other, "inference-client");
}

TEST_F(AuthFilterTest, FailuresBehindATrustedProxyAreCountedPerForwardedClient) {
  auto from = [&](const char* client, std::string_view key) {
    auto s = stream();
    s->peer_ip = "10.1.2.3";
    s->request.headers.add("x-forwarded-for", client);
    s->request.headers.add("authorization", "Bearer " + std::string(key));
    s->decodeHeaders(true);
    return s;
  };
  for (int i = 0; i < 3; ++i) from("203.0.113.5", "sk-guess");
  EXPECT_EQ(from("203.0.113.5", kInferenceKey)->responseStatus(), 429);
  auto other = from("203.0.113.6", kInferenceKey);
  expectAuthenticatedAs(*other, "inference-client");
  EXPECT_EQ(other->info.client_ip, "203.0.113.6");
}

TEST_F(AuthFilterTest, FailuresFromOneIpv6PrefixAreCountedTogether) {
  for (int i = 0; i < 3; ++i) {
    auto s = stream();
    s->peer_ip = "2001:db8:1:2::" + std::to_string(i + 1);
    s->request.headers.add("authorization", "Bearer sk-guess");
    s->decodeHeaders(true);
  }
  auto s = stream();
  s->peer_ip = "2001:db8:1:2::99";
  s->request.headers.add("authorization", std::string("Bearer ") + kInferenceKey);
  s->decodeHeaders(true);
  EXPECT_EQ(s->responseStatus(), 429);
}

TEST_F(AuthFilterTest, ThrottlingCanBeTurnedOff) {
  auto l = std::make_shared<ratelimit::RateLimitConfig>(*limits);
  l->auth_failures_per_ip = 0;
  limits = l;
  for (int i = 0; i < 10; ++i) withKey("sk-guess");
  expectAuthenticatedAs(*withKey(kInferenceKey), "inference-client");
}

// ---------------------------------------------------------------------------
// Session cookies on ordinary routes

TEST_F(AuthFilterTest, SessionCookieAuthenticatesAndIsNotForwarded) {
  std::string token = sessionToken();
  auto s = withCookie(token);
  expectAuthenticatedAs(*s, "inference-client");
  // The whole Cookie header goes, the client's other cookies with it.
  EXPECT_FALSE(s->request.headers.get("cookie"));
  EXPECT_EQ(s->info.filter_state.get(http::kClientCredential), nullptr);
}

TEST_F(AuthFilterTest, SecureCookieNameIsAcceptedToo) {
  expectAuthenticatedAs(
      *withCookie(sessionToken(), edge::v1::SCOPE_INFERENCE, kSecureSessionCookie),
      "inference-client");
}

TEST_F(AuthFilterTest, SessionNeverCarriesTheAdminScope) {
  std::string token = sessionToken(kAdminKey);
  expectAuthenticatedAs(*withCookie(token), "admin-client");
  auto s = withCookie(token, edge::v1::SCOPE_ADMIN);
  expectRefused(*s, 403, "permission_error", "insufficient_scope");
}

TEST_F(AuthFilterTest, CookieIsRefusedOnCrossSiteRequests) {
  std::string token = sessionToken();
  for (const char* site : {"cross-site", "same-site", "none"}) {
    SCOPED_TRACE(site);
    auto s = stream();
    s->request.headers.add("cookie", std::string(kSessionCookie) + "=" + token);
    s->request.headers.add("sec-fetch-site", site);
    s->decodeHeaders(true);
    expectRefused(*s, 403, "permission_error", "cross_site_request");
  }
}

TEST_F(AuthFilterTest, WithoutSecFetchSiteTheOriginMustBeThisSite) {
  std::string token = sessionToken();
  auto send = [&](const char* origin, const char* scheme) {
    auto s = stream();
    s->client_scheme = scheme;
    s->request.headers.add("cookie", std::string(kSessionCookie) + "=" + token);
    if (origin) s->request.headers.add("origin", origin);
    s->decodeHeaders(true);
    return s;
  };
  expectAuthenticatedAs(*send("http://edge.test", "http"), "inference-client");
  expectAuthenticatedAs(*send("https://edge.test", "https"), "inference-client");
  // Neither header (an older browser or a script): allowed.
  expectAuthenticatedAs(*send(nullptr, "http"), "inference-client");
  expectRefused(*send("https://evil.test", "https"), 403, "permission_error", "cross_site_request");
  expectRefused(*send("http://edge.test", "https"), 403, "permission_error", "cross_site_request");
}

TEST_F(AuthFilterTest, BadOrStaleCookiesAreNoCredential) {
  std::string hash = sha256(kInferenceKey);
  std::vector<std::string> tokens = {
      "garbage",
      signSession(kSigningKey, hash, now() - 1),                    // expired
      signSession("some-other-signing-key", hash, now() + 600),     // not ours
      signSession(kSigningKey, sha256("sk-unknown"), now() + 600),  // no such key
      signSession(kSigningKey, sha256(kExpiredKey), now() + 600),   // key expired
  };
  for (const std::string& token : tokens) {
    SCOPED_TRACE(token);
    auto s = withCookie(token);
    expectRefused(*s, 401, "authentication_error", "missing_api_key");
  }
  // On a route that needs nothing, the stale cookie is dropped and the
  // request goes on anonymous.
  auto open = withCookie("garbage", 0);
  EXPECT_TRUE(open->headers_passed_chain);
  EXPECT_EQ(open->info.identity, nullptr);
  EXPECT_FALSE(open->request.headers.get("cookie"));
}

TEST_F(AuthFilterTest, CookieSignedWithAnOlderSigningKeyStillVerifies) {
  std::string token = signSession(kOldSigningKey, sha256(kInferenceKey), now() + 600);
  expectAuthenticatedAs(*withCookie(token), "inference-client");
}

TEST_F(AuthFilterTest, RemovingTheKeyEndsItsSessions) {
  std::string token = sessionToken();
  auth.mutable_api_keys()->DeleteSubrange(0, 1);
  expectRefused(*withCookie(token), 401, "authentication_error", "missing_api_key");
}

TEST_F(AuthFilterTest, SessionLoggedOutElsewhereInTheFarmIsRefused) {
  std::string token = sessionToken();
  std::string hash, digest;
  int64_t expires = 0;
  ASSERT_TRUE(verifySession(token, {kSigningKey}, now(), &hash, &expires, &digest));
  auto* l = auth.add_logged_out_sessions();
  l->set_token_sha256(digest);
  l->set_expires_at(expires);
  expectRefused(*withCookie(token), 401, "authentication_error", "missing_api_key");
}

TEST_F(AuthFilterTest, KeyWinsOverACookie) {
  std::string token = sessionToken(kAdminKey);
  auto s = stream(edge::v1::SCOPE_ADMIN);
  s->request.headers.add("authorization", std::string("Bearer ") + kAdminKey);
  s->request.headers.add("cookie", std::string(kSessionCookie) + "=" + token);
  s->request.headers.add("sec-fetch-site", "cross-site");
  s->decodeHeaders(true);
  // The key decides (admin allowed), the cookie is not looked at.
  expectAuthenticatedAs(*s, "admin-client");
}

// With a key, a session cookie that came along is dropped as on the cookie
// path ("the cluster has no use for the Edge's cookie").
TEST_F(AuthFilterTest, SessionCookieIsNotForwardedWhenAKeyIsPresented) {
  std::string token = sessionToken();
  auto s = stream();
  s->request.headers.add("authorization", std::string("Bearer ") + kInferenceKey);
  s->request.headers.add("cookie", std::string(kSessionCookie) + "=" + token);
  s->decodeHeaders(true);
  expectAuthenticatedAs(*s, "inference-client");
  std::optional<std::string_view> cookie = s->request.headers.get("cookie");
  EXPECT_TRUE(!cookie || cookie->find(token) == std::string_view::npos);
}

// ---------------------------------------------------------------------------
// The session endpoint

TEST_F(AuthFilterTest, LoginSetsAnHttpOnlyStrictCookieAndNamesTheClient) {
  auto s = login(kInferenceKey);
  EXPECT_EQ(s->responseStatus(), 200);
  EXPECT_EQ(s->responseHeader("content-type"), "application/json");
  EXPECT_EQ(s->responseHeader("cache-control"), "no-store");
  std::string cookie = s->responseHeader("set-cookie").value_or("");
  EXPECT_EQ(cookie.rfind("eldric_session=", 0), 0u) << cookie;
  EXPECT_NE(cookie.find("; Path=/; Max-Age=43200; HttpOnly; SameSite=Strict"), std::string::npos)
      << cookie;
  EXPECT_EQ(cookie.find("Secure"), std::string::npos);
  // The cookie holds no key.
  EXPECT_EQ(cookie.find("SECRET"), std::string::npos);
  EXPECT_NE(s->response_body.find(R"("authenticated":true,"client":"inference-client")"),
            std::string::npos);
  EXPECT_EQ(s->info.client_name, "inference-client");
  std::string hash;
  int64_t expires = 0;
  ASSERT_TRUE(verifySession(cookieToken(cookie), {kSigningKey}, now(), &hash, &expires));
  EXPECT_EQ(hash, sha256(kInferenceKey));
  EXPECT_NE(s->response_body.find("\"expires_at\":" + std::to_string(expires)), std::string::npos);
}

TEST_F(AuthFilterTest, LoginOverHttpsUsesTheHostPrefixedSecureCookie) {
  std::string cookie = login(kInferenceKey, "https")->responseHeader("set-cookie").value_or("");
  EXPECT_EQ(cookie.rfind("__Host-eldric_session=", 0), 0u) << cookie;
  EXPECT_NE(cookie.find("; Secure"), std::string::npos);
}

TEST_F(AuthFilterTest, LoginBehindATrustedTlsProxyUsesTheSecureCookie) {
  auto viaProxy = [&](const char* peer) {
    auto s = login(kInferenceKey, "http", [peer](FakeStream& s) {
      s.peer_ip = peer;
      s.request.headers.add("x-forwarded-proto", "https");
    });
    return s->responseHeader("set-cookie").value_or("");
  };
  EXPECT_EQ(viaProxy("10.9.9.9").rfind("__Host-eldric_session=", 0), 0u);
  // Anyone else's X-Forwarded-Proto is not believed.
  EXPECT_EQ(viaProxy("192.0.2.1").rfind("eldric_session=", 0), 0u);
}

TEST_F(AuthFilterTest, SessionLastsNoLongerThanItsKeyOrTheConfiguredTtl) {
  auth.mutable_session_ttl()->set_seconds(600);
  std::string cookie = login(kInferenceKey)->responseHeader("set-cookie").value_or("");
  EXPECT_NE(cookie.find("Max-Age=600;"), std::string::npos) << cookie;

  auth.mutable_session_ttl()->set_seconds(86400);
  auto s = login(kSoonKey);
  int64_t key_expiry = auth.api_keys(4).expires_at();
  EXPECT_NE(s->response_body.find("\"expires_at\":" + std::to_string(key_expiry)),
            std::string::npos)
      << s->response_body;
}

TEST_F(AuthFilterTest, LoginBodyMayArriveInPieces) {
  auto s = sessionStream("POST");
  s->request.headers.add("content-type", "application/json; charset=utf-8");
  s->decodeHeaders(false);
  s->decodeData(R"({"api_k)", false);
  EXPECT_EQ(s->responseStatus(), 0);
  s->decodeData(R"(ey":")" + std::string(kInferenceKey) + R"("})", true);
  EXPECT_EQ(s->responseStatus(), 200);
  // The body is the filter's: nothing of it goes on.
  EXPECT_EQ(s->body_passed_chain, "");
}

TEST_F(AuthFilterTest, LoginWithABadKeyIs401AndClearsTheCookie) {
  auto s = login("sk-unknown-key");
  expectRefused(*s, 401, "authentication_error", "invalid_api_key");
  EXPECT_EQ(s->responseHeader("set-cookie"),
            "eldric_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
}

TEST_F(AuthFilterTest, FailedLoginsCountTowardsThrottling) {
  for (int i = 0; i < 3; ++i) login("sk-guess");
  auto s = login(kInferenceKey);
  expectRefused(*s, 429, "rate_limit_error", "auth_rate_limit_exceeded");
}

TEST_F(AuthFilterTest, LoginWithoutSigningKeysIsRefused) {
  auth.clear_session_signing_keys();
  auto s = login(kInferenceKey);
  expectRefused(*s, 401, "authentication_error", "invalid_api_key");
  // Not the client's fault: it does not count as a failed attempt.
  for (int i = 0; i < 5; ++i) login(kInferenceKey);
  auth = authConfig();
  EXPECT_EQ(login(kInferenceKey)->responseStatus(), 200);
}

TEST_F(AuthFilterTest, LoginRefusesWhatACrossSiteFormCouldSend) {
  auto form = postSession("application/x-www-form-urlencoded", "api_key=sk-x");
  expectRefused(*form, 415, "invalid_request_error", "unsupported_media_type");
  auto from = [](const char* origin) {
    return [origin](FakeStream& s) { s.request.headers.add("origin", origin); };
  };
  auto elsewhere = login(kInferenceKey, "http", from("http://evil.test"));
  expectRefused(*elsewhere, 403, "permission_error", "cross_site_request");
  EXPECT_EQ(login(kInferenceKey, "http", from("http://edge.test"))->responseStatus(), 200);
}

TEST_F(AuthFilterTest, LoginBodyMustBeAJsonObjectWithAStringKey) {
  for (const char* body : {"", "not json", "[]", R"({"key":"sk-x"})", R"({"api_key":7})",
                           R"({"api_key":"a","api_key":"b"})"}) {
    SCOPED_TRACE(body);
    expectRefused(*postSession("application/json", body), 400, "invalid_request_error",
                  "invalid_json");
  }
}

TEST_F(AuthFilterTest, WhoAmIAnswersWithAndWithoutASession) {
  auto anonymous = sessionStream("GET");
  anonymous->decodeHeaders(true);
  EXPECT_EQ(anonymous->responseStatus(), 200);
  EXPECT_EQ(anonymous->response_body, R"({"authenticated":false,"auth_required":true})");

  auto s = sessionStream("GET");
  s->request.headers.add("cookie", std::string(kSessionCookie) + "=" + sessionToken());
  s->decodeHeaders(true);
  EXPECT_EQ(s->response_body,
            R"({"authenticated":true,"auth_required":true,"client":"inference-client"})");
}

TEST_F(AuthFilterTest, LogoutClearsTheCookieAndRevokesTheSessionHere) {
  std::string token = sessionToken();
  std::string other = sessionToken();  // a second login with the same key
  auto out = sessionStream("DELETE");
  out->request.headers.add("cookie", std::string(kSessionCookie) + "=" + token);
  out->decodeHeaders(true);
  EXPECT_EQ(out->responseStatus(), 200);
  EXPECT_EQ(out->response_body, R"({"authenticated":false,"auth_required":true})");
  EXPECT_EQ(out->responseHeader("set-cookie"),
            "eldric_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict");
  expectRefused(*withCookie(token), 401, "authentication_error", "missing_api_key");
  // Only that session: the other login stays.
  expectAuthenticatedAs(*withCookie(other), "inference-client");
}

TEST_F(AuthFilterTest, SessionEndpointAllowsOnlyGetPostAndDelete) {
  auto s = sessionStream("PUT");
  s->decodeHeaders(true);
  expectRefused(*s, 405, "invalid_request_error", "method_not_allowed");
}

}  // namespace
}  // namespace eldric::filters::auth
