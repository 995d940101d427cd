#pragma once

// A whole answer from a handler in one call: status, content type, body,
// and headers a caller adds (Set-Cookie, Allow). Never cached by the
// client (Cache-Control: no-store): the Edge's own answers are about the
// caller (keys, usage, health) or change at once.

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/http/filter.h"

namespace eldric::http {

void sendReply(DecoderFilterCallbacks& callbacks, int status, std::string_view content_type,
               std::string body,
               const std::vector<std::pair<std::string, std::string>>& extra_headers = {});

inline void sendJsonReply(
    DecoderFilterCallbacks& callbacks, int status, std::string body,
    const std::vector<std::pair<std::string, std::string>>& extra_headers = {}) {
  sendReply(callbacks, status, "application/json", std::move(body), extra_headers);
}

}  // namespace eldric::http
