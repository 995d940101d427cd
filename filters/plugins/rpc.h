#pragma once

// The Edge's side of the plugin protocol's wire format (PROTOCOL.md):
// newline-delimited JSON-RPC 2.0 read from a plugin process. Everything a
// plugin sends is untrusted: a line longer than the limit, bytes that are
// not JSON, or JSON that is not one of the messages below is a protocol
// error, and the caller replaces the process.

#include <rapidjson/document.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace eldric::filters::plugins {

// Splits a byte stream into lines of at most `max_line` bytes (without
// the newline). False once a line is longer: the stream is broken and the
// buffer stays poisoned.
class LineSplitter {
 public:
  explicit LineSplitter(size_t max_line) : max_line_(max_line) {}
  // Calls `line` for each complete line in order; stops early and returns
  // false if `line` returns false or a line is too long.
  bool feed(std::string_view bytes, const std::function<bool(std::string_view)>& line);
  size_t pending() const { return partial_.size(); }

 private:
  size_t max_line_;
  std::string partial_;
  bool broken_ = false;
};

// One message from a plugin process.
struct RpcMessage {
  enum class Kind { Response, Notification };
  Kind kind = Kind::Response;
  // Response: the call it answers.
  uint64_t id = 0;
  bool ok = false;
  // ok: the `result` member (any JSON value), inside `doc`.
  const rapidjson::Value* result = nullptr;
  // !ok: the error.
  int error_code = 0;
  std::string error_message;  // the plugin's words, bounded (kMaxErrorMessage)
  std::string error_type;     // data.type, e.g. "ValueError"
  std::string error_field;    // data.field (valves)
  // Notification: its method and params (an object, or null).
  std::string method;
  const rapidjson::Value* params = nullptr;
  rapidjson::Document doc;
};

// A plugin's error message is cut to this many bytes (it reaches the
// client and the log).
inline constexpr size_t kMaxErrorMessage = 1024;

// Parses one line. False with `*error` (naming what is wrong, never the
// line's content) when it is not a JSON-RPC 2.0 response or notification.
bool parseMessage(std::string_view line, RpcMessage* out, std::string* error);

}  // namespace eldric::filters::plugins
