#include "dataplane/http/sse.h"

#include <algorithm>
#include <cstring>

namespace eldric::http {

bool SseSplitter::feed(const Buffer& data,
                       const std::function<bool(std::string_view event)>& event) {
  if (spent_) return false;
  // Scanning restarts a few bytes back: a blank line may straddle slices.
  size_t scan = carry_.size() >= 3 ? carry_.size() - 3 : start_;
  if (scan < start_) scan = start_;
  for (size_t i = 0; i < data.sliceCount(); ++i) carry_.append(data.slice(i).view());
  while (true) {
    std::string_view s(carry_);
    size_t end = std::string_view::npos, len = 0;
    for (size_t at = scan; at < s.size();) {
      const void* q = memchr(s.data() + at, '\n', s.size() - at);
      if (!q) break;
      size_t nl = static_cast<size_t>(static_cast<const char*>(q) - s.data());
      if (nl + 1 < s.size() && s[nl + 1] == '\n') {
        end = nl;
        len = 2;
        break;
      }
      if (nl + 2 < s.size() && s[nl + 1] == '\r' && s[nl + 2] == '\n') {
        end = nl;
        len = 3;
        break;
      }
      at = nl + 1;
    }
    if (end == std::string_view::npos) break;
    if (end - start_ > max_event_bytes_) {
      // Bounded whatever the reads were: an event is refused by its size,
      // not by where the network cut the stream.
      spend();
      return false;
    }
    std::string_view ev = s.substr(start_, end + len - start_);
    start_ = end + len;
    scan = start_;
    if (!event(ev)) {
      spend();
      return false;
    }
  }
  if (start_ > 0 && (start_ == carry_.size() || start_ > 4096)) {
    carry_.erase(0, start_);
    start_ = 0;
  }
  if (carry_.size() - start_ > max_event_bytes_) {
    spend();
    return false;
  }
  return true;
}

namespace {

// A `data` field's line: its value ("data: x" gives "x", "data" gives "").
// False for a comment or another field.
bool dataLine(std::string_view line, std::string_view* value) {
  if (line != "data" && line.substr(0, 5) != "data:") return false;
  std::string_view v = line.substr(std::min<size_t>(5, line.size()));
  if (!v.empty() && v[0] == ' ') v.remove_prefix(1);
  *value = v;
  return true;
}

}  // namespace

SseEvent readSseEvent(std::string_view event) {
  SseEvent e;
  size_t i = 0;
  while (i < event.size()) {
    size_t end = event.find_first_of("\r\n", i);
    if (end == std::string_view::npos) end = event.size();
    std::string_view line = event.substr(i, end - i);
    i = end;
    if (i < event.size())
      i += event[i] == '\r' && i + 1 < event.size() && event[i + 1] == '\n' ? 2 : 1;
    if (line.empty()) continue;  // the blank line that ends it
    std::string_view v;
    if (dataLine(line, &v)) {
      if (e.has_data) e.data.push_back('\n');
      e.data.append(v);
      e.has_data = true;
    } else {
      e.other.append(line);
      e.other.push_back('\n');
    }
  }
  return e;
}

std::string_view sseData(std::string_view event) {
  while (!event.empty() && (event.back() == '\n' || event.back() == '\r')) event.remove_suffix(1);
  std::string_view v;
  if (!dataLine(event, &v)) return {};
  // A lone CR ends a line too: that is data over several lines.
  if (v.empty() || v.find_first_of("\r\n") != std::string_view::npos) return {};
  return v;
}

}  // namespace eldric::http
