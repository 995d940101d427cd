#pragma once

// Helpers the harnesses share: turning one fuzz input into a choice of
// options and a byte stream cut into pieces.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace eldric::fuzz {

// Consumes the input from the front: small integers for options, then
// the rest as the payload.
class InputReader {
 public:
  InputReader(const uint8_t* data, size_t size)
      : p_(reinterpret_cast<const char*>(data)), n_(size) {}
  uint8_t byte() {
    if (n_ == 0) return 0;
    --n_;
    return static_cast<uint8_t>(*p_++);
  }
  bool boolean() { return byte() & 1; }
  std::string_view rest() {
    std::string_view r(p_, n_);
    p_ += n_;
    n_ = 0;
    return r;
  }
  size_t remaining() const { return n_; }

 private:
  const char* p_;
  size_t n_;
};

// Cuts `payload` into pieces: the first byte of the input says how many
// cut points (0-15), each following byte where (as a length, 1-256). The
// input's structure, not its content, decides where a stream breaks.
inline std::vector<std::string_view> splitStream(InputReader& in,
                                                 std::string_view* payload_out = nullptr) {
  size_t cuts = in.byte() % 16;
  std::vector<size_t> lengths;
  for (size_t i = 0; i < cuts; ++i) lengths.push_back(size_t{in.byte()} + 1);
  std::string_view payload = in.rest();
  if (payload_out) *payload_out = payload;
  std::vector<std::string_view> pieces;
  size_t at = 0;
  for (size_t len : lengths) {
    if (at >= payload.size()) break;
    size_t n = std::min(len, payload.size() - at);
    pieces.push_back(payload.substr(at, n));
    at += n;
  }
  if (at < payload.size()) pieces.push_back(payload.substr(at));
  return pieces;
}

}  // namespace eldric::fuzz

namespace eldric::fuzz {

// ELDRIC_FUZZ_SKIP_KNOWN=1 in the environment: harnesses pass over inputs
// that only reach a crash already known and being fixed (trailers in the
// HTTP/1 codecs, JSON nested deep enough to overflow the stack), so that a
// long run can find something else meanwhile. Off by default: the
// committed harnesses exercise the real parse paths.
bool skipKnownCrashes();

// The deepest nesting of '[' and '{' in `text`, counting brackets inside
// strings too (an overestimate, which is what a skip wants).
size_t jsonNesting(std::string_view text);

// Whether llhttp, reading `text` as requests (or responses) one after
// another, meets a trailer field: a header field after a message's
// headers were complete.
bool llhttpSeesTrailers(std::string_view text, bool requests);

}  // namespace eldric::fuzz

#include <functional>

namespace eldric::fuzz {

// Runs `fn` on a thread with a small stack (ELDRIC_FUZZ_STACK_KB, default
// 128) and waits for it. The JSON harnesses parse on it: recursion that
// grows with the input (nested JSON) then overflows at a depth the
// fuzzer's -max_len can reach (some 3,000 levels of '['), rather than only
// past the 8 MB of a real worker thread (some 200,000 levels under ASan).
// Anything that needs the stack in proportion to its input shows up so.
void runOnSmallStack(const std::function<void()>& fn);

}  // namespace eldric::fuzz
