#include "dataplane/http/errors.h"

#include "common/log.h"

namespace eldric::http {

const char* defaultErrorType(int status) {
  switch (status) {
    case 401:
      return "authentication_error";
    case 403:
      return "permission_error";
    case 404:
      return "not_found_error";
    case 429:
      return "rate_limit_error";
    default:
      return status >= 500 ? "server_error" : "invalid_request_error";
  }
}

std::string errorBody(std::string_view message, std::string_view type, std::string_view code) {
  std::string out = "{\"error\":{\"message\":";
  log::appendJsonString(out, message);
  out += ",\"type\":";
  log::appendJsonString(out, type);
  out += ",\"param\":null,\"code\":";
  if (code.empty()) {
    out += "null";
  } else {
    log::appendJsonString(out, code);
  }
  out += "}}";
  return out;
}

std::string sseErrorEvent(std::string_view message, std::string_view type, std::string_view code) {
  return "event: error\ndata: " + errorBody(message, type, code) + "\n\n";
}

ErrorReply modelNotAllowed(std::string_view model) {
  return ErrorReply{403, "model \"" + std::string(model) + "\" is not allowed for this API key",
                    "permission_error", "model_not_allowed"};
}

}  // namespace eldric::http
