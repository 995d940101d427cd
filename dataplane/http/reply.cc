#include "dataplane/http/reply.h"

namespace eldric::http {

void sendReply(DecoderFilterCallbacks& callbacks, int status, std::string_view content_type,
               std::string body,
               const std::vector<std::pair<std::string, std::string>>& extra_headers) {
  auto headers = std::make_unique<ResponseHeaders>();
  headers->status = status;
  headers->headers.add("content-type", content_type);
  headers->headers.add("cache-control", "no-store");
  headers->headers.add("content-length", std::to_string(body.size()));
  for (const auto& [name, value] : extra_headers) headers->headers.add(name, value);
  Buffer data;
  data.add(body);
  callbacks.encodeHeaders(std::move(headers), false);
  callbacks.encodeData(data, true);
}

}  // namespace eldric::http
