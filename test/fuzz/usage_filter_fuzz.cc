// The usage filter on untrusted bytes from both sides: a client's request
// body (model allow-list, stream_options rewritten), an upstream's SSE
// stream cut into pieces (event scanner, usage events parsed and maybe
// removed, the token cap) and a JSON response's tail (the usage parser).
// When nothing may change the stream (the client asked for usage, no cap),
// what comes out must be what went in.
//
// Input: [flags][cap][cut count][cut lengths...][bytes]
//   flags & 3: 0 = request body, 1 = SSE response, 2 = JSON response,
//              3 = request body then SSE response (the same bytes)

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "dataplane/http/route.h"
#include "filters/usage/usage_filter.h"
#include "test/fuzz/fuzz_util.h"
#include "test/unit/fake_stream.h"

static int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  uint8_t flags = in.byte();
  uint8_t cap = in.byte();
  std::string_view payload;
  std::vector<std::string_view> pieces = fuzz::splitStream(in, &payload);
  if (fuzz::skipKnownCrashes() && fuzz::jsonNesting(payload) > 200) return 0;
  // Fixed since (the filter's find() guards an empty view): an empty
  // request body reached memmem() with a null pointer
  // (corpus/usage_filter_fuzz/crash-empty-body-memmem-null, replayed).
  if (fuzz::skipKnownCrashes() && ((flags & 3) == 0 || (flags & 3) == 3) && payload.empty())
    return 0;

  auto cfg = std::make_shared<filters::ratelimit::RateLimitConfig>();
  cfg->max_tokens_per_request = (flags & 4) ? cap : 0;
  static auto state = std::make_shared<filters::ratelimit::State>(60);
  test::FakeStream stream;
  stream.matched_route.count_tokens = true;
  if (flags & 8) {
    auto id = std::make_shared<http::ClientIdentity>();
    id->client_id = "c1";
    id->client_name = "fuzz";
    id->allowed_models = {"m", "gpt-4o"};
    stream.info.identity = id;
    stream.info.client_name = "fuzz";
  }
  filters::usage::UsageFilter filter(cfg, state);
  filter.setDecoderFilterCallbacks(stream);
  filter.setEncoderFilterCallbacks(stream);
  filter.decodeHeaders(stream.request, false);

  int mode = flags & 3;
  // The request body: the filter buffers until the end, then looks.
  Buffer body;
  if (mode == 0 || mode == 3) {
    for (std::string_view piece : pieces) body.add(piece);
  } else {
    body.add((flags & 16) ? R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})"
                          : R"({"model":"m","stream":true})");
  }
  filter.decodeData(body, true);
  if (!stream.local_replies.empty()) {
    filter.onDestroy();
    return 0;
  }
  if (mode == 0) {
    filter.onDestroy();
    return 0;
  }

  http::ResponseHeaders rh;
  rh.status = 200;
  rh.headers.add("content-type", mode == 2 ? "application/json" : "text/event-stream");
  filter.encodeHeaders(rh, false);
  std::string out;
  bool stopped = false;
  for (size_t i = 0; i < pieces.size(); ++i) {
    Buffer b;
    b.add(pieces[i]);
    bool last = i + 1 == pieces.size();
    http::FilterDataStatus s = filter.encodeData(b, last);
    out += b.toString();
    if (s == http::FilterDataStatus::StopIterationNoBuffer) {
      stopped = true;
      break;
    }
  }
  if (pieces.empty()) {
    Buffer b;
    filter.encodeData(b, true);
  }
  // Nothing the filter may change: the stream passes byte for byte.
  bool untouched = (mode == 1 || mode == 2) && (flags & 16) && !(flags & 4) && !stopped;
  if (untouched && out != payload) {
    fprintf(stderr,
            "usage filter changed a stream it had no reason to touch: %zu bytes in, %zu out\n",
            payload.size(), out.size());
    abort();
  }
  filter.onDestroy();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // JSON is parsed recursively: on a small stack, nesting overflows it at
  // a depth the fuzzer reaches (see runOnSmallStack).
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
