// gRPC's length-prefixed messages as HTTP/2 DATA frames cut them: the
// Deframer fed in pieces cut where the input says must give exactly the
// messages (and the error) a straightforward reading of the whole stream
// gives, whatever the cuts.
//
// Input: [max size choice][cut count][cut lengths...][stream]

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dataplane/grpc/framing.h"
#include "test/fuzz/fuzz_util.h"

namespace {

using eldric::grpc::Deframer;

// The reference: the stream read front to back in one go.
struct Expected {
  std::vector<std::string> messages;
  Deframer::Result result = Deframer::Result::Ok;
  bool mid_message = false;
};

Expected reference(std::string_view s, size_t max) {
  Expected e;
  size_t at = 0;
  while (at < s.size()) {
    if (s.size() - at < 5) {
      e.mid_message = true;
      return e;
    }
    auto b = [&](size_t i) { return static_cast<uint8_t>(s[at + i]); };
    uint32_t len = (uint32_t{b(1)} << 24) | (uint32_t{b(2)} << 16) | (uint32_t{b(3)} << 8) | b(4);
    if (b(0) & 1) {
      e.result = Deframer::Result::Compressed;
      return e;
    }
    if (len > max) {
      e.result = Deframer::Result::TooLarge;
      return e;
    }
    if (s.size() - at - 5 < len) {
      e.mid_message = true;
      return e;
    }
    e.messages.emplace_back(s.substr(at + 5, len));
    at += 5 + len;
  }
  return e;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::InputReader in(data, size);
  uint8_t max_choice = in.byte();
  size_t max = max_choice & 0x80 ? (4u << 20) : max_choice;
  std::string_view payload;
  std::vector<std::string_view> pieces = eldric::fuzz::splitStream(in, &payload);
  Expected want = reference(payload, max);

  Deframer d(max);
  std::vector<std::string> got;
  Deframer::Result result = Deframer::Result::Ok;
  for (std::string_view piece : pieces) {
    result =
        d.feed(reinterpret_cast<const uint8_t*>(piece.data()), piece.size(), [&](std::string&& m) {
          got.push_back(std::move(m));
          return true;
        });
    if (result != Deframer::Result::Ok) break;
  }
  if (result != want.result || got != want.messages ||
      (result == Deframer::Result::Ok && d.midMessage() != want.mid_message)) {
    fprintf(stderr,
            "deframer: result %d (want %d), %zu messages (want %zu), mid-message %d (want %d)\n",
            static_cast<int>(result), static_cast<int>(want.result), got.size(),
            want.messages.size(), d.midMessage(), want.mid_message);
    abort();
  }
  // The prefix frames what it says.
  std::string prefix = eldric::grpc::framePrefix(static_cast<uint32_t>(payload.size()));
  Expected round = reference(prefix + std::string(payload), SIZE_MAX);
  if (round.messages.size() != 1 || round.messages[0] != payload) abort();
  return 0;
}
