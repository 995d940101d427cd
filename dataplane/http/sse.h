#pragma once

// Server-sent events as an upstream streams them (text/event-stream): the
// response body cut into events at their blank line, whatever the TCP
// segments were. What a filter that reads each event of an OpenAI stream
// needs; the bytes are untrusted, so an event is bounded.

#include <cstddef>
#include <functional>
#include <string>
#include <string_view>

#include "dataplane/common/buffer.h"

namespace eldric::http {

class SseSplitter {
 public:
  explicit SseSplitter(size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

  // Appends `data` and calls `event` with each complete event, its blank
  // line included ("data: {...}\n\n"), in order. False when an event is
  // longer than the limit (its blank line aside; whole or still pending:
  // the splitter is then spent) or `event` returned false.
  bool feed(const Buffer& data, const std::function<bool(std::string_view event)>& event);
  // Bytes of an event not yet complete (an upstream that ended mid-event).
  // Empty once the splitter is spent.
  std::string_view pending() const { return std::string_view(carry_).substr(start_); }

 private:
  // Refuses everything from now on, and lets go of what it held.
  void spend() {
    spent_ = true;
    std::string().swap(carry_);
    start_ = 0;
  }
  size_t max_event_bytes_;
  std::string carry_;
  size_t start_ = 0;
  bool spent_ = false;
};

// An event as an SSE client reads it (the WHATWG event stream format):
// its `data` lines joined with "\n", and its other lines (comments,
// event:, id:, retry:) as they came, each ended by "\n". Lines end in
// "\r\n", "\n" or "\r".
struct SseEvent {
  bool has_data = false;
  std::string data;
  std::string other;
};
SseEvent readSseEvent(std::string_view event);

// The payload of an event that is one `data:` line ("data: {...}" gives
// "{...}", "data: [DONE]" gives "[DONE]"); empty for anything else
// (comments, named events, multi-line data, a lone CR inside).
std::string_view sseData(std::string_view event);

}  // namespace eldric::http
