#pragma once

// The request target as routes see it and routers receive it. A route
// matches on bytes, so two spellings of one path ("/v1/../api", "/v1/%2e%2e/
// api", "//api", "\api") must become one before matching, and the upstream
// must receive the spelling that was matched: no key may reach a path
// outside its routes by asking for it in another form.

#include <string>
#include <string_view>

namespace eldric::http {

enum class PathResult {
  Unchanged,   // already normal: nothing to copy
  Normalized,  // *out holds the normal form (with the query, if any)
  Invalid,     // refuse with 400; *reason says why
};

// RFC 3986 normalization of an origin-form target ("/a/b?q"): percent-
// encoded unreserved characters decoded (so "%2e" is a dot), remaining
// percent-encodings in upper case, "//" merged, "." and ".." segments
// removed. Refused: a ".." above the root, an encoded '/', '\' or NUL
// ("%2F", "%5C", "%00": an upstream that decodes them would see another
// path), a literal '\', '#', control and non-ASCII bytes, bad percent
// escapes. The query is kept as it is, but its bytes are checked too.
PathResult normalizePath(std::string_view target, std::string* out, const char** reason);

// True if `host` is a Host header value fit to build a URL from: a DNS
// name or IPv4 literal, or a bracketed IPv6 literal, with an optional
// port. Used before echoing it in a redirect's Location.
bool validHost(std::string_view host);

}  // namespace eldric::http
