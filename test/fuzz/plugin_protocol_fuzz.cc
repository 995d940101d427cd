// What a plugin process sends the Edge, and what it says about its valves:
// - its protocol stream cut into pieces: the line splitter must give the
//   same lines whatever the cuts (and refuse a line over the limit
//   whatever the cuts), and every line must parse or be refused without
//   a crash;
// - a valves schema (plugin code writes it) against a valves body (an
//   operator's PUT): checked without a crash, a deep recursion or a
//   message that quotes a value.
//
// Input: [mode][max line choice][cut count][cut lengths...][bytes]
//   mode & 1: protocol stream; else schema '\0' valves

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "filters/plugins/rpc.h"
#include "filters/plugins/valves.h"
#include "test/fuzz/fuzz_util.h"

namespace {

using eldric::filters::plugins::LineSplitter;

// Lines of `stream` as a plain reading gives them; false once one is
// longer than `max` (the rest unread).
bool reference(std::string_view stream, size_t max, std::vector<std::string>* lines) {
  while (true) {
    size_t nl = stream.find('\n');
    if (nl == std::string_view::npos) return stream.size() <= max;
    if (nl > max) return false;
    lines->emplace_back(stream.substr(0, nl));
    stream.remove_prefix(nl + 1);
  }
}

int fuzzOne(const uint8_t* data, size_t size) {
  eldric::fuzz::InputReader in(data, size);
  uint8_t mode = in.byte();
  size_t max = 1 + in.byte() * 4;
  std::string_view payload;
  std::vector<std::string_view> pieces = eldric::fuzz::splitStream(in, &payload);
  if (mode & 1) {
    std::vector<std::string> want;
    bool want_ok = reference(payload, max, &want);
    LineSplitter split(max);
    std::vector<std::string> got;
    bool ok = true;
    for (std::string_view piece : pieces) {
      ok = split.feed(piece, [&](std::string_view line) {
        got.emplace_back(line);
        eldric::filters::plugins::RpcMessage msg;
        std::string why;
        if (!eldric::filters::plugins::parseMessage(line, &msg, &why)) {
          if (why.empty()) abort();  // a refusal always says why
        } else if (msg.kind == eldric::filters::plugins::RpcMessage::Kind::Response && !msg.ok &&
                   msg.error_message.size() > eldric::filters::plugins::kMaxErrorMessage) {
          abort();
        }
        return true;
      });
      if (!ok) break;
    }
    if (ok != want_ok || got != want) {
      fprintf(stderr, "splitter: ok %d (want %d), %zu lines (want %zu)\n", ok, want_ok, got.size(),
              want.size());
      abort();
    }
    return 0;
  }
  size_t zero = payload.find('\0');
  std::string_view schema = payload.substr(0, zero);
  std::string_view valves = zero == std::string_view::npos ? "{}" : payload.substr(zero + 1);
  std::string error, field;
  if (!eldric::filters::plugins::validateValves(schema, valves, &error, &field) && error.empty()) {
    abort();
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
