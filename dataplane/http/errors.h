#pragma once

// Every error a client sees is OpenAI-shaped JSON:
//   {"error":{"message":...,"type":...,"param":null,"code":...}}

#include <string>
#include <string_view>

namespace eldric::http {

struct ErrorReply {
  int status = 500;
  std::string message;
  // OpenAI's "type": invalid_request_error, authentication_error,
  // permission_error, not_found_error, rate_limit_error, server_error, ...
  std::string type;
  // A stable machine-readable code ("header_too_large", "upstream_unavailable").
  std::string code;
};

// The default OpenAI error type for a status.
const char* defaultErrorType(int status);
std::string errorBody(std::string_view message, std::string_view type, std::string_view code);
// An SSE event that carries the same error object, for streams that break
// after their headers went out.
// 403: a key limited to some models asked for another.
ErrorReply modelNotAllowed(std::string_view model);

std::string sseErrorEvent(std::string_view message, std::string_view type, std::string_view code);

}  // namespace eldric::http
