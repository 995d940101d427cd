#pragma once

// The web chat's session endpoint, /api/v1/session (a terminal handler,
// registered as config::kSessionFilter):
//   GET     who am I: {"authenticated", "auth_required", "client"}
//   POST    log in with {"api_key": "sk-..."}: sets the session cookie
//   DELETE  log out: clears the cookie and refuses its token from now on
// The auth filter before it has already authenticated the request (by a
// key or by the cookie) and left the verified session on the stream
// (kVerifiedSession); this handler only answers.

#include <string>

#include "dataplane/http/filter.h"
#include "filters/auth/auth_filter.h"
#include "filters/auth/key_attempts.h"

namespace eldric::filters::auth {

class SessionFilter : public http::StreamDecoderFilter {
 public:
  SessionFilter(AuthConfigSharedPtr config, ratelimit::RateLimitConfigSharedPtr limits,
                ratelimit::StateSharedPtr state)
      : config_(std::move(config)), attempts_(std::move(limits), std::move(state)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;

 private:
  void answer(const std::string& body);
  void login(const std::string& body, bool secure, const std::string& clear_cookie);
  // The scheme the client used: TLS here, or X-Forwarded-Proto: https
  // from a trusted proxy.
  bool clientUsesHttps(const http::RequestHeaders& req);

  AuthConfigSharedPtr config_;
  KeyAttempts attempts_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

http::FilterFactory makeSessionFactory(AuthConfigSharedPtr config,
                                       ratelimit::RateLimitConfigSharedPtr limits,
                                       ratelimit::StateSharedPtr state);

}  // namespace eldric::filters::auth
