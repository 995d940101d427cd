#pragma once

// Header maps. Names are stored lowercased (HTTP/1 names are
// case-insensitive and HTTP/2 requires lowercase), in arrival order.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "dataplane/common/buffer.h"

namespace eldric::http {

class HeaderMap {
 public:
  using Entry = std::pair<std::string, std::string>;
  // `name` must already be lowercase.
  void add(std::string name, std::string value) { entries_.emplace_back(std::move(name), std::move(value)); }
  // Replaces every `name` with one entry.
  void set(std::string_view name, std::string value);
  void remove(std::string_view name);
  // The first value, or nullptr.
  const std::string* get(std::string_view name) const;
  size_t count(std::string_view name) const;
  size_t size() const { return entries_.size(); }
  void reserve(size_t n) { entries_.reserve(n); }
  const std::vector<Entry>& entries() const { return entries_; }
  std::vector<Entry>& mutableEntries() { return entries_; }

 private:
  std::vector<Entry> entries_;
};

struct RequestHeaders {
  std::string method;
  std::string path;  // the request-target as sent ("/v1/models?x=1")
  int version_minor = 1;  // HTTP/1.x
  HeaderMap headers;
  // Framing, as the codec decoded it.
  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool keep_alive = true;
  bool expect_continue = false;

  // The path without its query string.
  std::string_view pathOnly() const {
    size_t q = path.find('?');
    return q == std::string::npos ? std::string_view(path) : std::string_view(path).substr(0, q);
  }
};
using RequestHeadersPtr = std::unique_ptr<RequestHeaders>;

struct ResponseHeaders {
  int status = 200;
  HeaderMap headers;
};
using ResponseHeadersPtr = std::unique_ptr<ResponseHeaders>;

// Hop-by-hop headers (RFC 9110 7.6.1) that a proxy must not forward, plus
// the ones named in a Connection header.
void removeHopByHop(HeaderMap& headers);

const char* statusText(int status);

// Appends an HTTP/1 head to `out` as one slice: the `first` pieces (the
// start line), "name: value\r\n" for every entry, then the `last` pieces
// (extra lines and the blank line). Sizes are summed first and every byte
// is copied once, straight into the slab that goes to the wire.
void serializeHead(std::initializer_list<std::string_view> first, const HeaderMap& headers,
                   std::initializer_list<std::string_view> last, Buffer& out);

bool equalsIgnoreCase(std::string_view a, std::string_view b);
// True if the comma-separated `list` contains `token` (case-insensitive).
bool listHasToken(std::string_view list, std::string_view token);

}  // namespace eldric::http
