#include "filters/usage/usage_filter.h"

#include <algorithm>
#include <cstring>

#include "common/json.h"
#include "common/log.h"
#include "dataplane/http/route.h"
#include "rapidjson/document.h"
#include "rapidjson/memorystream.h"
#include "rapidjson/reader.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace eldric::filters::usage {

namespace {

// The end of the next SSE event in `s` from `from` (where its blank line
// starts), or npos; `*sep` is the blank line's length: "\n\n" or
// "\r\n\r\n", whichever comes first. One memchr pass over the bytes.
size_t findEventEnd(std::string_view s, size_t from, size_t* sep) {
  while (from < s.size()) {
    const void* q = memchr(s.data() + from, '\n', s.size() - from);
    if (!q) return std::string_view::npos;
    size_t i = static_cast<size_t>(static_cast<const char*>(q) - s.data());
    if (i + 1 < s.size() && s[i + 1] == '\n') {
      *sep = 2;
      return i;
    }
    if (i >= 1 && s[i - 1] == '\r' && i + 2 < s.size() && s[i + 1] == '\r' && s[i + 2] == '\n') {
      *sep = 4;
      return i - 1;
    }
    from = i + 1;
  }
  return std::string_view::npos;
}

// Where `needle` first occurs in `hay`, or npos. glibc's memmem: a JSON
// event is full of '"', and string_view::find stops at every occurrence
// of the needle's first byte.
size_t findIn(std::string_view hay, std::string_view needle) {
  // An empty view may be null, and memmem(NULL, 0, ...) is undefined.
  if (hay.size() < needle.size() || needle.empty()) return std::string_view::npos;
  const void* p = memmem(hay.data(), hay.size(), needle.data(), needle.size());
  return p ? static_cast<size_t>(static_cast<const char*>(p) - hay.data()) : std::string_view::npos;
}

}  // namespace

UsageStats& stats() {
  static UsageStats* s = new UsageStats();
  return *s;
}

