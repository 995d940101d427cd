#include "controlplane/core/acme/acme.h"

#include <rapidjson/document.h>

#include <cstdlib>
#include <ctime>

#include "common/address.h"
#include "common/base64url.h"
#include "common/crypto.h"
#include "common/json.h"
#include "common/log.h"

namespace eldric::controlplane::acme {
namespace {

constexpr size_t kMaxUrl = 2048;
constexpr size_t kMaxAuthorizations = 100;
constexpr size_t kMaxChallenges = 16;
constexpr size_t kMaxToken = 256;
constexpr size_t kMaxDetail = 512;
constexpr int kNonceRetries = 5;

using rapidjson::Value;

std::string str(const Value& obj, const char* name) {
  if (!obj.IsObject()) return "";
  auto it = obj.FindMember(name);
  if (it == obj.MemberEnd() || !it->value.IsString()) return "";
  return std::string(it->value.GetString(), it->value.GetStringLength());
}

bool parseObject(rapidjson::Document& doc, std::string_view body, const char* what,
                 std::string* error) {
  if (body.size() > kMaxResponseBytes) {
    *error = std::string(what) + " is too large";
    return false;
  }
  std::string why;
  json::ParseOptions options;
  options.max_depth = 8;
  if (!json::parse(doc, body, &why, options)) {
    *error = std::string(what) + " is " + why;
    return false;
  }
  if (!doc.IsObject()) {
    *error = std::string(what) + " is not a JSON object";
    return false;
  }
  return true;
}

// Printable ASCII only, bounded: a CA's text reaches logs and JSON.
std::string clean(std::string_view text, size_t max) {
  std::string out;
  for (char c : text.substr(0, max)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > max) out += "...";
  return out;
}

void problemFrom(const Value& obj, Problem* out) {
  if (!obj.IsObject()) return;
  out->type = clean(str(obj, "type"), 200);
  out->detail = clean(str(obj, "detail"), kMaxDetail);
}

bool problemMember(const Value& obj, Problem* out) {
  auto it = obj.FindMember("error");
  if (it != obj.MemberEnd()) problemFrom(it->value, out);
  return true;
}

bool urlMember(const Value& obj, const char* name, bool required, std::string* out,
               std::string* error) {
  *out = str(obj, name);
  if (out->empty() && !required) return true;
  if (!validCaUrl(*out)) {
    *error = std::string("\"") + name + "\" is missing or not an https URL";
    return false;
  }
  return true;
}

// A Retry-After of delay-seconds, at most `cap`; 0 when absent or not a
// positive number (an HTTP-date is not honoured).
int64_t retryAfter(const HttpResponse& r, int64_t cap) {
  if (r.retry_after.empty()) return 0;
  char* end = nullptr;
  long v = strtol(r.retry_after.c_str(), &end, 10);
  return end && !*end && v > 0 ? std::min<int64_t>(v, cap) : 0;
}

bool validToken(std::string_view token) {
  std::string bytes;
  return !token.empty() && token.size() <= kMaxToken && base64UrlDecode(token, &bytes);
}

// JSON string literal of `s`.
std::string quote(std::string_view s) {
  std::string out;
  log::appendJsonString(out, s);
  return out;
}

}  // namespace

std::string Problem::shortType() const {
  static constexpr std::string_view kPrefix = "urn:ietf:params:acme:error:";
  if (type.compare(0, kPrefix.size(), kPrefix) == 0) return type.substr(kPrefix.size());
  return type;
}

std::string Problem::describe() const {
  if (type.empty()) return detail;
  return detail.empty() ? shortType() : shortType() + ": " + detail;
}

bool validCaUrl(std::string_view url) {
  if (url.empty() || url.size() > kMaxUrl) return false;
  for (char c : url)
    if (c <= 0x20 || c >= 0x7f) return false;
  network::Url u;
  std::string why;
  return network::parseUrl(std::string(url), &u, &why) && u.https;
}

bool parseDirectory(std::string_view body, Directory* out, std::string* error) {
  rapidjson::Document doc;
  if (!parseObject(doc, body, "the directory", error)) return false;
  *out = Directory{};
  std::string why;
  if (!urlMember(doc, "newNonce", true, &out->new_nonce, &why) ||
      !urlMember(doc, "newAccount", true, &out->new_account, &why) ||
      !urlMember(doc, "newOrder", true, &out->new_order, &why)) {
    *error = "the directory's " + why;
    return false;
  }
  // Optional: a CA without ARI simply has none; a bad one is ignored too.
  if (!urlMember(doc, "renewalInfo", false, &out->renewal_info, &why)) out->renewal_info.clear();
  return true;
}

bool parseRfc3339(std::string_view t, int64_t* out) {
  // YYYY-MM-DDTHH:MM:SS
  if (t.size() < 20 || t.size() > 40) return false;
  auto digits = [&](size_t at, size_t n, int* v) {
    *v = 0;
    for (size_t i = at; i < at + n; ++i) {
      if (t[i] < '0' || t[i] > '9') return false;
      *v = *v * 10 + (t[i] - '0');
    }
    return true;
  };
  int y, mo, d, h, mi, sec;
  if (!digits(0, 4, &y) || t[4] != '-' || !digits(5, 2, &mo) || t[7] != '-' || !digits(8, 2, &d) ||
      (t[10] != 'T' && t[10] != 't') || !digits(11, 2, &h) || t[13] != ':' || !digits(14, 2, &mi) ||
      t[16] != ':' || !digits(17, 2, &sec))
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || sec > 60) return false;
  size_t at = 19;
  if (at < t.size() && t[at] == '.') {
    ++at;
    size_t from = at;
    while (at < t.size() && t[at] >= '0' && t[at] <= '9') ++at;
    if (at == from) return false;
  }
  int64_t offset = 0;
  if (at < t.size() && (t[at] == 'Z' || t[at] == 'z')) {
    ++at;
  } else if (at + 6 == t.size() && (t[at] == '+' || t[at] == '-') && t[at + 3] == ':') {
    int oh, om;
    if (!digits(at + 1, 2, &oh) || !digits(at + 4, 2, &om) || oh > 23 || om > 59) return false;
    offset = (t[at] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    at += 6;
  } else {
    return false;
  }
  if (at != t.size()) return false;
  struct tm tm = {};
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = sec;
  *out = static_cast<int64_t>(timegm(&tm)) - offset;
  return true;
}

bool parseRenewalInfo(std::string_view body, RenewalWindow* out, std::string* error) {
  rapidjson::Document doc;
  if (!parseObject(doc, body, "the renewal information", error)) return false;
  *out = RenewalWindow{};
  auto w = doc.FindMember("suggestedWindow");
  if (w == doc.MemberEnd() || !w->value.IsObject()) {
    *error = "the renewal information has no \"suggestedWindow\"";
    return false;
  }
  if (!parseRfc3339(str(w->value, "start"), &out->start) ||
      !parseRfc3339(str(w->value, "end"), &out->end) || out->end <= out->start) {
    *error = "the renewal information's window is not two RFC 3339 times, start before end";
    return false;
  }
  std::string why;
  if (!urlMember(doc, "explanationURL", false, &out->explanation_url, &why))
    out->explanation_url.clear();
  return true;
}

bool parseOrder(std::string_view body, Order* out, std::string* error) {
  rapidjson::Document doc;
  if (!parseObject(doc, body, "the order", error)) return false;
  *out = Order{};
  out->status = clean(str(doc, "status"), 32);
  if (out->status.empty()) {
    *error = "the order has no status";
    return false;
  }
  auto it = doc.FindMember("authorizations");
  if (it == doc.MemberEnd() || !it->value.IsArray() || it->value.Size() == 0 ||
      it->value.Size() > kMaxAuthorizations) {
    *error = "the order's \"authorizations\" is not a list of 1 to 100 URLs";
    return false;
  }
  for (const auto& a : it->value.GetArray()) {
    if (!a.IsString() || !validCaUrl(std::string_view(a.GetString(), a.GetStringLength()))) {
      *error = "the order names an authorization that is not an https URL";
      return false;
    }
    out->authorizations.emplace_back(a.GetString(), a.GetStringLength());
  }
  std::string why;
  if (!urlMember(doc, "finalize", true, &out->finalize, &why) ||
      !urlMember(doc, "certificate", false, &out->certificate, &why)) {
    *error = "the order's " + why;
    return false;
  }
  problemMember(doc, &out->error);
  return true;
}

bool parseAuthorization(std::string_view body, Authorization* out, std::string* error) {
  rapidjson::Document doc;
  if (!parseObject(doc, body, "the authorization", error)) return false;
  *out = Authorization{};
  out->status = clean(str(doc, "status"), 32);
  auto id = doc.FindMember("identifier");
  if (id != doc.MemberEnd()) out->identifier = clean(str(id->value, "value"), 253);
  if (out->status.empty() || out->identifier.empty()) {
    *error = "the authorization has no status or identifier";
    return false;
  }
  auto it = doc.FindMember("challenges");
  if (it == doc.MemberEnd() || !it->value.IsArray() || it->value.Size() > kMaxChallenges) {
    *error = "the authorization's \"challenges\" is not a list of at most 16";
    return false;
  }
  for (const auto& c : it->value.GetArray()) {
    if (!c.IsObject()) {
      *error = "the authorization has a challenge that is not an object";
      return false;
    }
    Challenge ch;
    ch.type = clean(str(c, "type"), 32);
    ch.status = clean(str(c, "status"), 32);
    ch.token = str(c, "token");
    std::string why;
    if (!urlMember(c, "url", true, &ch.url, &why)) {
      *error = "a challenge's " + why;
      return false;
    }
    // Only the challenges this client answers need a usable token.
    if (ch.type == "http-01" && !validToken(ch.token)) {
      *error = "the http-01 challenge's token is not base64url (or is too long)";
      return false;
    }
    auto e = c.FindMember("error");
    if (e != c.MemberEnd()) problemFrom(e->value, &ch.error);
    out->challenges.push_back(std::move(ch));
  }
  return true;
}

void parseProblem(const HttpResponse& response, Problem* out) {
  *out = Problem{};
  rapidjson::Document doc;
  std::string why;
  if (parseObject(doc, response.body, "the problem", &why)) problemFrom(doc, out);
  if (out->type.empty() && out->detail.empty())
    out->detail = "HTTP " + std::to_string(response.status) +
                  (response.body.empty() ? "" : ": " + clean(response.body, 200));
}

Client::Client(Transport& transport, const pki::Key& account_key, std::string directory_url)
    : transport_(transport), key_(account_key), directory_url_(std::move(directory_url)) {
  unsigned char digest[32];
  std::string jwk = key_.publicJwk();
  crypto::sha256(jwk.data(), jwk.size(), digest);
  thumbprint_ = base64UrlEncode(std::string_view(reinterpret_cast<char*>(digest), 32));
}

std::string Client::keyAuthorization(const std::string& token) const {
  return token + "." + thumbprint_;
}

bool Client::fail(const char* step, const std::string& why) {
  error_ = std::string(step) + ": " + why;
  return false;
}

bool Client::failWith(const char* step, const HttpResponse& response) {
  Problem p;
  parseProblem(response, &p);
  return fail(step,
              "the CA answered " + std::to_string(response.status) + " (" + p.describe() + ")");
}

bool Client::loadDirectory() {
  HttpResponse r;
  std::string why;
  if (!transport_.fetch({"GET", directory_url_, ""}, &r, &why))
    return fail("directory", "cannot reach " + directory_url_ + ": " + why);
  if (r.status != 200) return failWith("directory", r);
  if (!parseDirectory(r.body, &directory_, &why)) return fail("directory", why);
  return true;
}

bool Client::fetchRenewalInfo(const std::string& certificate_id, RenewalWindow* out) {
  if (directory_.renewal_info.empty()) return fail("renewal info", "the CA offers none");
  HttpResponse r;
  std::string why;
  std::string url = directory_.renewal_info;
  if (url.back() != '/') url += '/';
  if (!transport_.fetch({"GET", url + certificate_id, ""}, &r, &why))
    return fail("renewal info", "cannot reach the CA: " + why);
  retry_after_s_ = retryAfter(r, 86400);
  if (r.status != 200) return failWith("renewal info", r);
  if (!parseRenewalInfo(r.body, out, &why)) return fail("renewal info", why);
  return true;
}

bool Client::fetchNonce(const char* step) {
  HttpResponse r;
  std::string why;
  if (!transport_.fetch({"HEAD", directory_.new_nonce, ""}, &r, &why))
    return fail(step, "cannot get a nonce: " + why);
  if (r.replay_nonce.empty()) return fail(step, "the CA sent no Replay-Nonce");
  nonce_ = r.replay_nonce;
  return true;
}

bool Client::post(const std::string& url, const std::string& payload, bool use_jwk,
                  const char* step, HttpResponse* out) {
  if (directory_.new_nonce.empty() && !loadDirectory()) return false;
  for (int attempt = 0;; ++attempt) {
    if (nonce_.empty() && !fetchNonce(step)) return false;
    std::string header = std::string("{\"alg\":\"") + key_.jwsAlgorithm() + "\"," +
                         (use_jwk ? "\"jwk\":" + key_.publicJwk() : "\"kid\":" + quote(kid_)) +
                         ",\"nonce\":" + quote(nonce_) + ",\"url\":" + quote(url) + "}";
    nonce_.clear();  // each nonce is used once
    std::string protected64 = base64UrlEncode(header);
    std::string payload64 = base64UrlEncode(payload);
    std::string signature, why;
    if (!key_.sign(protected64 + "." + payload64, &signature, &why)) return fail(step, why);
    std::string body = "{\"protected\":\"" + protected64 + "\",\"payload\":\"" + payload64 +
                       "\",\"signature\":\"" + base64UrlEncode(signature) + "\"}";
    *out = HttpResponse{};
    if (!transport_.fetch({"POST", url, body}, out, &why))
      return fail(step, "cannot reach the CA: " + why);
    if (!out->replay_nonce.empty()) nonce_ = out->replay_nonce;
    retry_after_s_ = retryAfter(*out, 3600);
    if (out->status < 400) return true;
    Problem p;
    parseProblem(*out, &p);
    // RFC 8555 section 6.5: a badNonce answer carries a fresh nonce; try
    // again with it.
    if (p.shortType() == "badNonce" && attempt < kNonceRetries) continue;
    return failWith(step, *out);
  }
}

bool Client::registerAccount(const std::string& email, std::string* account_url) {
  std::string payload = "{\"termsOfServiceAgreed\":true";
  if (!email.empty()) payload += ",\"contact\":[" + quote("mailto:" + email) + "]";
  payload += "}";
  if (directory_.new_account.empty() && !loadDirectory()) return false;
  HttpResponse r;
  if (!post(directory_.new_account, payload, true, "account", &r)) return false;
  if (r.status != 200 && r.status != 201) return failWith("account", r);
  if (!validCaUrl(r.location)) return fail("account", "the CA gave no account URL");
  kid_ = r.location;
  *account_url = kid_;
  return true;
}

bool Client::newOrder(const std::vector<std::string>& domains, Order* order,
                      std::string* order_url) {
  std::string payload = "{\"identifiers\":[";
  for (size_t i = 0; i < domains.size(); ++i) {
    if (i) payload += ",";
    payload += "{\"type\":\"dns\",\"value\":" + quote(domains[i]) + "}";
  }
  payload += "]}";
  if (directory_.new_order.empty() && !loadDirectory()) return false;
  HttpResponse r;
  if (!post(directory_.new_order, payload, false, "order", &r)) return false;
  if (r.status != 201 && r.status != 200) return failWith("order", r);
  std::string why;
  if (!parseOrder(r.body, order, &why)) return fail("order", why);
  if (!validCaUrl(r.location)) return fail("order", "the CA gave no order URL");
  *order_url = r.location;
  return true;
}

bool Client::fetchOrder(const std::string& order_url, Order* order) {
  HttpResponse r;
  if (!post(order_url, "", false, "order status", &r)) return false;
  if (r.status != 200) return failWith("order status", r);
  std::string why;
  if (!parseOrder(r.body, order, &why)) return fail("order status", why);
  return true;
}

bool Client::fetchAuthorization(const std::string& url, Authorization* out) {
  HttpResponse r;
  if (!post(url, "", false, "authorization", &r)) return false;
  if (r.status != 200) return failWith("authorization", r);
  std::string why;
  if (!parseAuthorization(r.body, out, &why)) return fail("authorization", why);
  return true;
}

bool Client::respond(const std::string& challenge_url) {
  HttpResponse r;
  if (!post(challenge_url, "{}", false, "challenge", &r)) return false;
  if (r.status != 200) return failWith("challenge", r);
  return true;
}

bool Client::finalize(const std::string& finalize_url, const std::string& csr_der, Order* order) {
  HttpResponse r;
  if (!post(finalize_url, "{\"csr\":\"" + base64UrlEncode(csr_der) + "\"}", false, "finalize", &r))
    return false;
  if (r.status != 200) return failWith("finalize", r);
  std::string why;
  if (!parseOrder(r.body, order, &why)) return fail("finalize", why);
  return true;
}

bool Client::downloadCertificate(const std::string& url, std::string* pem_chain) {
  HttpResponse r;
  if (!post(url, "", false, "download", &r)) return false;
  if (r.status != 200) return failWith("download", r);
  *pem_chain = std::move(r.body);
  return true;
}

}  // namespace eldric::controlplane::acme
