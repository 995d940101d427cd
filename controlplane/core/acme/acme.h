#pragma once

// An ACME client (RFC 8555): the directory, nonces, JWS-signed requests,
// the account, an order with its HTTP-01 authorizations, finalization with
// a CSR and the download of the chain. Blocking: each call is one or a few
// HTTP exchanges through a Transport, and the Manager (manager.h) runs it
// on a thread of its own. Everything a CA answers is untrusted input and
// goes through the parsers below (fuzzed: test/fuzz/acme_fuzz.cc).

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/pki/pki.h"

namespace eldric::controlplane::acme {

struct HttpRequest {
  std::string method;  // GET, HEAD or POST
  std::string url;
  std::string body;
  // A POST's body type; empty: application/jose+json (ACME's).
  std::string content_type;
};

struct HttpResponse {
  int status = 0;
  std::string body;  // at most kMaxResponseBytes
  std::string content_type, location, replay_nonce, retry_after;
};

// A CA's answers are small (a certificate chain is a few KiB): anything
// larger is cut off and refused.
inline constexpr size_t kMaxResponseBytes = 1 << 20;

class Transport {
 public:
  virtual ~Transport() = default;
  // One exchange. False with `*error` when no HTTP answer came (the
  // connection, TLS or the deadline failed) or it was over
  // kMaxResponseBytes.
  virtual bool fetch(const HttpRequest& request, HttpResponse* out, std::string* error) = 0;
  // Any thread: the exchange under way (and every later one) ends now,
  // failed. For a quick shutdown.
  virtual void interrupt() {}
};

// RFC 8555 section 6.7 (type is "urn:ietf:params:acme:error:<name>").
struct Problem {
  std::string type;
  std::string detail;
  // "badNonce" for urn:ietf:params:acme:error:badNonce.
  std::string shortType() const;
  // "<type>: <detail>", bounded, for logs and /api/v1/certificates.
  std::string describe() const;
};

struct Directory {
  std::string new_nonce, new_account, new_order;
  // ACME Renewal Information (RFC 9773); empty when the CA offers none.
  std::string renewal_info;
};

// RFC 9773 section 4.2: when the CA would like the certificate renewed.
struct RenewalWindow {
  int64_t start = 0, end = 0;  // Unix seconds, start < end
  std::string explanation_url;
};

struct Order {
  std::string status;  // pending, ready, processing, valid, invalid
  std::vector<std::string> authorizations;
  std::string finalize;
  std::string certificate;  // once valid
  Problem error;
};

struct Challenge {
  std::string type, url, token, status;
  Problem error;
};

struct Authorization {
  std::string status;      // pending, valid, invalid, ...
  std::string identifier;  // the DNS name
  std::vector<Challenge> challenges;
};

// The parsers: false with `*error` for anything that is not the object
// RFC 8555 describes (a URL that is not https, a token that is not
// base64url, too many entries, ...).
bool parseDirectory(std::string_view body, Directory* out, std::string* error);
bool parseOrder(std::string_view body, Order* out, std::string* error);
bool parseAuthorization(std::string_view body, Authorization* out, std::string* error);
bool parseRenewalInfo(std::string_view body, RenewalWindow* out, std::string* error);
// RFC 3339 date-time ("2025-01-02T04:00:00Z", fractions and offsets
// allowed) to Unix seconds.
bool parseRfc3339(std::string_view text, int64_t* out);
// Always fills `*out` (with the status and the first bytes of a body that
// is not a problem document).
void parseProblem(const HttpResponse& response, Problem* out);

// A CA URL the client will follow: https, parseable, bounded.
bool validCaUrl(std::string_view url);

class Client {
 public:
  // `account_key` must outlive the client.
  Client(Transport& transport, const pki::Key& account_key, std::string directory_url);

  // Each step returns false with error() saying which step failed and
  // what the CA answered.
  bool loadDirectory();
  const Directory& directory() const { return directory_; }
  // newAccount (RFC 8555 section 7.3), agreeing to the terms; the CA
  // answers the existing account for a known key. Sets the account URL
  // (the "kid" of later requests).
  bool registerAccount(const std::string& email, std::string* account_url);
  void setAccountUrl(std::string url) { kid_ = std::move(url); }
  bool newOrder(const std::vector<std::string>& domains, Order* order, std::string* order_url);
  bool fetchOrder(const std::string& order_url, Order* order);
  bool fetchAuthorization(const std::string& url, Authorization* out);
  // Tells the CA the challenge's answer is in place.
  bool respond(const std::string& challenge_url);
  bool finalize(const std::string& finalize_url, const std::string& csr_der, Order* order);
  bool downloadCertificate(const std::string& url, std::string* pem_chain);
  // GET <renewalInfo>/<certificate id> (RFC 9773): the suggested window;
  // retryAfterSeconds() then says when to ask again (up to a day). Needs
  // loadDirectory() first and directory().renewal_info set.
  bool fetchRenewalInfo(const std::string& certificate_id, RenewalWindow* out);

  // RFC 8555 section 8.1: token "." base64url(JWK thumbprint).
  std::string keyAuthorization(const std::string& token) const;
  // The last Retry-After the CA sent, in seconds (0: none).
  int64_t retryAfterSeconds() const { return retry_after_s_; }
  const std::string& error() const { return error_; }

 private:
  // A JWS-signed POST (payload "" is POST-as-GET); retries on badNonce.
  bool post(const std::string& url, const std::string& payload, bool use_jwk, const char* step,
            HttpResponse* out);
  bool fetchNonce(const char* step);
  bool fail(const char* step, const std::string& why);
  bool failWith(const char* step, const HttpResponse& response);

  Transport& transport_;
  const pki::Key& key_;
  std::string directory_url_;
  Directory directory_;
  std::string kid_;
  std::string nonce_;
  std::string thumbprint_;
  int64_t retry_after_s_ = 0;
  std::string error_;
};

}  // namespace eldric::controlplane::acme
