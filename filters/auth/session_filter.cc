#include "filters/auth/session_filter.h"

#include <openssl/sha.h>
#include <time.h>

#include "common/json.h"
#include "common/log.h"
#include "dataplane/http/reply.h"
#include "filters/auth/session.h"
#include "rapidjson/document.h"

namespace eldric::filters::auth {

http::FilterHeadersStatus SessionFilter::decodeHeaders(http::RequestHeaders&, bool end_stream) {
  if (!end_stream) return http::FilterHeadersStatus::Continue;  // the body comes to decodeData
  answer("");
  return http::FilterHeadersStatus::StopIteration;
}

http::FilterDataStatus SessionFilter::decodeData(Buffer& data, bool end_stream) {
  if (!end_stream) return http::FilterDataStatus::StopIterationAndBuffer;
  answer(data.toString());
  data.clear();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

bool SessionFilter::clientUsesHttps(const http::RequestHeaders& req) {
  if (callbacks_->scheme() == "https") return true;
  // TLS ended at a trusted proxy in front: its word for the scheme.
  const auto& limits = attempts_.limits();
  if (!limits || limits->trusted_proxies.empty()) return false;
  if (!ratelimit::isTrustedProxy(callbacks_->peerIp(), limits->trusted_proxies)) return false;
  std::optional<std::string_view> proto = req.headers.get("x-forwarded-proto");
  return proto && http::equalsIgnoreCase(*proto, "https");
}

void SessionFilter::answer(const std::string& body) {
  const auto& req = callbacks_->requestHeaders();
  const auto& id = callbacks_->streamInfo().identity;
  bool secure = clientUsesHttps(req);
  std::string_view cookie_name = secure ? kSecureSessionCookie : kSessionCookie;
  std::string require = config_->requireKey() ? "true" : "false";
  if (req.method == "GET") {
    std::string out = "{\"authenticated\":" + std::string(id ? "true" : "false") +
                      ",\"auth_required\":" + require;
    if (id) {
      out += ",\"client\":";
      log::appendJsonString(out, id->client_name);
    }
    out += "}";
    http::sendJsonReply(*callbacks_, 200, std::move(out), {});
    return;
  }
  std::string clear = std::string(cookie_name) + "=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" +
                      (secure ? "; Secure" : "");
  if (req.method == "DELETE") {
    // Logged out on the server too: the cookie's token is refused from now
    // on, even if a copy of it outlives the browser's.
    const auto* session = callbacks_->streamInfo().filter_state.get(kVerifiedSession);
    if (session && !session->digest.empty() && session->expires_at) {
      revokeSession(session->digest, session->expires_at, static_cast<int64_t>(time(nullptr)));
    }
    http::sendJsonReply(*callbacks_, 200,
                        "{\"authenticated\":false,\"auth_required\":" + require + "}",
                        {{"set-cookie", clear}});
    return;
  }
  if (req.method != "POST") {
    refuse(*callbacks_, 405, "use GET, POST or DELETE on /api/v1/session", "method_not_allowed");
    return;
  }
  login(body, secure, clear);
}

void SessionFilter::login(const std::string& body, bool secure, const std::string& clear) {
  const auto& req = callbacks_->requestHeaders();
  // Login CSRF: a page elsewhere must not log the browser in with the
  // attacker's key. A cross-site form cannot send a JSON content type
  // without a CORS preflight (which is never granted), and a browser's
  // Origin must be this site.
  std::optional<std::string_view> ct = req.headers.get("content-type");
  if (!ct || ct->find("application/json") == std::string_view::npos) {
    refuse(*callbacks_, 415, "send the key as JSON: Content-Type: application/json",
           "unsupported_media_type");
    return;
  }
  if (std::optional<std::string_view> origin = req.headers.get("origin")) {
    std::optional<std::string_view> host = req.headers.get("host");
    std::string self =
        std::string(secure ? "https" : "http") + "://" + std::string(host.value_or(""));
    if (!host || *origin != self) {
      stats().forbidden.fetch_add(1, std::memory_order_relaxed);
      refuse(*callbacks_, 403, "cross-site login refused: Origin is not this site",
             "cross_site_request");
      return;
    }
  }
  rapidjson::Document doc;
  if (!json::parse(doc, body, nullptr) || !doc.IsObject() || !doc.HasMember("api_key") ||
      !doc["api_key"].IsString()) {
    refuse(*callbacks_, 400, "send {\"api_key\": \"sk-...\"}", "invalid_json");
    return;
  }
  if (!attempts_.allowed(*callbacks_, req)) return;
  std::string key(doc["api_key"].GetString(), doc["api_key"].GetStringLength());
  int64_t now = static_cast<int64_t>(time(nullptr));
  bool expired = false;
  auto who = config_->lookup(key, now, &expired);
  if (!who || config_->sessionKeys().empty()) {
    stats().invalid.fetch_add(1, std::memory_order_relaxed);
    if (!who) attempts_.failed();
    callbacks_->sendLocalReply(
        http::ErrorReply{401, "invalid API key", "authentication_error", "invalid_api_key"},
        [clear](http::ResponseHeaders& h) { h.headers.add("set-cookie", clear); });
    return;
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const uint8_t*>(key.data()), key.size(), digest);
  int64_t expires = now + config_->sessionTtlSeconds();
  if (who->expires_at != 0 && who->expires_at < expires) expires = who->expires_at;
  std::string token =
      signSession(config_->sessionKeys()[0],
                  std::string(reinterpret_cast<const char*>(digest), sizeof digest), expires);
  std::string_view cookie_name = secure ? kSecureSessionCookie : kSessionCookie;
  std::string cookie = std::string(cookie_name) + "=" + token +
                       "; Path=/; Max-Age=" + std::to_string(expires - now) +
                       "; HttpOnly; SameSite=Strict" + (secure ? "; Secure" : "");
  callbacks_->streamInfo().client_name = who->client_name;
  std::string out = "{\"authenticated\":true,\"client\":";
  log::appendJsonString(out, who->client_name);
  out += ",\"expires_at\":" + std::to_string(expires) + "}";
  http::sendJsonReply(*callbacks_, 200, std::move(out), {{"set-cookie", cookie}});
}

http::FilterFactory makeSessionFactory(AuthConfigSharedPtr config,
                                       ratelimit::RateLimitConfigSharedPtr limits,
                                       ratelimit::StateSharedPtr state) {
  return [config, limits, state](http::FilterChainBuilder& builder) {
    builder.addDecoderFilter(std::make_unique<SessionFilter>(config, limits, state));
  };
}

}  // namespace eldric::filters::auth
