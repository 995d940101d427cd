#include "controlplane/core/acme/acme.h"

#include <gtest/gtest.h>

#include <deque>

#include "common/base64url.h"

namespace eldric::controlplane::acme {
namespace {

// Answers from a script, and keeps what was asked.
class ScriptedTransport : public Transport {
 public:
  bool fetch(const HttpRequest& request, HttpResponse* out, std::string* error) override {
    requests.push_back(request);
    if (answers.empty()) {
      *error = "connection refused";
      return false;
    }
    *out = answers.front();
    answers.pop_front();
    return true;
  }
  std::deque<HttpResponse> answers;
  std::vector<HttpRequest> requests;
};

HttpResponse answer(int status, std::string body, std::string nonce = "",
                    std::string location = "") {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.replay_nonce = std::move(nonce);
  r.location = std::move(location);
  return r;
}

const char kDirectory[] =
    R"({"newNonce":"https://ca.test/nonce","newAccount":"https://ca.test/acct",)"
    R"("newOrder":"https://ca.test/order","meta":{"termsOfService":"x"}})";

// The protected header of a JWS body, decoded.
std::string protectedHeader(const std::string& body) {
  size_t a = body.find("\"protected\":\"") + 13;
  std::string decoded;
  EXPECT_TRUE(base64UrlDecode(body.substr(a, body.find('"', a) - a), &decoded));
  return decoded;
}

TEST(AcmeParse, Directory) {
  Directory d;
  std::string error;
  ASSERT_TRUE(parseDirectory(kDirectory, &d, &error)) << error;
  EXPECT_EQ(d.new_order, "https://ca.test/order");
  EXPECT_FALSE(parseDirectory(R"({"newNonce":"http://ca.test/n","newAccount":"https://a",)"
                              R"("newOrder":"https://o"})",
                              &d, &error));
  EXPECT_NE(error.find("newNonce"), std::string::npos) << error;
  EXPECT_FALSE(parseDirectory("[]", &d, &error));
  EXPECT_FALSE(parseDirectory(std::string(100, '['), &d, &error));
  EXPECT_FALSE(parseDirectory(R"({"newNonce":1})", &d, &error));
}

TEST(AcmeParse, OrderAndAuthorization) {
  Order o;
  std::string error;
  ASSERT_TRUE(parseOrder(R"({"status":"pending","authorizations":["https://ca.test/authz/1"],)"
                         R"("finalize":"https://ca.test/fin"})",
                         &o, &error))
      << error;
  EXPECT_EQ(o.authorizations.size(), 1u);
  EXPECT_FALSE(
      parseOrder(R"({"status":"pending","authorizations":[],"finalize":"https://f"})", &o, &error));
  EXPECT_FALSE(parseOrder(R"({"status":"pending","authorizations":["file:///etc/passwd"],)"
                          R"("finalize":"https://f"})",
                          &o, &error));
  Authorization a;
  ASSERT_TRUE(parseAuthorization(
      R"({"status":"pending","identifier":{"type":"dns","value":"edge.test"},"challenges":[)"
      R"({"type":"dns-01","url":"https://ca.test/c/1","token":"!!"},)"
      R"({"type":"http-01","url":"https://ca.test/c/2","token":"abc_-DEF"}]})",
      &a, &error))
      << error;
  ASSERT_EQ(a.challenges.size(), 2u);
  EXPECT_EQ(a.challenges[1].token, "abc_-DEF");
  // A token that could escape the challenge path is refused.
  EXPECT_FALSE(
      parseAuthorization(R"({"status":"pending","identifier":{"value":"e"},"challenges":[)"
                         R"({"type":"http-01","url":"https://ca.test/c/2","token":"../../x"}]})",
                         &a, &error));
}

TEST(AcmeParse, RenewalInfo) {
  Directory d;
  std::string error;
  ASSERT_TRUE(
      parseDirectory(R"({"newNonce":"https://ca.test/n","newAccount":"https://ca.test/a",)"
                     R"("newOrder":"https://ca.test/o","renewalInfo":"https://ca.test/ari"})",
                     &d, &error))
      << error;
  EXPECT_EQ(d.renewal_info, "https://ca.test/ari");
  // Optional, and a bad one is ignored rather than failing the directory.
  ASSERT_TRUE(
      parseDirectory(R"({"newNonce":"https://ca.test/n","newAccount":"https://ca.test/a",)"
                     R"("newOrder":"https://ca.test/o","renewalInfo":"http://ca.test/ari"})",
                     &d, &error));
  EXPECT_TRUE(d.renewal_info.empty());

  RenewalWindow w;
  ASSERT_TRUE(parseRenewalInfo(R"({"suggestedWindow":{"start":"2025-01-02T04:00:00Z",)"
                               R"("end":"2025-01-03T04:00:00.5+01:00"},)"
                               R"("explanationURL":"https://ca.test/why"})",
                               &w, &error))
      << error;
  EXPECT_EQ(w.start, 1735790400);
  EXPECT_EQ(w.end, 1735790400 + 86400 - 3600);
  EXPECT_EQ(w.explanation_url, "https://ca.test/why");
  EXPECT_FALSE(parseRenewalInfo(R"({"suggestedWindow":{"start":"2025-01-03T04:00:00Z",)"
                                R"("end":"2025-01-02T04:00:00Z"}})",
                                &w, &error));
  EXPECT_FALSE(
      parseRenewalInfo(R"({"suggestedWindow":{"start":"yesterday","end":"today"}})", &w, &error));
  EXPECT_FALSE(parseRenewalInfo(R"({})", &w, &error));
  int64_t t = 0;
  EXPECT_FALSE(parseRfc3339("2025-13-01T00:00:00Z", &t));
  EXPECT_FALSE(parseRfc3339("2025-01-01T00:00:00", &t));
  EXPECT_FALSE(parseRfc3339("2025-01-01T00:00:00Zjunk", &t));
  EXPECT_TRUE(parseRfc3339("1970-01-01t00:00:00z", &t));
  EXPECT_EQ(t, 0);
}

TEST(AcmeClient, FetchesRenewalInfoByCertificateId) {
  ScriptedTransport ca;
  std::string error;
  auto key = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
  ASSERT_TRUE(key) << error;
  Client client(ca, *key, "https://ca.test/dir");
  ca.answers.push_back(
      answer(200, R"({"newNonce":"https://ca.test/n","newAccount":"https://ca.test/a",)"
                  R"("newOrder":"https://ca.test/o","renewalInfo":"https://ca.test/ari"})"));
  HttpResponse info = answer(200, R"({"suggestedWindow":{"start":"2025-01-02T04:00:00Z",)"
                                  R"("end":"2025-01-03T04:00:00Z"}})");
  info.retry_after = "21600";
  ca.answers.push_back(info);
  ASSERT_TRUE(client.loadDirectory()) << client.error();
  RenewalWindow w;
  ASSERT_TRUE(client.fetchRenewalInfo("aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE", &w)) << client.error();
  EXPECT_EQ(ca.requests.back().method, "GET");
  EXPECT_EQ(ca.requests.back().url, "https://ca.test/ari/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");
  EXPECT_EQ(client.retryAfterSeconds(), 21600);
  EXPECT_EQ(w.end - w.start, 86400);
}

TEST(AcmeParse, ProblemIsBoundedAndPrintable) {
  Problem p;
  parseProblem(answer(403, R"({"type":"urn:ietf:params:acme:error:rejectedIdentifier",)"
                           R"("detail":"no \u0007 way"})"),
               &p);
  EXPECT_EQ(p.shortType(), "rejectedIdentifier");
  EXPECT_EQ(p.detail, "no ? way");
  parseProblem(answer(502, "<html>bad gateway</html>"), &p);
  EXPECT_EQ(p.describe(), "HTTP 502: <html>bad gateway</html>");
  parseProblem(answer(500, std::string(5000, 'x')), &p);
  EXPECT_LT(p.describe().size(), 300u);
}

TEST(AcmeClient, RetriesABadNonceAndSignsEachRequestOnce) {
  std::string error;
  auto key = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
  ScriptedTransport t;
  t.answers.push_back(answer(200, kDirectory));
  t.answers.push_back(answer(200, "", "nonce-1"));  // HEAD newNonce
  t.answers.push_back(
      answer(400, R"({"type":"urn:ietf:params:acme:error:badNonce","detail":"stale"})", "nonce-2"));
  t.answers.push_back(answer(201, R"({"status":"valid"})", "nonce-3", "https://ca.test/acct/7"));
  Client c(t, *key, "https://ca.test/dir");
  ASSERT_TRUE(c.loadDirectory()) << c.error();
  std::string account;
  ASSERT_TRUE(c.registerAccount("ops@edge.test", &account)) << c.error();
  EXPECT_EQ(account, "https://ca.test/acct/7");
  ASSERT_EQ(t.requests.size(), 4u);
  EXPECT_EQ(t.requests[1].method, "HEAD");
  std::string first = protectedHeader(t.requests[2].body);
  std::string second = protectedHeader(t.requests[3].body);
  EXPECT_NE(first.find("\"nonce\":\"nonce-1\""), std::string::npos) << first;
  EXPECT_NE(second.find("\"nonce\":\"nonce-2\""), std::string::npos) << second;
  EXPECT_NE(second.find("\"jwk\":{\"crv\":\"P-256\""), std::string::npos) << second;
  EXPECT_NE(second.find("\"url\":\"https://ca.test/acct\""), std::string::npos) << second;

  // Later requests name the account, not the key.
  Order o;
  std::string url;
  t.answers.push_back(answer(403,
                             R"({"type":"urn:ietf:params:acme:error:rejectedIdentifier",)"
                             R"("detail":"policy forbids"})",
                             "nonce-4"));
  EXPECT_FALSE(c.newOrder({"edge.test"}, &o, &url));
  EXPECT_EQ(c.error(), "order: the CA answered 403 (rejectedIdentifier: policy forbids)");
  std::string third = protectedHeader(t.requests[4].body);
  EXPECT_NE(third.find("\"kid\":\"https://ca.test/acct/7\""), std::string::npos) << third;
  EXPECT_EQ(c.keyAuthorization("tok").rfind("tok.", 0), 0u);
  EXPECT_EQ(c.keyAuthorization("tok").size(), 4u + 43u);
}

TEST(AcmeClient, GivesUpOnEndlessBadNonces) {
  std::string error;
  auto key = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
  ScriptedTransport t;
  t.answers.push_back(answer(200, kDirectory));
  t.answers.push_back(answer(200, "", "n"));
  for (int i = 0; i < 10; ++i)
    t.answers.push_back(answer(400, R"({"type":"urn:ietf:params:acme:error:badNonce"})", "n"));
  Client c(t, *key, "https://ca.test/dir");
  std::string account;
  EXPECT_FALSE(c.registerAccount("", &account));
  EXPECT_NE(c.error().find("badNonce"), std::string::npos) << c.error();
  EXPECT_LE(t.requests.size(), 2u + 6u);
}

TEST(AcmeClient, SaysWhenTheCaIsDown) {
  std::string error;
  auto key = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
  ScriptedTransport t;
  Client c(t, *key, "https://ca.test/dir");
  EXPECT_FALSE(c.loadDirectory());
  EXPECT_EQ(c.error(), "directory: cannot reach https://ca.test/dir: connection refused");
}

}  // namespace
}  // namespace eldric::controlplane::acme
