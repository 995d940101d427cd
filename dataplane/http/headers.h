#pragma once

// Header maps. Names are stored lowercased (HTTP/1 names are
// case-insensitive and HTTP/2 requires lowercase), in arrival order, with
// their values in one per-map arena.

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "dataplane/common/buffer.h"

namespace eldric::http {

class HeaderMap {
 public:
  // Views into the map's own arena: a name and its value.
  struct Entry {
    std::string_view first;
    std::string_view second;
  };
  using Entries = absl::InlinedVector<Entry, 16>;

  HeaderMap() = default;
  HeaderMap(const HeaderMap& other) { *this = other; }
  HeaderMap& operator=(const HeaderMap& other);
  // The arena's chunks live on the heap, so views stay valid on a move.
  // The map moved from is left empty (no free space pointing into a chunk
  // it no longer owns).
  HeaderMap(HeaderMap&& other) noexcept { *this = std::move(other); }
  HeaderMap& operator=(HeaderMap&& other) noexcept;

  // Copies `name` (already lowercase) and `value` into the arena.
  void add(std::string_view name, std::string_view value);
  // Replaces every `name` with one entry.
  void set(std::string_view name, std::string_view value);
  void remove(std::string_view name);
  // Removes every entry named any of `names` (lowercase), in one pass.
  void removeAll(std::initializer_list<std::string_view> names);
  // The first value (valid until the map changes), or nullopt.
  std::optional<std::string_view> get(std::string_view name) const;
  size_t count(std::string_view name) const;
  size_t size() const { return entries_.size(); }
  const Entries& entries() const { return entries_; }
  // Entries may be removed or reordered; their views stay valid.
  Entries& mutableEntries() { return entries_; }

 private:
  std::string_view store(std::string_view bytes);
  // Every name and value is copied here: one chunk holds a typical
  // message's headers, so a request's headers cost one allocation instead
  // of a string (or two) per header. Bytes of removed entries stay until
  // the map is destroyed.
  static constexpr size_t kFirstChunk = 1024;
  Entries entries_;
  absl::InlinedVector<std::unique_ptr<char[]>, 2> chunks_;
  char* free_ = nullptr;
  size_t free_len_ = 0;
  size_t last_chunk_ = 0;
};

struct RequestHeaders {
  std::string method;
  std::string path;       // the request-target as sent ("/v1/models?x=1")
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
// RFC 9110 token characters: what a header or trailer name may hold. A
// table, inline: the codecs check every byte of every name.
struct TokenTable {
  bool ok[256] = {};
  constexpr TokenTable() {
    for (int c = 'a'; c <= 'z'; ++c) ok[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) ok[c] = true;
    for (int c = '0'; c <= '9'; ++c) ok[c] = true;
    for (char c : {'!', '#', '$', '%', '&', '\'', '*', '+', '-', '.', '^', '_', '`', '|', '~'}) {
      ok[static_cast<unsigned char>(c)] = true;
    }
  }
};
inline constexpr TokenTable kTokenTable;
inline bool isTokenChar(unsigned char c) { return kTokenTable.ok[c]; }
// True if `name` is a non-empty token.
inline bool isToken(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name) {
    if (!isTokenChar(static_cast<unsigned char>(c))) return false;
  }
  return true;
}
// True if the comma-separated `list` contains `token` (case-insensitive).
bool listHasToken(std::string_view list, std::string_view token);

}  // namespace eldric::http
