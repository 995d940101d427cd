#include "dataplane/http/path.h"

#include <cstring>

#include "common/hex.h"

namespace eldric::http {
namespace {

bool unreserved(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// A byte that may stand in a target as it is: visible ASCII but '\' and '#'.
bool plainByte(unsigned char c) { return c > 0x20 && c < 0x7f && c != '\\' && c != '#'; }

}  // namespace

PathResult normalizePath(std::string_view target, std::string* out, const char** reason) {
  size_t q = target.find('?');
  std::string_view path = target.substr(0, q);
  std::string_view query = q == std::string_view::npos ? std::string_view() : target.substr(q);
  for (unsigned char c : query) {
    if (!plainByte(c)) {
      *reason = "request target holds a control, non-ASCII, '\\' or '#' byte";
      return PathResult::Invalid;
    }
  }
  if (path.empty() || path[0] != '/') {
    *reason = "request target must be an absolute path";
    return PathResult::Invalid;
  }
  // Fast path: nothing to decode, no "//", no dot segment.
  bool simple = true;
  for (size_t i = 0; i < path.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(path[i]);
    if (!plainByte(c)) {
      *reason = "request target holds a control, non-ASCII, '\\' or '#' byte";
      return PathResult::Invalid;
    }
    if (c == '%') simple = false;
    if (c == '/' && i + 1 < path.size() && (path[i + 1] == '/' || path[i + 1] == '.'))
      simple = false;
  }
  if (simple) return PathResult::Unchanged;

  // Decode what may be decoded; keep the rest encoded (upper-case hex).
  std::string decoded;
  decoded.reserve(path.size());
  for (size_t i = 0; i < path.size(); ++i) {
    char c = path[i];
    if (c != '%') {
      decoded += c;
      continue;
    }
    int hi = i + 2 < path.size() ? hexDigitValue(path[i + 1]) : -1;
    int lo = hi >= 0 ? hexDigitValue(path[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      *reason = "request target has a malformed percent escape";
      return PathResult::Invalid;
    }
    unsigned char v = static_cast<unsigned char>(hi * 16 + lo);
    if (v == '/' || v == '\\' || v == 0) {
      *reason = "request target encodes '/', '\\' or NUL";
      return PathResult::Invalid;
    }
    if (unreserved(v)) {
      decoded += static_cast<char>(v);
    } else {
      decoded += '%';
      decoded += "0123456789ABCDEF"[v >> 4];
      decoded += "0123456789ABCDEF"[v & 15];
    }
    i += 2;
  }

  // Segments: "" (from "//") and "." dropped, ".." drops the one before;
  // when the last segment is one of those, the result ends with '/'.
  std::string result;
  result.reserve(decoded.size());
  bool trailing_slash = false;
  size_t pos = 1;  // after the leading '/'
  for (;;) {
    size_t slash = decoded.find('/', pos);
    size_t end = slash == std::string::npos ? decoded.size() : slash;
    std::string_view seg(decoded.data() + pos, end - pos);
    trailing_slash = false;
    if (seg.empty() || seg == ".") {
      trailing_slash = true;
    } else if (seg == "..") {
      if (result.empty()) {
        *reason = "request target climbs above the root";
        return PathResult::Invalid;
      }
      result.resize(result.rfind('/'));
      trailing_slash = true;
    } else {
      result += '/';
      result.append(seg);
    }
    if (slash == std::string::npos) break;
    pos = end + 1;
  }
  if (result.empty() || trailing_slash) result += '/';
  result.append(query);
  if (result == target) return PathResult::Unchanged;
  *out = std::move(result);
  return PathResult::Normalized;
}

bool validHost(std::string_view host) {
  if (host.empty() || host.size() > 255) return false;
  std::string_view name = host;
  std::string_view port;
  if (host[0] == '[') {
    size_t close = host.find(']');
    if (close == std::string_view::npos) return false;
    for (char c : host.substr(1, close - 1)) {
      if (!(hexDigitValue(c) >= 0 || c == ':' || c == '.')) return false;
    }
    if (close == 1) return false;
    std::string_view rest = host.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') return false;
      port = rest.substr(1);
      if (port.empty()) return false;
    }
  } else {
    size_t colon = host.find(':');
    if (colon != std::string_view::npos) {
      name = host.substr(0, colon);
      port = host.substr(colon + 1);
      if (port.empty()) return false;
    }
    if (name.empty()) return false;
    for (char c : name) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '.';
      if (!ok) return false;
    }
  }
  if (port.size() > 5) return false;
  for (char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

}  // namespace eldric::http
