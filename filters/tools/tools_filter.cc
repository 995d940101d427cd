#include "filters/tools/tools_filter.h"

#include <algorithm>
#include <utility>

#include "common/json.h"
#include "common/log.h"
#include "dataplane/http/errors.h"
#include "dataplane/http/route.h"

namespace eldric::filters::tools {

namespace {

using json::serialize;

// The longest prefix of `s` of at most `max` bytes that ends on a UTF-8
// character boundary.
size_t utf8Prefix(std::string_view s, size_t max) {
  if (s.size() <= max) return s.size();
  size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return n;
}

uint64_t uintOr0(const rapidjson::Value* v) { return v && v->IsUint64() ? v->GetUint64() : 0; }

// Adds the earlier rounds' tokens to a `usage` object.
void sumUsage(rapidjson::Value& usage, uint64_t prompt, uint64_t completion,
              rapidjson::Document::AllocatorType& alloc) {
  if (!usage.IsObject() || (prompt == 0 && completion == 0)) return;
  auto add = [&](const char* name, uint64_t n) {
    rapidjson::Value* v = member(usage, name);
    if (v && v->IsUint64()) {
      v->SetUint64(v->GetUint64() + n);
    } else if (!v) {
      usage.AddMember(rapidjson::StringRef(name), rapidjson::Value(n), alloc);
    }
  };
  add("prompt_tokens", prompt);
  add("completion_tokens", completion);
  add("total_tokens", prompt + completion);
}

// Renumbers (or leaves out) the entries of a `tool_calls` array by the
// call each is part of. Whole answers: the entry's position. Streamed
// pieces: as ToolCallAssembler reads them, an integer `index` names its
// call and an entry without one (or with null) is the next call;
// `*calls_seen` is the assembler's count of calls so far, advanced here
// chunk by chunk. An entry whose call is outside the map, or whose index
// is of another type (the assembler refuses those), is kept as it is.
// Returns how many entries are left.
size_t remapToolCalls(rapidjson::Value& calls, const std::vector<int>& index_map,
                      size_t* calls_seen) {
  if (!calls.IsArray()) return 0;
  rapidjson::Value::ValueIterator it = calls.Begin();
  size_t position = 0;
  while (it != calls.End()) {
    rapidjson::Value* idx = member(*it, "index");
    uint64_t call = position++;
    if (calls_seen) {
      if (idx && idx->IsUint64()) {
        call = idx->GetUint64();
      } else if (!idx || idx->IsNull()) {
        call = *calls_seen;
      } else {
        ++it;
        continue;
      }
      if (call >= *calls_seen) *calls_seen = call + 1;
    }
    if (call >= index_map.size()) {
      ++it;
      continue;
    }
    int mapped = index_map[call];
    if (mapped < 0) {
      it = calls.Erase(it);
      continue;
    }
    if (idx && idx->IsUint64()) idx->SetUint64(static_cast<uint64_t>(mapped));
    ++it;
  }
  return calls.Size();
}

}  // namespace

bool rewriteChunk(rapidjson::Document& chunk, ChunkRewrite& rw) {
  // An error event goes as it is (the assembler never read it either).
  if (!chunk.IsObject() || member(chunk, "error")) return true;
  auto& alloc = chunk.GetAllocator();
  if (!rw.id.empty()) {
    if (rapidjson::Value* id = member(chunk, "id"); id && id->IsString())
      id->SetString(rw.id.data(), static_cast<rapidjson::SizeType>(rw.id.size()), alloc);
  }
  if (rapidjson::Value* usage = member(chunk, "usage"))
    sumUsage(*usage, rw.prompt_tokens, rw.completion_tokens, alloc);
  rapidjson::Value* choice = firstChoice(chunk);
  if (!choice) return true;
  rapidjson::Value* delta = member(*choice, "delta");
  if (!delta || !delta->IsObject()) return true;
  rapidjson::Value* calls = member(*delta, "tool_calls");
  if (!calls || !calls->IsArray()) return true;
  if (remapToolCalls(*calls, rw.index_map, &rw.calls_seen) > 0) return true;
  delta->RemoveMember("tool_calls");
  // Nothing but left-out calls: not worth a chunk.
  rapidjson::Value* reason = member(*choice, "finish_reason");
  bool ends = reason && !reason->IsNull();
  return ends || delta->MemberCount() > 0 || member(chunk, "usage");
}

std::string functionName(std::string_view plugin_id, std::string_view method) {
  std::string out;
  out.reserve(plugin_id.size() + 2 + method.size());
  auto put = [&out](std::string_view s) {
    for (char c : s) {
      bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '_' || c == '-';
      out += ok ? c : '_';
    }
  };
  put(plugin_id);
  out += "__";
  put(method);
  if (out.size() > 64) out.resize(64);
  return out;
}

ToolsFilter::~ToolsFilter() { onDestroy(); }

void ToolsFilter::onDestroy() {
  finished_ = true;
  if (next_round_) next_round_->disable();
  retireRound();
  for (auto& run : runs_) {
    if (run->done || !run->process) continue;
    plugins::PluginProcess* p = run->process;
    run->process = nullptr;
    run->done = true;
    run->spec->status->in_flight.fetch_sub(1, std::memory_order_relaxed);
    p->cancel(run->call_id);
  }
}

// ---------------------------------------------------------------------------
// The request

http::FilterHeadersStatus ToolsFilter::decodeHeaders(http::RequestHeaders& headers,
                                                     bool end_stream) {
  const http::Route* route = decoder_->route();
  if (!host_ || end_stream || !host_->hasTools() || !route || route->name != "chat_completions" ||
      !route->to_upstream || route->filter_chain.empty()) {
    return http::FilterHeadersStatus::Continue;
  }
  request_headers_ = &headers;
  return http::FilterHeadersStatus::StopAllIterationAndBuffer;
}

http::FilterDataStatus ToolsFilter::decodeData(Buffer& data, bool end_stream) {
  if (!request_headers_ || active_ || !end_stream) return http::FilterDataStatus::Continue;
  std::string text = data.toString();
  std::string why;
  // A body the Edge cannot read goes on as it is: the upstream answers it.
  if (!json::parse(request_, text, &why) || !request_.IsObject())
    return http::FilterDataStatus::Continue;
  const rapidjson::Value* model = member(request_, "model");
  const rapidjson::Value* messages = member(request_, "messages");
  if (!model || !model->IsString() || !messages || !messages->IsArray())
    return http::FilterDataStatus::Continue;
  model_.assign(model->GetString(), model->GetStringLength());
  // A client that rules tools out gets none of the Edge's either.
  if (const rapidjson::Value* choice = member(request_, "tool_choice");
      choice && choice->IsString() && std::string_view(choice->GetString()) == "none") {
    return http::FilterDataStatus::Continue;
  }
  rapidjson::Value* tools = member(request_, "tools");
  if (tools && !tools->IsArray()) return http::FilterDataStatus::Continue;
  // The client's own tools, by name: theirs win a clash.
  std::vector<std::string_view> client_names;
  if (tools) {
    for (const auto& t : tools->GetArray()) {
      const rapidjson::Value* fn = member(t, "function");
      const rapidjson::Value* name = fn ? member(*fn, "name") : nullptr;
      if (name && name->IsString())
        client_names.emplace_back(name->GetString(), name->GetStringLength());
    }
  }
  const http::ClientIdentity* who = decoder_->streamInfo().identity.get();
  for (plugins::Instance* inst : host_->toolsFor(model_)) {
    for (const auto& f : inst->tools()) {
      std::string name = functionName(inst->spec().id, f.method);
      if ((who && !who->allowsTool(inst->spec().id, name)) ||
          std::find(client_names.begin(), client_names.end(), name) != client_names.end() ||
          isOffered(name))
        continue;
      offered_.push_back(Offered{std::move(name), inst->spec().id, f.method});
    }
  }
  if (offered_.empty()) return http::FilterDataStatus::Continue;

  auto& alloc = request_.GetAllocator();
  if (!tools) {
    request_.AddMember("tools", rapidjson::Value(rapidjson::kArrayType), alloc);
    tools = member(request_, "tools");
  }
  for (const Offered& o : offered_) {
    const plugins::Instance* inst = host_->find(o.plugin_id);
    const plugins::ToolFunction* fn = nullptr;
    for (const auto& f : inst->tools()) {
      if (f.method == o.method) fn = &f;
    }
    rapidjson::Document params;
    if (!json::parse(params, fn->parameters_json, &why) || !params.IsObject()) {
      params.SetObject();
      params.AddMember("type", "object", alloc);
      params.AddMember("properties", rapidjson::Value(rapidjson::kObjectType), alloc);
    }
    rapidjson::Value function(rapidjson::kObjectType);
    function.AddMember("name", rapidjson::Value(o.name.c_str(), alloc), alloc);
    function.AddMember("description", rapidjson::Value(fn->description.c_str(), alloc), alloc);
    function.AddMember("parameters", rapidjson::Value(params, alloc), alloc);
    rapidjson::Value tool(rapidjson::kObjectType);
    tool.AddMember("type", "function", alloc);
    tool.AddMember("function", function, alloc);
    tools->PushBack(tool, alloc);
  }
  const rapidjson::Value* stream = member(request_, "stream");
  stream_ = stream && stream->IsBool() && stream->GetBool();
  if (const plugins::PluginsConfig* cfg = host_->config()) {
    max_rounds_ = cfg->max_tool_rounds;
    stream_events_ = cfg->stream_tool_events;
    // The model's output is untrusted: what a round reads or holds of it
    // (its JSON answer, held events, one event) is bounded. A tool's answer
    // and the model's words before its calls are cut: the request grows by
    // every round's, and a plugin may say up to plugins.max_message_kb.
    max_result_ = cfg->max_tool_result_bytes;
    max_answer_ = cfg->max_tool_answer_bytes;
  }
  // A client that shows progress (the web chat) asks for it per request.
  if (request_headers_->headers.get("x-eldric-tool-events").value_or("") == "on")
    stream_events_ = true;
  user_json_ = plugins::userJson(decoder_->streamInfo().identity.get());
  active_ = true;
  data.clear();
  decoder_->addDownstreamWatermarkCallbacks(*this);
  startRound();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

bool ToolsFilter::isOffered(std::string_view name) const { return offered(name) != nullptr; }

const ToolsFilter::Offered* ToolsFilter::offered(std::string_view name) const {
  for (const Offered& o : offered_) {
    if (o.name == name) return &o;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Rounds

void ToolsFilter::retireRound() {
  if (!round_) return;
  // A round that ended is not touched again here: this may run inside its
  // last callback. Its handler goes with it, on the next loop turn.
  if (!round_->done()) round_->reset();
  decoder_->dispatcher().deferredDelete(std::move(round_));
}

void ToolsFilter::startRound() {
  retireRound();
  ++rounds_;
  mode_ = stream_ ? Mode::Undecided : Mode::Collect;
  round_head_.reset();
  collected_.clear();
  splitter_ = http::SseSplitter(max_answer_);
  assembler_ = ToolCallAssembler();
  held_.clear();
  held_bytes_ = 0;
  round_text_.clear();
  round_text_full_ = false;
  round_error_.clear();
  round_prompt_ = round_completion_ = 0;

  Buffer body;
  body.add(serialize(request_));
  round_ = std::make_unique<http::AsyncStream>(*decoder_, worker_locals_, *this);
  http::AsyncStream* round = round_.get();
  round->start(decoder_->route()->filter_chain.back(), *request_headers_, body);
  // It may have answered already (no upstream): then it is retired.
  if (round_.get() == round && above_watermark_) round->onAboveWriteBufferHighWatermark();
}

void ToolsFilter::onAsyncHeaders(http::ResponseHeaders& headers, bool end_stream) {
  if (finished_) return;
  http::StreamInfo& info = decoder_->streamInfo();
  const http::StreamInfo& ri = round_->streamInfo();
  info.upstream_host = ri.upstream_host;
  info.attempts += ri.attempts;
  if (!info.upstream_headers_ns) info.upstream_headers_ns = ri.upstream_headers_ns;
  std::string_view type = headers.headers.get("content-type").value_or("");
  bool sse = type.substr(0, 17) == "text/event-stream";
  bool json = type.substr(0, 16) == "application/json";
  if (headers.status == 200 && !end_stream && (stream_ ? sse : json)) {
    round_head_ = std::make_unique<http::ResponseHeaders>(headers);
    return;
  }
  // Not an answer the loop reads (an error, from the router or the
  // upstream): the client gets it as it is, if it can still take a head.
  if (!head_sent_) {
    mode_ = Mode::Passthrough;
    head_sent_ = true;
    if (end_stream) finished_ = true;
    decoder_->encodeHeaders(std::make_unique<http::ResponseHeaders>(headers), end_stream);
    return;
  }
  mode_ = Mode::Discard;
  if (!ri.error_code.empty()) info.error_code = ri.error_code;
  if (end_stream) {
    fail(502, "bad_upstream_response",
         "the upstream answered " + std::to_string(headers.status) + " after a tool round");
  }
}

void ToolsFilter::onAsyncData(Buffer& data, bool end_stream) {
  if (finished_) {
    data.clear();
    return;
  }
  switch (mode_) {
    case Mode::Passthrough:
      if (end_stream) finished_ = true;
      decoder_->encodeData(data, end_stream);
      return;
    case Mode::Discard:
      data.clear();
      if (end_stream) {
        fail(502, "bad_upstream_response", "the upstream failed after a tool round");
      }
      return;
    case Mode::Collect:
      if (collected_.size() + data.length() > max_answer_) {
        data.clear();
        fail(502, "bad_upstream_response",
             "the model's answer is larger than the Edge reads for tool calls "
             "(plugins.max_tool_answer_kb)");
        return;
      }
      for (size_t i = 0; i < data.sliceCount(); ++i) collected_.append(data.slice(i).view());
      data.clear();
      if (end_stream) onWholeAnswer();
      return;
    default: {
      bool ok = splitter_.feed(data, [this](std::string_view ev) { return onEvent(ev); });
      data.clear();
      if (finished_) return;
      if (!ok) {
        fail(502, "bad_upstream_response",
             round_error_.empty() ? "an event of the model's stream is larger than "
                                    "plugins.max_tool_answer_kb"
                                  : round_error_);
        return;
      }
      if (end_stream) onStreamEnd();
      return;
    }
  }
}

void ToolsFilter::onAsyncReset(std::string_view reason) {
  if (finished_) return;
  std::string why = reason.empty() ? "upstream_reset" : std::string(reason);
  if (round_) {
    const http::StreamInfo& ri = round_->streamInfo();
    decoder_->streamInfo().error_code = ri.error_code.empty() ? why : ri.error_code;
  }
  if (mode_ == Mode::Passthrough) {
    finished_ = true;
    decoder_->resetStream(why);
    return;
  }
  fail(502, "upstream_reset", "the upstream broke off its answer");
}

void ToolsFilter::onAboveWriteBufferHighWatermark() {
  above_watermark_ = true;
  if (round_) round_->onAboveWriteBufferHighWatermark();
}

void ToolsFilter::onBelowWriteBufferLowWatermark() {
  above_watermark_ = false;
  if (round_) round_->onBelowWriteBufferLowWatermark();
}

void ToolsFilter::addUsage(const rapidjson::Value& doc) {
  const rapidjson::Value* usage = member(doc, "usage");
  if (!usage || !usage->IsObject()) return;
  round_prompt_ = uintOr0(member(*usage, "prompt_tokens"));
  round_completion_ = uintOr0(member(*usage, "completion_tokens"));
}

// ---------------------------------------------------------------------------
// A whole answer

void ToolsFilter::onWholeAnswer() {
  rapidjson::Document doc;
  std::string why;
  if (!json::parse(doc, collected_, &why) || !doc.IsObject()) {
    fail(502, "bad_upstream_response", "the model's answer is not valid JSON");
    return;
  }
  std::vector<ToolCall> calls;
  if (!parseMessageToolCalls(doc, Limits{}, &calls, &why)) {
    fail(502, "bad_upstream_response", "the model's tool calls are malformed: " + why);
    return;
  }
  addUsage(doc);
  if (completion_id_.empty()) {
    if (const rapidjson::Value* id = member(doc, "id"); id && id->IsString())
      completion_id_.assign(id->GetString(), id->GetStringLength());
  }
  size_t edge = 0;
  std::vector<int> index_map;
  int next = 0;
  for (const ToolCall& c : calls) {
    bool ours = isOffered(c.name);
    edge += ours;
    index_map.push_back(ours ? -1 : next++);
  }
  rapidjson::Value* choice = firstChoice(doc);
  rapidjson::Value* message = choice ? member(*choice, "message") : nullptr;
  if (edge > 0 && edge == calls.size()) {
    std::string text;
    if (const rapidjson::Value* content = message ? member(*message, "content") : nullptr;
        content && content->IsString()) {
      std::string_view said(content->GetString(), content->GetStringLength());
      text.assign(said.data(), utf8Prefix(said, max_result_));
    }
    runTools(std::move(calls), std::move(text));
    return;
  }
  // The final answer: the Edge's calls beside the client's are left out,
  // the usage covers every round.
  bool rewrite = edge > 0 || tool_rounds_ > 0;
  if (rewrite) {
    auto& alloc = doc.GetAllocator();
    if (edge > 0 && message) {
      if (rapidjson::Value* tc = member(*message, "tool_calls"))
        remapToolCalls(*tc, index_map, nullptr);
    }
    if (rapidjson::Value* usage = member(doc, "usage"))
      sumUsage(*usage, prompt_tokens_, completion_tokens_, alloc);
    collected_ = serialize(doc);
  }
  round_head_->headers.set("content-length", std::to_string(collected_.size()));
  head_sent_ = true;
  finished_ = true;
  Buffer body;
  body.add(collected_);
  collected_.clear();
  decoder_->encodeHeaders(std::move(round_head_), false);
  decoder_->encodeData(body, true);
}

// ---------------------------------------------------------------------------
// A streamed answer

bool ToolsFilter::onEvent(std::string_view event) {
  std::string_view payload = http::sseData(event);
  if (payload == "[DONE]") return true;  // sent once, at the very end
  bool content = false, tail = false, call_piece = false;
  rapidjson::Document doc;
  std::string why;
  if (!payload.empty() && payload[0] == '{' && json::parse(doc, payload, &why) && doc.IsObject()) {
    if (member(doc, "error")) {
      content = true;  // the client must see it
    } else {
      if (!assembler_.addChunk(doc, &round_error_)) {
        round_error_ = "the model's tool calls are malformed: " + round_error_;
        return false;
      }
      if (completion_id_.empty()) {
        if (const rapidjson::Value* id = member(doc, "id"); id && id->IsString())
          completion_id_.assign(id->GetString(), id->GetStringLength());
      }
      if (member(doc, "usage") && member(doc, "usage")->IsObject()) {
        addUsage(doc);
        tail = true;
      }
      if (rapidjson::Value* choice = firstChoice(doc)) {
        if (const rapidjson::Value* reason = member(*choice, "finish_reason");
            reason && !reason->IsNull())
          tail = true;
        if (const rapidjson::Value* delta = member(*choice, "delta")) {
          for (const char* k : {"content", "refusal"}) {
            const rapidjson::Value* c = member(*delta, k);
            if (c && c->IsString() && c->GetStringLength() > 0) {
              content = true;
              std::string_view piece(c->GetString(), c->GetStringLength());
              size_t n =
                  round_text_full_
                      ? 0
                      : utf8Prefix(piece, max_result_ - std::min(max_result_, round_text_.size()));
              round_text_.append(piece.data(), n);
              round_text_full_ = round_text_full_ || n < piece.size();
            }
          }
          call_piece = member(*delta, "tool_calls") != nullptr;
        }
      }
    }
  }
  if (mode_ == Mode::Undecided) {
    if (call_piece) {
      mode_ = Mode::Hold;
    } else if (content) {
      // An answer: what was held (its role chunk) goes first.
      mode_ = Mode::Forward;
      ChunkRewrite rw;
      if (tool_rounds_ > 0) rw.id = completion_id_;
      for (const std::string& ev : held_) emitRewritten(ev, rw);
      held_.clear();
      held_bytes_ = 0;
    }
  }
  if (mode_ == Mode::Forward && !call_piece && !tail) {
    if (tool_rounds_ > 0) {
      ChunkRewrite rw;
      rw.id = completion_id_;
      emitRewritten(event, rw);
    } else {
      emit(event);
    }
    return true;
  }
  held_bytes_ += event.size();
  if (held_bytes_ > max_answer_) {
    round_error_ =
        "the model's answer is larger than the Edge holds for tool calls "
        "(plugins.max_tool_answer_kb)";
    return false;
  }
  held_.emplace_back(event);
  return true;
}

void ToolsFilter::sendHead() {
  if (head_sent_ || !round_head_) return;
  head_sent_ = true;
  auto head = std::make_unique<http::ResponseHeaders>(*round_head_);
  head->headers.removeAll({"content-length"});
  decoder_->encodeHeaders(std::move(head), false);
}

void ToolsFilter::emit(std::string_view event) {
  if (finished_) return;
  sendHead();
  Buffer b;
  b.add(event);
  decoder_->encodeData(b, false);
}

void ToolsFilter::emitRewritten(std::string_view event, ChunkRewrite& rw) {
  std::string_view payload = http::sseData(event);
  rapidjson::Document doc;
  std::string why;
  if (payload.empty() || payload[0] != '{' || !json::parse(doc, payload, &why)) {
    emit(event);
    return;
  }
  if (!rewriteChunk(doc, rw)) return;
  std::string out = "data: " + serialize(doc) + "\n\n";
  emit(out);
}

void ToolsFilter::onStreamEnd() {
  if (!splitter_.pending().empty() && held_bytes_ + splitter_.pending().size() < max_answer_) {
    // An upstream that ended mid-event: what it sent goes on as it is.
    held_.emplace_back(splitter_.pending());
  }
  std::string why;
  if (assembler_.hasCalls() && !assembler_.complete(&why)) {
    fail(502, "bad_upstream_response", "the model's tool calls are malformed: " + why);
    return;
  }
  const std::vector<ToolCall>& calls = assembler_.calls();
  size_t edge = 0;
  ChunkRewrite rw;
  int next = 0;
  for (const ToolCall& c : calls) {
    bool ours = isOffered(c.name);
    edge += ours;
    rw.index_map.push_back(ours ? -1 : next++);
  }
  if (edge > 0 && edge == calls.size()) {
    held_.clear();
    held_bytes_ = 0;
    runTools(calls, std::move(round_text_));
    return;
  }
  if (tool_rounds_ > 0) rw.id = completion_id_;
  rw.prompt_tokens = prompt_tokens_;
  rw.completion_tokens = completion_tokens_;
  for (const std::string& ev : held_) emitRewritten(ev, rw);
  held_.clear();
  if (finished_) return;
  Buffer done;
  done.add("data: [DONE]\n\n");
  sendHead();
  finished_ = true;
  decoder_->encodeData(done, true);
}

// ---------------------------------------------------------------------------
// Running the tools

void ToolsFilter::runTools(std::vector<ToolCall> calls, std::string text) {
  retireRound();
  if (tool_rounds_ >= max_rounds_) {
    fail(502, "tool_rounds_exceeded",
         "the model asked for tools again after " + std::to_string(tool_rounds_) +
             " rounds (plugins.max_tool_rounds); it gave no final answer");
    return;
  }
  ++tool_rounds_;
  prompt_tokens_ += round_prompt_;
  completion_tokens_ += round_completion_;
  http::StreamInfo& info = decoder_->streamInfo();
  info.tool_rounds = tool_rounds_;

  auto& alloc = request_.GetAllocator();
  rapidjson::Value assistant(rapidjson::kObjectType);
  assistant.AddMember("role", "assistant", alloc);
  if (text.empty()) {
    assistant.AddMember("content", rapidjson::Value(rapidjson::kNullType), alloc);
  } else {
    assistant.AddMember(
        "content",
        rapidjson::Value(text.data(), static_cast<rapidjson::SizeType>(text.size()), alloc), alloc);
  }
  rapidjson::Value tool_calls(rapidjson::kArrayType);
  for (size_t i = 0; i < calls.size(); ++i) {
    ToolCall& c = calls[i];
    // The tool messages answer calls by id: one the model left out is made.
    if (c.id.empty())
      c.id = "call_eldric_" + std::to_string(tool_rounds_) + "_" + std::to_string(i);
    rapidjson::Value fn(rapidjson::kObjectType);
    fn.AddMember("name", rapidjson::Value(c.name.c_str(), alloc), alloc);
    fn.AddMember("arguments",
                 rapidjson::Value(c.arguments.data(),
                                  static_cast<rapidjson::SizeType>(c.arguments.size()), alloc),
                 alloc);
    rapidjson::Value call(rapidjson::kObjectType);
    call.AddMember("id", rapidjson::Value(c.id.c_str(), alloc), alloc);
    call.AddMember("type", "function", alloc);
    call.AddMember("function", fn, alloc);
    tool_calls.PushBack(call, alloc);
  }
  assistant.AddMember("tool_calls", tool_calls, alloc);
  std::string messages_json = serialize(request_["messages"]);
  request_["messages"].PushBack(assistant, alloc);

  runs_.clear();
  for (ToolCall& c : calls) {
    auto run = std::make_unique<Run>();
    run->owner = this;
    run->offered = offered(c.name);
    run->call = std::move(c);
    runs_.push_back(std::move(run));
  }
  starting_runs_ = true;
  for (auto& run : runs_) {
    const std::string& name = run->call.name;
    // Each name once ("a,b"): names are [A-Za-z0-9_-], so commas delimit.
    if (("," + info.tools_ran + ",").find("," + name + ",") == std::string::npos &&
        info.tools_ran.size() < 1024) {
      if (!info.tools_ran.empty()) info.tools_ran += ',';
      info.tools_ran += name;
    }
    if (stream_ && stream_events_) {
      // A comment line: clients skip it; the web chat shows it.
      emit(": tool " + name + " running\n\n");
    }
    plugins::Instance* inst = host_->find(run->offered->plugin_id);
    run->spec = inst ? inst->specShared() : nullptr;
    run->started_ns = Dispatcher::monotonicNs();
    rapidjson::Document args;
    std::string why;
    const std::string raw = run->call.arguments.empty() ? "{}" : run->call.arguments;
    if (!json::parse(args, raw, &why) || !args.IsObject()) {
      run->finish(plugins::Outcome::Refused, "Error: the arguments of " + name +
                                                 " are not a JSON object" +
                                                 (why.empty() ? std::string() : " (" + why + ")") +
                                                 "; call it again with valid arguments.");
      continue;
    }
    plugins::PluginProcess* p = inst ? inst->pick() : nullptr;
    if (!p) {
      run->finish(plugins::Outcome::Failed, "Error: the tool " + name + " is not running.");
      continue;
    }
    std::string params = "{\"name\":";
    log::appendJsonString(params, run->offered->method);
    params += ",\"arguments\":";
    params += serialize(args);  // as parsed: nothing but the one object
    params += ",\"user\":";
    params += user_json_;
    params += ",\"model\":";
    log::appendJsonString(params, model_);
    params += ",\"messages\":";
    params += messages_json;
    params += "}";
    run->spec->status->in_flight.fetch_add(1, std::memory_order_relaxed);
    run->process = p;
    uint64_t id = p->call("tool", params, run->spec->tool_ms, run.get());
    if (!run->done) run->call_id = id;
  }
  starting_runs_ = false;
  onRunDone();
}

void ToolsFilter::Run::finish(plugins::Outcome outcome, std::string text) {
  if (done) return;
  done = true;
  if (spec) {
    if (process) spec->status->in_flight.fetch_sub(1, std::memory_order_relaxed);
    spec->status->countTool(offered->name, outcome,
                            (Dispatcher::monotonicNs() - started_ns) / 1000);
  }
  process = nullptr;
  content = std::move(text);
  size_t max = owner->max_result_;
  if (content.size() > max) {
    // Cut on a character boundary, and said so.
    content.resize(utf8Prefix(content, max));
    content += "\n[the Edge cut this tool's answer at " + std::to_string(max) +
               " bytes (plugins.max_tool_result_kb)]";
  }
  owner->onRunDone();
}

void ToolsFilter::Run::onReply(plugins::RpcMessage& reply) {
  if (reply.ok) {
    const rapidjson::Value* result = reply.result;
    const rapidjson::Value* c = result ? member(*result, "content") : nullptr;
    std::string text;
    if (c && c->IsString()) {
      text.assign(c->GetString(), c->GetStringLength());
    } else if (c) {
      text = serialize(*c);
    }
    finish(plugins::Outcome::Ok, std::move(text));
    return;
  }
  std::string message = reply.error_message.empty() ? reply.error_type : reply.error_message;
  if (message.empty()) message = "failed";
  finish(plugins::Outcome::Refused, "Error: " + call.name + ": " + message);
}

void ToolsFilter::Run::onFailure(plugins::CallFailure failure, const std::string& why) {
  std::string text;
  plugins::Outcome outcome = plugins::Outcome::Failed;
  switch (failure) {
    case plugins::CallFailure::Timeout:
      outcome = plugins::Outcome::Timeout;
      text = "Error: the tool " + call.name + " did not answer within " +
             std::to_string(spec ? spec->tool_ms : 0) + " ms.";
      break;
    case plugins::CallFailure::Crashed:
      text = "Error: the tool " + call.name + " failed (its process stopped).";
      break;
    default:
      text = "Error: the tool " + call.name + " is unavailable (" + why + ").";
      break;
  }
  finish(outcome, std::move(text));
}

void ToolsFilter::onRunDone() {
  if (starting_runs_ || finished_) return;
  for (const auto& run : runs_) {
    if (!run->done) return;
  }
  // Not from inside a plugin's reply: the next round starts on a fresh
  // stack (a router that answers at once would end the stream there).
  if (!next_round_)
    next_round_ = decoder_->dispatcher().createTimer([this] { continueAfterTools(); });
  next_round_->enable(0);
}

void ToolsFilter::continueAfterTools() {
  if (finished_) return;
  auto& alloc = request_.GetAllocator();
  for (const auto& run : runs_) {
    rapidjson::Value msg(rapidjson::kObjectType);
    msg.AddMember("role", "tool", alloc);
    msg.AddMember("tool_call_id", rapidjson::Value(run->call.id.c_str(), alloc), alloc);
    msg.AddMember("content",
                  rapidjson::Value(run->content.data(),
                                   static_cast<rapidjson::SizeType>(run->content.size()), alloc),
                  alloc);
    request_["messages"].PushBack(msg, alloc);
  }
  startRound();
}

// ---------------------------------------------------------------------------
// Ending

void ToolsFilter::fail(int status, const char* code, const std::string& message) {
  if (finished_) return;
  finished_ = true;
  retireRound();
  decoder_->streamInfo().error_code = code;
  if (!head_sent_) {
    decoder_->sendLocalReply(http::ErrorReply{status, message, "server_error", code});
    return;
  }
  if (stream_) {
    Buffer b;
    b.add(http::sseErrorEvent(message, "server_error", code));
    decoder_->closeConnectionAfterResponse();
    decoder_->encodeData(b, true);
    return;
  }
  decoder_->resetStream(code);
}

http::FilterFactory makeFactory() {
  return [](http::FilterChainBuilder& chain) {
    // No tool plugin on this worker: not even a filter object per stream.
    plugins::PluginHost* host = chain.workerLocals().get(plugins::kPluginHostKey);
    if (!host || !host->hasTools()) return;
    chain.addDecoderFilter(std::make_unique<ToolsFilter>(host, chain.workerLocals()));
  };
}

}  // namespace eldric::filters::tools
