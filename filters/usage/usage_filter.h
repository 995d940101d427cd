#pragma once

// Tokens counted inside the stream. On OpenAI chat and completion routes:
// - the request body is read whole: a key's allowed-models list is
//   enforced, and a streaming request that did not ask for usage gets
//   `stream_options.include_usage` so the upstream reports it;
// - each SSE event of the response is inspected as it passes: content
//   deltas count toward the key's tokens-per-window as they stream, the
//   upstream's final usage corrects the count, the usage event is removed
//   again if the client had not asked for it, and a response that passes
//   the per-request token cap is ended with an SSE error event.
// Non-streaming JSON responses are counted from their `usage` object.

#include <memory>
#include <string>

#include "dataplane/http/filter.h"
#include "filters/ratelimit/limiter.h"
#include "filters/ratelimit/ratelimit_filter.h"

namespace eldric::filters::usage {

// Tokens per client name, for /metrics (bounded by the client list).
struct UsageStats {
  std::mutex mutex;
  std::unordered_map<std::string, uint64_t> tokens_by_client;
  std::atomic<uint64_t> streams_cut{0};
  std::atomic<uint64_t> usage_injected{0};
  // Inference bodies refused because the Edge could not check them.
  std::atomic<uint64_t> bodies_refused{0};
  // Streams whose events grew past kMaxEventBytes (left uninspected).
  std::atomic<uint64_t> events_too_large{0};
};
UsageStats& stats();

class UsageFilter : public http::StreamDecoderFilter, public http::StreamEncoderFilter {
 public:
  UsageFilter(ratelimit::RateLimitConfigSharedPtr config, ratelimit::StateSharedPtr state)
      : config_(std::move(config)), state_(std::move(state)) {}

  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void setEncoderFilterCallbacks(http::EncoderFilterCallbacks& cb) override { encoder_ = &cb; }
  http::FilterHeadersStatus encodeHeaders(http::ResponseHeaders& headers, bool end_stream) override;
  http::FilterDataStatus encodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

 private:
  bool inspectRequest(Buffer& body);
  // Handles one complete SSE event; returns false to drop it.
  bool onEvent(std::string_view event);
  void countTokens(uint64_t n);
  void cutStream(Buffer& out);
  void countJsonUsage();

  ratelimit::RateLimitConfigSharedPtr config_;
  ratelimit::StateSharedPtr state_;
  http::DecoderFilterCallbacks* decoder_ = nullptr;
  http::EncoderFilterCallbacks* encoder_ = nullptr;
  // An SSE event larger than this (a 1 MiB line) ends inspection of the
  // stream instead of being held whole.
  static constexpr size_t kMaxEventBytes = 1 << 20;
  bool active_ = false;
  bool ask_usage_ = false;  // chat and completions: ask a stream for usage
  bool json_body_ = true;
  bool injected_usage_ = false;
  bool sse_ = false;
  bool json_ = false;
  bool cut_ = false;
  bool finished_ = false;
  std::string carry_;      // a partial SSE event between chunks
  std::string json_tail_;  // the last bytes of a JSON response
  uint64_t counted_ = 0;   // tokens already added to the key's window
  uint64_t reported_total_ = 0;
  uint64_t completion_estimate_ = 0;
  ratelimit::Entry* key_entry_ = nullptr;  // in the stream's filter state
};

http::FilterFactory makeFactory(ratelimit::RateLimitConfigSharedPtr config,
                                ratelimit::StateSharedPtr state);

}  // namespace eldric::filters::usage
