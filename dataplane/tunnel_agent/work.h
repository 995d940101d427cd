#pragma once

// What a poll of the Edge hands the agent: one request to run against the
// local server. The Edge is the peer here, but its answer is still parsed
// as untrusted bytes (test/fuzz/tunnel_work_fuzz): every field is bounded
// and must be safe to put on an HTTP/1.1 request line or header.

#include <string>
#include <string_view>

namespace eldric::tunnel_agent {

struct Work {
  std::string id;  // the Edge's request id, echoed in the response URL
  std::string method;
  std::string path;  // origin-form, "/v1/chat/completions"
  std::string content_type;
  std::string accept;  // may be empty
  std::string body;
};

// The largest poll answer the agent reads (a request body and its JSON).
inline constexpr size_t kMaxWorkBytes = 64u << 20;

// An id the Edge made (a tunnel's, a request's): letters, digits and '-',
// safe in a URL path segment.
bool isId(std::string_view id);

// Parses a poll's 200 body. False with `*error` (no request bytes quoted).
bool parseWork(std::string_view json, Work* out, std::string* error);

}  // namespace eldric::tunnel_agent
