#include "dataplane/http/headers.h"

#include <algorithm>
#include <cctype>
#include <cstring>
#include <utility>

namespace eldric::http {

bool equalsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

bool listHasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (equalsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

HeaderMap& HeaderMap::operator=(const HeaderMap& other) {
  if (this == &other) return *this;
  entries_.clear();
  chunks_.clear();
  free_ = nullptr;
  free_len_ = 0;
  last_chunk_ = 0;
  for (const Entry& e : other.entries_) add(e.first, e.second);
  return *this;
}

HeaderMap& HeaderMap::operator=(HeaderMap&& other) noexcept {
  if (this == &other) return *this;
  entries_ = std::move(other.entries_);
  chunks_ = std::move(other.chunks_);
  free_ = std::exchange(other.free_, nullptr);
  free_len_ = std::exchange(other.free_len_, 0);
  last_chunk_ = std::exchange(other.last_chunk_, 0);
  other.entries_.clear();
  other.chunks_.clear();
  return *this;
}

std::string_view HeaderMap::store(std::string_view bytes) {
  if (bytes.empty()) return {};
  if (bytes.size() > free_len_) {
    // Chunks double, and are at least as large as what must fit.
    size_t n = std::max({kFirstChunk, last_chunk_ * 2, bytes.size()});
    chunks_.push_back(std::unique_ptr<char[]>(new char[n]));
    free_ = chunks_.back().get();
    free_len_ = n;
    last_chunk_ = n;
  }
  memcpy(free_, bytes.data(), bytes.size());
  std::string_view stored(free_, bytes.size());
  free_ += bytes.size();
  free_len_ -= bytes.size();
  return stored;
}

void HeaderMap::add(std::string_view name, std::string_view value) {
  // Store both before building the entry: `name` or `value` may view this
  // map's own arena (a copy of another entry).
  std::string_view n = store(name);
  std::string_view v = store(value);
  entries_.push_back(Entry{n, v});
}

void HeaderMap::set(std::string_view name, std::string_view value) {
  std::string_view n = store(name);
  std::string_view v = store(value);
  remove(n);
  entries_.push_back(Entry{n, v});
}

void HeaderMap::remove(std::string_view name) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) { return e.first == name; }),
                 entries_.end());
}

void HeaderMap::removeAll(std::initializer_list<std::string_view> names) {
  entries_.erase(std::remove_if(entries_.begin(), entries_.end(),
                                [&](const Entry& e) {
                                  for (std::string_view n : names) {
                                    if (e.first == n) return true;
                                  }
                                  return false;
                                }),
                 entries_.end());
}

std::optional<std::string_view> HeaderMap::get(std::string_view name) const {
  for (const Entry& e : entries_) {
    if (e.first == name) return e.second;
  }
  return std::nullopt;
}

size_t HeaderMap::count(std::string_view name) const {
  size_t n = 0;
  for (const Entry& e : entries_) n += e.first == name;
  return n;
}

namespace {

// RFC 9110 7.6.1's hop-by-hop headers (and the legacy ones a proxy must not
// forward either), decided by length first: this runs on every header of
// every request and response.
bool isHopByHopName(std::string_view n) {
  switch (n.size()) {
    case 2:
      return n == "te";
    case 7:
      return n == "trailer" || n == "upgrade";
    case 10:
      return n == "connection" || n == "keep-alive";
    case 16:
      return n == "proxy-connection";
    case 17:
      return n == "transfer-encoding";
    case 18:
      return n == "proxy-authenticate";
    case 19:
      return n == "proxy-authorization";
    default:
      return false;
  }
}

}  // namespace

void removeHopByHop(HeaderMap& headers) {
  // Most messages carry none: one cheap pass decides.
  bool any = false;
  bool has_connection = false;
  for (const auto& e : headers.entries()) {
    if (isHopByHopName(e.first)) {
      any = true;
      if (e.first == "connection") has_connection = true;
    }
  }
  if (!any) return;
  std::vector<std::string> named;
  if (has_connection) {
    for (const auto& e : headers.entries()) {
      if (e.first != "connection") continue;
      std::string_view list = e.second;
      while (!list.empty()) {
        size_t comma = list.find(',');
        std::string_view item = list.substr(0, comma);
        while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
        while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
        std::string lower(item);
        for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (!lower.empty()) named.push_back(lower);
        if (comma == std::string_view::npos) break;
        list.remove_prefix(comma + 1);
      }
    }
  }
  auto& v = headers.mutableEntries();
  v.erase(std::remove_if(v.begin(), v.end(),
                         [&](const HeaderMap::Entry& e) {
                           if (isHopByHopName(e.first)) return true;
                           for (const auto& n : named) {
                             if (e.first == n) return true;
                           }
                           return false;
                         }),
          v.end());
}

void serializeHead(std::initializer_list<std::string_view> first, const HeaderMap& headers,
                   std::initializer_list<std::string_view> last, Buffer& out) {
  size_t n = 0;
  for (std::string_view piece : first) n += piece.size();
  for (const auto& e : headers.entries()) n += e.first.size() + e.second.size() + 4;
  for (std::string_view piece : last) n += piece.size();
  if (n == 0) return;
  Slab* slab = Slab::create(n);
  char* p = slab->data();
  auto put = [&p](std::string_view piece) {
    // An empty value is a null view: memcpy from null is undefined even
    // for no bytes (UBSan).
    if (piece.empty()) return;
    memcpy(p, piece.data(), piece.size());
    p += piece.size();
  };
  for (std::string_view piece : first) put(piece);
  for (const auto& e : headers.entries()) {
    put(e.first);
    put(": ");
    put(e.second);
    put("\r\n");
  }
  for (std::string_view piece : last) put(piece);
  out.addSlice(SlabRef(slab), 0, static_cast<uint32_t>(n));
}

const char* statusText(int status) {
  switch (status) {
    case 100:
      return "Continue";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 303:
      return "See Other";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 409:
      return "Conflict";
    case 411:
      return "Length Required";
    case 413:
      return "Content Too Large";
    case 414:
      return "URI Too Long";
    case 415:
      return "Unsupported Media Type";
    case 417:
      return "Expectation Failed";
    case 422:
      return "Unprocessable Content";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace eldric::http