http::FilterHeadersStatus UsageFilter::decodeHeaders(http::RequestHeaders& headers,
                                                     bool end_stream) {
  const http::Route* route = decoder_->route();
  // Every proxied inference route: chat and completions, and also
  // embeddings, /v1/responses and the /v1/ catch-all (a trailing slash
  // lands there), so that no path reaches a model unchecked or uncounted.
  active_ = route && (route->count_tokens ||
                      (route->to_upstream && route->required_scope == edge::v1::SCOPE_INFERENCE));
  // A request with no body on another route (GET /v1/models) names no
  // model and uses no tokens: nothing to check or count.
  if (active_ && end_stream && !route->count_tokens) active_ = false;
  if (!active_) return http::FilterHeadersStatus::Continue;
  ask_usage_ = route->count_tokens;
  std::optional<std::string_view> ct = headers.headers.get("content-type");
  json_body_ = !ct || ct->find("json") != std::string_view::npos;
  http::StreamInfo& info = decoder_->streamInfo();
  if (const auto& id = info.identity) {
    key_entry_ = &ratelimit::streamCounters(info, ratelimit::kKeyCounters, state_->keys,
                                            id->client_id, ratelimit::nowSeconds());
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterDataStatus UsageFilter::decodeData(Buffer& data, bool end_stream) {
  if (!active_) return http::FilterDataStatus::Continue;
  if (!end_stream) return http::FilterDataStatus::StopIterationAndBuffer;
  if (!inspectRequest(data)) return http::FilterDataStatus::StopIterationNoBuffer;
  return http::FilterDataStatus::Continue;
}

bool UsageFilter::inspectRequest(Buffer& body) {
  const auto& who = decoder_->streamInfo().identity;
  bool check_model = who && !who->allowed_models.empty();
  // A key held to a token budget: its body must be one the Edge can read,
  // or the upstream could be asked for what the Edge never saw.
  bool limited =
      config_->max_tokens_per_request || config_->per_key_tokens || (who && who->tokens_per_window);
  if (body.empty()) return true;
  if (!json_body_) {
    if (!check_model) return true;
    // A multipart upload (audio) names its model where the Edge does not
    // look: with an allow-list, only JSON bodies pass.
    decoder_->sendLocalReply(
        http::ErrorReply{400, "this API key is limited to some models: send a JSON body",
                         "invalid_request_error", "unsupported_content_type"});
    return false;
  }
  // Looked at in place (a request body is almost always one slice), not
  // copied out.
  std::string_view text = body.linearize(body.length());
  // Parse only when there is something to do: a model allow-list, a token
  // budget, or a request that may stream (and so may need usage asked
  // for). A plain non-streaming request of a key without either passes
  // untouched and unparsed.
  if (!check_model && !limited && findIn(text, "stream") == std::string_view::npos) return true;
  rapidjson::Document doc;
  std::string jerr;
  if (!json::parse(doc, text, &jerr) || !doc.IsObject()) {
    // Refused rather than passed on unchecked: what the Edge cannot read,
    // an upstream might (a duplicate "model", nesting past the limit).
    stats().bodies_refused.fetch_add(1, std::memory_order_relaxed);
    decoder_->sendLocalReply(
        http::ErrorReply{400,
                         "request body is not a JSON object the Edge can check: " +
                             (jerr.empty() ? "not an object" : jerr),
                         "invalid_request_error", "invalid_json"});
    return false;
  }
  if (check_model) {
    const auto& id = who;
    std::string model;
    if (doc.HasMember("model") && doc["model"].IsString()) model = doc["model"].GetString();
    if (!id->allowsModel(model)) {
      decoder_->sendLocalReply(http::modelNotAllowed(model));
      return false;
    }
  }
  bool stream = doc.HasMember("stream") && doc["stream"].IsBool() && doc["stream"].GetBool();
  if (!stream || !ask_usage_) return true;
  auto& alloc = doc.GetAllocator();
  if (!doc.HasMember("stream_options") || !doc["stream_options"].IsObject()) {
    if (doc.HasMember("stream_options")) doc.RemoveMember("stream_options");
    doc.AddMember("stream_options", rapidjson::Value(rapidjson::kObjectType), alloc);
  }
  auto& opts = doc["stream_options"];
  bool asked = opts.HasMember("include_usage") && opts["include_usage"].IsBool() &&
               opts["include_usage"].GetBool();
  if (asked) return true;
  // Ask the upstream for usage; the client never sees the extra event.
  if (opts.HasMember("include_usage")) opts.RemoveMember("include_usage");
  opts.AddMember("include_usage", true, alloc);
  injected_usage_ = true;
  stats().usage_injected.fetch_add(1, std::memory_order_relaxed);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  doc.Accept(w);
  body.clear();
  body.add(std::string_view(sb.GetString(), sb.GetSize()));
  return true;
}

http::FilterHeadersStatus UsageFilter::encodeHeaders(http::ResponseHeaders& headers,
                                                     bool end_stream) {
  if (!active_ || end_stream) return http::FilterHeadersStatus::Continue;
  std::optional<std::string_view> ct = headers.headers.get("content-type");
  sse_ = ct && ct->compare(0, 17, "text/event-stream") == 0;
  json_ = !sse_ && ct && ct->find("json") != std::string::npos && headers.status == 200;
  // Removing an event changes the length; a capped stream may end early.
  if (sse_) headers.headers.remove("content-length");
  return http::FilterHeadersStatus::Continue;
}

void UsageFilter::countTokens(uint64_t n) {
  if (n == 0) return;
  counted_ += n;
  if (key_entry_) key_entry_->tokens.add(ratelimit::nowSeconds(), n);
}

bool UsageFilter::onEvent(std::string_view event) {
  // Only `data:` lines matter; an event may have several.
  size_t pos = findIn(event, "data:");
  if (pos == std::string_view::npos) return true;
  std::string_view data = event.substr(pos + 5);
  while (!data.empty() && data.front() == ' ') data.remove_prefix(1);
  if (data.compare(0, 6, "[DONE]") == 0) return true;
  if (findIn(data, "\"usage\"") != std::string_view::npos) {
    rapidjson::Document doc;
    if (json::parse(doc, data, nullptr) && doc.IsObject() && doc.HasMember("usage") &&
        doc["usage"].IsObject()) {
      const auto& u = doc["usage"];
      uint64_t total = u.HasMember("total_tokens") && u["total_tokens"].IsUint64()
                           ? u["total_tokens"].GetUint64()
                           : 0;
      if (total) {
        reported_total_ = total;
        // The report is the truth: top up what the estimate missed.
        if (total > counted_) countTokens(total - counted_);
        auto& info = decoder_->streamInfo();
        if (u.HasMember("prompt_tokens") && u["prompt_tokens"].IsUint64())
          info.prompt_tokens = u["prompt_tokens"].GetUint64();
        if (u.HasMember("completion_tokens") && u["completion_tokens"].IsUint64()) {
          info.completion_tokens = u["completion_tokens"].GetUint64();
        }
      }
      bool no_choices =
          !doc.HasMember("choices") || (doc["choices"].IsArray() && doc["choices"].Empty());
      if (injected_usage_ && no_choices) return false;  // the client did not ask for it
      return true;
    }
  }
  // A content delta is about one token: count it as it streams, so a key's
  // window fills while its stream runs.
  size_t c = findIn(data, "\"content\":\"");
  if (c != std::string_view::npos && c + 11 < data.size() && data[c + 11] != '"') {
    ++completion_estimate_;
    countTokens(1);
  }
  return true;
}

void UsageFilter::cutStream(Buffer& out) {
  cut_ = true;
  stats().streams_cut.fetch_add(1, std::memory_order_relaxed);
  state_->streams_cut.fetch_add(1, std::memory_order_relaxed);
  decoder_->streamInfo().error_code = "token_cap";
  out.add(http::sseErrorEvent("the response reached the per-request cap of " +
                                  std::to_string(config_->max_tokens_per_request) +
                                  " tokens and was ended",
                              "rate_limit_error", "max_tokens_per_request_exceeded"));
  out.add("data: [DONE]\n\n");
}

http::FilterDataStatus UsageFilter::encodeData(Buffer& data, bool end_stream) {
  if (!active_ || cut_) return http::FilterDataStatus::Continue;
  if (json_) {
    // Pass the body on as it comes; keep only its tail, where OpenAI-style
    // responses put "usage", and read the count from that at the end.
    // Only the bytes that can end up in the tail are copied.
    constexpr size_t kTail = 2048;
    size_t skip = data.length() > kTail ? data.length() - kTail : 0;
    for (size_t i = 0; i < data.sliceCount(); ++i) {
      std::string_view piece = data.slice(i).view();
      size_t drop = std::min(skip, piece.size());
      skip -= drop;
      json_tail_.append(piece.substr(drop));
    }
    if (json_tail_.size() > kTail) json_tail_.erase(0, json_tail_.size() - kTail);
    if (end_stream) countJsonUsage();
    return http::FilterDataStatus::Continue;
  }
  if (!sse_) return http::FilterDataStatus::Continue;
  // Split into whole events. The common case, a chunk of whole events in
  // one slice with nothing carried over, is scanned in place and passed on
  // untouched; bytes are copied only to carry a partial event to the next
  // chunk, to join a carried one, or once an event is dropped.
  std::string_view input;
  bool in_place = carry_.empty() && data.sliceCount() == 1;
  if (in_place) {
    input = data.slice(0).view();
  } else {
    for (size_t i = 0; i < data.sliceCount(); ++i) carry_.append(data.slice(i).view());
    input = carry_;
    size_t probe_sep = 0;
    if (carry_.size() > kMaxEventBytes &&
        findEventEnd(input, 0, &probe_sep) == std::string_view::npos) {
      // One event past the limit and still no end: stop inspecting this
      // stream (the bytes pass on as they are) rather than hold an
      // unbounded event here.
      sse_ = false;
      stats().events_too_large.fetch_add(1, std::memory_order_relaxed);
      data.clear();
      data.add(carry_);
      carry_.clear();
      return http::FilterDataStatus::Continue;
    }
  }
  Buffer out;            // what passes on, once it differs from a prefix of input
  bool rebuilt = false;  // out holds everything kept so far
  size_t start = 0;
  size_t sep = 0;
  for (size_t end; (end = findEventEnd(input, start, &sep)) != std::string_view::npos;) {
    std::string_view event = input.substr(start, end + sep - start);
    bool keep = onEvent(event);
    if (!keep && !rebuilt) {
      out.add(input.substr(0, start));
      rebuilt = true;
    } else if (keep && rebuilt) {
      out.add(event);
    }
    start = end + sep;
    uint64_t cap = config_->max_tokens_per_request;
    if (cap && completion_estimate_ > cap) {
      if (!rebuilt) out.add(input.substr(0, start));
      cutStream(out);
      carry_.clear();
      data.clear();
      data.move(out);
      // End the response here: the router's stream is reset when the
      // stream completes, which closes the upstream connection.
      encoder_->injectEncodedData(data, true);
      return http::FilterDataStatus::StopIterationNoBuffer;
    }
  }
  // A partial event at the end waits for the rest, unless the stream ends.
  std::string_view rest = input.substr(start);
  if (end_stream) {
    start = input.size();
    if (rebuilt) out.add(rest);
    rest = {};
  }
  if (in_place && !rebuilt) {
    if (!rest.empty()) {
      carry_.assign(rest);
      Buffer whole;
      whole.move(data, start);  // by reference
      data.clear();
      data.move(whole);
    }
    return http::FilterDataStatus::Continue;
  }
  if (!rebuilt) out.add(input.substr(0, start));
  // `rest` may view carry_ itself.
  std::string tail(rest);
  carry_.swap(tail);
  data.clear();
  data.move(out);
  return http::FilterDataStatus::Continue;
}

namespace {

// Reads "total_tokens" of a usage object as rapidjson's SAX events pass:
// no document is built. Like the DOM's lookup, the first such key at the
// object's top level wins, and only a non-negative integer counts.
struct UsageTotalHandler : rapidjson::BaseReaderHandler<rapidjson::UTF8<>, UsageTotalHandler> {
  int depth = 0;
  bool want = false;
  bool found = false;
  uint64_t total = 0;
  bool Default() {
    want = false;
    return true;
  }
  bool Uint(unsigned u) { return Uint64(u); }
  bool Uint64(uint64_t u) {
    if (want && !found) {
      found = true;
      total = u;
    }
    want = false;
    return true;
  }
  bool Key(const char* s, rapidjson::SizeType len, bool) {
    want = depth == 1 && len == 12 && memcmp(s, "total_tokens", 12) == 0;
    return true;
  }
  bool StartObject() {
    ++depth;
    want = false;
    return true;
  }
  bool EndObject(rapidjson::SizeType) {
    --depth;
    return true;
  }
  bool StartArray() {
    ++depth;
    want = false;
    return true;
  }
  bool EndArray(rapidjson::SizeType) {
    --depth;
    return true;
  }
};

// The last `"usage"` in `s`, or npos.
size_t findLastUsageKey(const std::string& s) {
  static constexpr std::string_view kKey = "\"usage\"";
  size_t end = s.size();
  while (end > 0) {
    const void* q = memrchr(s.data(), '"', end);
    if (!q) break;
    size_t at = static_cast<size_t>(static_cast<const char*>(q) - s.data());
    if (s.size() - at >= kKey.size() && memcmp(s.data() + at, kKey.data(), kKey.size()) == 0)
      return at;
    end = at;
  }
  return std::string::npos;
}

}  // namespace

void UsageFilter::countJsonUsage() {
  size_t at = findLastUsageKey(json_tail_);
  if (at == std::string::npos) return;
  size_t open = json_tail_.find('{', at);
  if (open == std::string::npos) return;
  // The usage object is flat ({"prompt_tokens":..,"completion_tokens":..}),
  // possibly with nested detail objects: match braces to its end.
  int depth = 0;
  size_t end = open;
  for (; end < json_tail_.size(); ++end) {
    if (json_tail_[end] == '{') ++depth;
    if (json_tail_[end] == '}' && --depth == 0) break;
  }
  if (depth != 0) return;
  // Parsed with SAX and a reader stack on the stack: rapidjson's default
  // document takes a 64 KB chunk from malloc, and freeing it made glibc
  // consolidate its fastbins on every response.
  char stack_buf[512];
  rapidjson::MemoryPoolAllocator<> stack_alloc(stack_buf, sizeof stack_buf);
  rapidjson::GenericReader<rapidjson::UTF8<>, rapidjson::UTF8<>, rapidjson::MemoryPoolAllocator<>>
      reader(&stack_alloc, 256);
  rapidjson::MemoryStream ms(json_tail_.data() + open, end - open + 1);
  UsageTotalHandler h;
  // Whole-object validity as before: a parse error counts nothing.
  if (reader.Parse<rapidjson::kParseIterativeFlag>(ms, h).IsError() || !h.found) return;
  reported_total_ = h.total;
  countTokens(reported_total_);
}

void UsageFilter::onDestroy() {
  if (!active_ || finished_) return;
  finished_ = true;
  auto& info = decoder_->streamInfo();
  if (counted_ && !info.client_name.empty()) {
    auto& s = stats();
    std::lock_guard<std::mutex> lock(s.mutex);
    s.tokens_by_client[info.client_name] += counted_;
  }
}

http::FilterFactory makeFactory(ratelimit::RateLimitConfigSharedPtr config,
                                ratelimit::StateSharedPtr state) {
  return [config, state](http::FilterChainBuilder& builder) {
    auto f = std::make_shared<UsageFilter>(config, state);
    builder.addStreamFilter(f, f);
  };
}

}  // namespace eldric::filters::usage
