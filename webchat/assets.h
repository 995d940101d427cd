// The web chat's files, embedded in the binary at build time (see
// webchat/BUILD.bazel and webchat/embed/embed.cc).
#pragma once
#include <string_view>
namespace eldric::webchat {
struct Asset {
  std::string_view path;          // "/chat", "/login", "/chat/assets/app.js", ...
  std::string_view content_type;  // "text/html; charset=utf-8", "text/javascript; charset=utf-8",
                                  // "text/css; charset=utf-8", "image/svg+xml"
  std::string_view body;          // raw bytes
  std::string_view gzip_body;     // gzip of body (empty if gzip does not make it smaller)
  std::string_view etag;          // "\"<16 hex of a hash of body>\"" with the quotes
  bool immutable;                 // true for hashed asset names that may be cached for a year
};
// The asset at `path`, or nullptr.
const Asset* find(std::string_view path);
}  // namespace eldric::webchat
