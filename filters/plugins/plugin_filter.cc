#include "filters/plugins/plugin_filter.h"

#include <ctime>

#include "common/json.h"
#include "common/log.h"
#include "dataplane/http/errors.h"
#include "dataplane/http/route.h"
#include "dataplane/http/sse.h"

namespace eldric::filters::plugins {

namespace {

// A pipe's non-streamed text, and a streamed answer assembled for the
// outlets, are cut here.
constexpr size_t kMaxAssembled = 16u << 20;
// What a stream event may take of plugins.max_message_kb: the rest is for
// the answer's framing ({"jsonrpc":"2.0","id":N,"result":{"event":...}}).
constexpr size_t kEventFraming = 4096;
// Events waiting for the stream filters: past the high mark the upstream
// is held back until the queue is under the low one (the marks of the
// client's connection, network::ConnectionOptions).
constexpr size_t kQueueHighBytes = 256 * 1024;
constexpr size_t kQueueLowBytes = 64 * 1024;

constexpr int kNoSuchMethod = -32601;
constexpr int kPluginRaised = -32000;

using json::serialize;

std::string jsonString(std::string_view s) {
  std::string out;
  log::appendJsonString(out, s);
  return out;
}

// A response whose content-length says it may be held whole.
bool boundedLength(const http::ResponseHeaders& headers) {
  auto cl = headers.headers.get("content-length");
  if (!cl || cl->empty() || cl->size() > 12) return false;
  uint64_t n = 0;
  for (char c : *cl) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + static_cast<uint64_t>(c - '0');
  }
  return n <= kMaxAssembled;
}

}  // namespace

PluginFilter::~PluginFilter() { onDestroy(); }

void PluginFilter::onDestroy() {
  if (calling_) {
    PluginProcess* p = calling_;
    calling_ = nullptr;
    if (call_spec_) call_spec_->status->in_flight.fetch_sub(1, std::memory_order_relaxed);
    p->cancel(call_id_);
  }
  phase_ = Phase::Idle;
}

Instance* PluginFilter::instance(const std::string& id) const { return host_->find(id); }

// ---------------------------------------------------------------------------
// Calls

void PluginFilter::callPlugin(const PluginSpecSharedPtr& spec, Hook hook, const char* method,
                              const std::string& params, uint64_t timeout_ms) {
  call_spec_ = spec;
  call_hook_ = hook;
  call_started_ns_ = Dispatcher::monotonicNs();
  Instance* inst = instance(spec->id);
  PluginProcess* p = inst ? inst->pick() : nullptr;
  if (!p) {
    onFailure(CallFailure::NotRunning, "is not running");
    return;
  }
  spec->status->in_flight.fetch_add(1, std::memory_order_relaxed);
  calling_ = p;
  uint64_t gen = ++call_gen_;
  uint64_t id = p->call(method, params, timeout_ms, this);
  if (calling_ == p && call_gen_ == gen) call_id_ = id;
}

void PluginFilter::endCall(Outcome outcome) {
  if (!call_spec_) return;
  PluginStatus& st = *call_spec_->status;
  if (calling_) {
    st.in_flight.fetch_sub(1, std::memory_order_relaxed);
    calling_ = nullptr;
    ++call_gen_;
  }
  st.count(call_hook_, outcome);
  st.observe(call_hook_, (Dispatcher::monotonicNs() - call_started_ns_) / 1000);
}

bool PluginFilter::applyPolicy(const PluginSpec& spec, CallFailure failure,
                               const std::string& why) {
  if (spec.fail_open) return true;
  bool broke = failure == CallFailure::Crashed || failure == CallFailure::BadMessage;
  int status = broke ? 502 : 503;
  std::string code = broke ? "plugin_failed" : "plugin_unavailable";
  std::string message = "plugin " + spec.id + " " + why;
  switch (phase_) {
    case Phase::Inlet:
      decoder_->sendLocalReply(http::ErrorReply{status, message, "server_error", code});
      break;
    case Phase::Stream:
      failStream(status, code, message);
      break;
    case Phase::Outlet: {
      // The answer is still held: it becomes the refusal.
      response_->status = status;
      response_->headers.set("content-type", "application/json");
      response_json_ = http::errorBody(message, "server_error", code);
      response_changed_ = true;
      break;
    }
    default:
      break;
  }
  return false;
}

void PluginFilter::onFailure(CallFailure failure, const std::string& why) {
  PluginSpecSharedPtr spec = call_spec_;
  endCall(failure == CallFailure::Timeout ? Outcome::Timeout : Outcome::Failed);
  if (!spec) return;
  std::string what = why;
  if (failure == CallFailure::Timeout) what = "did not answer in time";
  if (what.rfind("the plugin ", 0) == 0) what = what.substr(11);
  switch (phase_) {
    case Phase::Inlet:
      if (applyPolicy(*spec, failure, what)) {
        ++step_;
        runInlets();
      }
      return;
    case Phase::Pipe: {
      bool broke = failure == CallFailure::Crashed || failure == CallFailure::BadMessage;
      pipeFailed(broke ? 502 : 503, broke ? "plugin_failed" : "plugin_unavailable",
                 "plugin " + spec->id + " " + what);
      return;
    }
    case Phase::Stream:
      if (applyPolicy(*spec, failure, what)) {
        ++step_;
        runStreamHooks();
      }
      return;
    case Phase::Outlet:
      if (applyPolicy(*spec, failure, what)) {
        ++step_;
      } else {
        step_ = chain_.size();
      }
      runOutlets();
      return;
    case Phase::Idle:
      return;
  }
}

void PluginFilter::onReply(RpcMessage& reply) {
  PluginSpecSharedPtr spec = call_spec_;
  bool no_hook = !reply.ok && reply.error_code == kNoSuchMethod;
  bool raised = !reply.ok && reply.error_code == kPluginRaised;
  endCall(reply.ok || no_hook ? Outcome::Ok : raised ? Outcome::Refused : Outcome::Failed);
  std::string message = reply.error_message.empty()
                            ? (reply.error_type.empty() ? "refused the request" : reply.error_type)
                            : reply.error_message;
  switch (phase_) {
    case Phase::Inlet: {
      if (raised) {
        // The plugin refused the request: its words, to the client.
        decoder_->sendLocalReply(
            http::ErrorReply{400, message, "invalid_request_error", "plugin_refused"});
        return;
      }
      if (!reply.ok && !no_hook) {
        if (!applyPolicy(*spec, CallFailure::BadMessage, "failed: " + message)) return;
      } else if (reply.ok) {
        auto body =
            reply.result->IsObject() ? reply.result->FindMember("body") : reply.result->MemberEnd();
        if (reply.result->IsObject() && body != reply.result->MemberEnd()) {
          if (body->value.IsObject()) {
            body_json_ = serialize(body->value);
            body_changed_ = true;
          } else if (!body->value.IsNull()) {
            if (!applyPolicy(*spec, CallFailure::BadMessage,
                             "returned a body that is not an object"))
              return;
          }
        }
      }
      ++step_;
      runInlets();
      return;
    }
    case Phase::Pipe:
      if (!reply.ok) {
        pipeFailed(502, raised ? "plugin_error" : "plugin_failed",
                   "plugin " + spec->id + ": " + message);
        return;
      }
      pipeFinished(reply.result);
      return;
    case Phase::Stream: {
      if (reply.ok && reply.result->IsObject()) {
        auto ev = reply.result->FindMember("event");
        if (ev != reply.result->MemberEnd()) {
          if (ev->value.IsNull()) {
            current_event_.clear();  // dropped
            streamEventDone({});
            return;
          }
          if (ev->value.IsObject()) current_event_ = serialize(ev->value);
        }
      } else if (!reply.ok && !no_hook) {
        if (!applyPolicy(*spec, CallFailure::BadMessage, "failed: " + message)) return;
      }
      ++step_;
      runStreamHooks();
      return;
    }
    case Phase::Outlet: {
      if (reply.ok && reply.result->IsObject()) {
        auto body = reply.result->FindMember("body");
        if (body != reply.result->MemberEnd() && body->value.IsObject()) {
          response_json_ = serialize(body->value);
          response_changed_ = true;
        }
        ++step_;
      } else if (!reply.ok && !no_hook) {
        if (applyPolicy(*spec, CallFailure::BadMessage, "failed: " + message)) {
          ++step_;
        } else {
          step_ = chain_.size();
        }
      } else {
        ++step_;
      }
      runOutlets();
      return;
    }
    case Phase::Idle:
      return;
  }
}

// ---------------------------------------------------------------------------
// The request

http::FilterHeadersStatus PluginFilter::decodeHeaders(http::RequestHeaders& headers,
                                                      bool end_stream) {
  const http::Route* route = decoder_->route();
  if (!route) return http::FilterHeadersStatus::Continue;
  if (route->name == "models") {
    models_route_ = true;
    return http::FilterHeadersStatus::Continue;
  }
  if (!route->count_tokens || end_stream) return http::FilterHeadersStatus::Continue;
  chat_route_ = route->name == "chat_completions";
  request_ = &headers;
  active_ = true;
  return http::FilterHeadersStatus::StopAllIterationAndBuffer;
}

http::FilterDataStatus PluginFilter::decodeData(Buffer& data, bool end_stream) {
  if (!active_ || !end_stream || phase_ != Phase::Idle) return http::FilterDataStatus::Continue;
  rapidjson::Document doc;
  std::string why;
  if (!json::parse(doc, data.toString(), &why) || !doc.IsObject()) {
    // Not ours to judge: the upstream answers it as it would.
    active_ = false;
    return http::FilterDataStatus::Continue;
  }
  // Re-serialized, never passed as the client sent it: one compact line
  // (a pretty-printed body would break the protocol's framing).
  body_json_ = serialize(doc);
  auto model = doc.FindMember("model");
  if (model != doc.MemberEnd() && model->value.IsString()) {
    model_.assign(model->value.GetString(), model->value.GetStringLength());
  }
  bool inlets = false;
  for (Instance* inst : host_->filtersFor(model_)) {
    chain_.push_back(inst->specShared());
    inlets = inlets || inst->hasInlet();
  }
  const PipeModel* pipe = nullptr;
  bool is_pipe = chat_route_ && host_->pipeFor(model_, &pipe) != nullptr;
  if (!inlets && !is_pipe) return http::FilterDataStatus::Continue;
  held_body_ = &data;
  user_json_ = userJson(decoder_->streamInfo().identity.get());
  in_decode_data_ = true;
  finished_inside_ = false;
  step_ = 0;
  runInlets();
  in_decode_data_ = false;
  if (finished_inside_) return http::FilterDataStatus::Continue;
  return http::FilterDataStatus::StopIterationNoBuffer;
}

const PluginSpecSharedPtr* PluginFilter::nextWith(bool (Instance::*has)() const) {
  for (; step_ < chain_.size(); ++step_) {
    Instance* inst = instance(chain_[step_]->id);
    if (inst && (inst->*has)()) return &chain_[step_];
  }
  return nullptr;
}

void PluginFilter::runInlets() {
  phase_ = Phase::Inlet;
  if (const PluginSpecSharedPtr* spec = nextWith(&Instance::hasInlet)) {
    std::string params = "{\"body\":" + body_json_ + ",\"user\":" + user_json_ + "}";
    callPlugin(*spec, Hook::Inlet, "inlet", params, (*spec)->inlet_ms);
    return;
  }
  inletsDone();
}

void PluginFilter::inletsDone() {
  phase_ = Phase::Idle;
  if (body_changed_) {
    rapidjson::Document doc;
    std::string why;
    if (json::parse(doc, body_json_, &why) && doc.IsObject()) {
      auto model = doc.FindMember("model");
      model_ = model != doc.MemberEnd() && model->value.IsString()
                   ? std::string(model->value.GetString(), model->value.GetStringLength())
                   : std::string();
    }
  }
  const PipeModel* pipe = nullptr;
  Instance* inst = chat_route_ ? host_->pipeFor(model_, &pipe) : nullptr;
  if (inst) {
    // The pipe answers here, before the usage filter would check the
    // model: a key limited to some models is held to them here too.
    const auto& who = decoder_->streamInfo().identity;
    if (who && !who->allowsModel(model_)) {
      decoder_->sendLocalReply(http::modelNotAllowed(model_));
      return;
    }
    startPipe(*pipe, *inst);
    return;
  }
  if (body_changed_) {
    held_body_->clear();
    held_body_->add(body_json_);
    request_->headers.set("content-length", std::to_string(body_json_.size()));
    request_->content_length = body_json_.size();
  }
  if (in_decode_data_) {
    finished_inside_ = true;
  } else {
    decoder_->continueDecoding();
  }
}

// ---------------------------------------------------------------------------
// A pipe answers

void PluginFilter::startPipe(const PipeModel& pipe, Instance& instance) {
  answering_ = true;
  pipe_model_ = pipe.model;
  rapidjson::Document doc;
  std::string why;
  if (json::parse(doc, body_json_, &why) && doc.IsObject()) {
    auto s = doc.FindMember("stream");
    pipe_stream_ = s != doc.MemberEnd() && s->value.IsBool() && s->value.GetBool();
  }
  completion_id_ = "chatcmpl-" + decoder_->streamInfo().request_id;
  phase_ = Phase::Pipe;
  std::string params = "{\"pipe_id\":" + jsonString(pipe.pipe_id) + ",\"body\":" + body_json_ +
                       ",\"user\":" + user_json_ + "}";
  callPlugin(instance.specShared(), Hook::Pipe, "pipe", params, instance.spec().pipe_ms);
}

void PluginFilter::sendPipeHead() {
  if (pipe_head_sent_) return;
  pipe_head_sent_ = true;
  auto headers = std::make_unique<http::ResponseHeaders>();
  headers->status = 200;
  headers->headers.add("content-type", "text/event-stream");
  headers->headers.add("cache-control", "no-cache");
  decoder_->encodeHeaders(std::move(headers), false);
}

void PluginFilter::onChunk(const rapidjson::Value& params) {
  if (phase_ != Phase::Pipe) return;
  auto text = params.FindMember("text");
  if (text != params.MemberEnd() && text->value.IsString()) {
    pipeText(std::string_view(text->value.GetString(), text->value.GetStringLength()));
    return;
  }
  auto event = params.FindMember("event");
  if (event != params.MemberEnd() && event->value.IsObject()) pipeEvent(event->value);
}

void PluginFilter::pipeText(std::string_view text) {
  if (text.empty()) return;
  if (!pipe_stream_) {
    if (pipe_text_.size() + text.size() > kMaxAssembled) return;
    pipe_text_.append(text);
    return;
  }
  sendPipeHead();
  std::string chunk =
      "data: {\"id\":" + jsonString(completion_id_) +
      ",\"object\":\"chat.completion.chunk\",\"created\":" + std::to_string(time(nullptr)) +
      ",\"model\":" + jsonString(pipe_model_) +
      ",\"choices\":[{\"index\":0,\"delta\":{\"content\":" + jsonString(text) +
      "},\"finish_reason\":null}]}\n\n";
  Buffer out;
  out.add(chunk);
  decoder_->encodeData(out, false);
}

void PluginFilter::pipeEvent(const rapidjson::Value& event) {
  if (!pipe_stream_) {
    // Its text joins the answer.
    auto choices = event.FindMember("choices");
    if (choices == event.MemberEnd() || !choices->value.IsArray() || choices->value.Empty()) return;
    const auto& c = choices->value[0];
    for (const char* k : {"delta", "message"}) {
      auto m = c.FindMember(k);
      if (m == c.MemberEnd() || !m->value.IsObject()) continue;
      auto content = m->value.FindMember("content");
      if (content != m->value.MemberEnd() && content->value.IsString()) {
        pipeText(std::string_view(content->value.GetString(), content->value.GetStringLength()));
      }
    }
    return;
  }
  sendPipeHead();
  Buffer out;
  out.add("data: " + serialize(event) + "\n\n");
  decoder_->encodeData(out, false);
}

void PluginFilter::pipeFinished(const rapidjson::Value* result) {
  phase_ = Phase::Idle;
  if (result && result->IsObject()) {
    auto content = result->FindMember("content");
    if (content != result->MemberEnd() && content->value.IsString()) {
      pipeText(std::string_view(content->value.GetString(), content->value.GetStringLength()));
    }
    auto completion = result->FindMember("completion");
    if (completion != result->MemberEnd() && completion->value.IsObject()) {
      if (!pipe_stream_) {
        std::string body = serialize(completion->value);
        auto headers = std::make_unique<http::ResponseHeaders>();
        headers->status = 200;
        headers->headers.add("content-type", "application/json");
        headers->headers.add("content-length", std::to_string(body.size()));
        decoder_->encodeHeaders(std::move(headers), false);
        Buffer out;
        out.add(body);
        decoder_->encodeData(out, true);
        return;
      }
      pipeEvent(completion->value);  // streamed: sent as one event
    }
  }
  if (pipe_stream_) {
    sendPipeHead();
    std::string tail =
        "data: {\"id\":" + jsonString(completion_id_) +
        ",\"object\":\"chat.completion.chunk\",\"created\":" + std::to_string(time(nullptr)) +
        ",\"model\":" + jsonString(pipe_model_) +
        ",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
        "data: [DONE]\n\n";
    Buffer out;
    out.add(tail);
    decoder_->encodeData(out, true);
    return;
  }
  std::string body =
      "{\"id\":" + jsonString(completion_id_) +
      ",\"object\":\"chat.completion\",\"created\":" + std::to_string(time(nullptr)) +
      ",\"model\":" + jsonString(pipe_model_) +
      ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":" +
      jsonString(pipe_text_) +
      "},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":0,"
      "\"completion_tokens\":0,\"total_tokens\":0}}";
  auto headers = std::make_unique<http::ResponseHeaders>();
  headers->status = 200;
  headers->headers.add("content-type", "application/json");
  headers->headers.add("content-length", std::to_string(body.size()));
  decoder_->encodeHeaders(std::move(headers), false);
  Buffer out;
  out.add(body);
  decoder_->encodeData(out, true);
}

void PluginFilter::pipeFailed(int status, const std::string& code, const std::string& message) {
  phase_ = Phase::Idle;
  if (pipe_head_sent_) {
    Buffer out;
    out.add(http::sseErrorEvent(message, "server_error", code));
    out.add("data: [DONE]\n\n");
    decoder_->encodeData(out, true);
    return;
  }
  decoder_->sendLocalReply(http::ErrorReply{status, message, "server_error", code});
}

// ---------------------------------------------------------------------------
// The answer

http::FilterHeadersStatus PluginFilter::encodeHeaders(http::ResponseHeaders& headers,
                                                      bool end_stream) {
  if (answering_ || end_stream) return http::FilterHeadersStatus::Continue;
  if (models_route_) {
    if (headers.status != 200 || host_->pipeModels().empty() || !boundedLength(headers))
      return http::FilterHeadersStatus::Continue;
    response_ = &headers;
    return http::FilterHeadersStatus::StopAllIterationAndBuffer;
  }
  if (!active_ || chain_.empty()) return http::FilterHeadersStatus::Continue;
  for (const auto& spec : chain_) {
    Instance* inst = instance(spec->id);
    if (!inst) continue;
    stream_hooks_ = stream_hooks_ || inst->hasStream();
    outlet_hooks_ = outlet_hooks_ || inst->hasOutlet();
  }
  auto ct = headers.headers.get("content-type");
  sse_ = ct && ct->substr(0, 17) == "text/event-stream";
  if (sse_) {
    if (stream_hooks_) headers.headers.remove("content-length");
    assembling_ = outlet_hooks_;
    const PluginsConfig* cfg = host_->config();
    size_t max_message = cfg ? cfg->max_message_bytes : PluginsConfig().max_message_bytes;
    splitter_ = http::SseSplitter(max_message > 2 * kEventFraming ? max_message - kEventFraming
                                                                  : max_message / 2);
    return http::FilterHeadersStatus::Continue;
  }
  bool json = ct && ct->find("json") != std::string_view::npos;
  // Only an answer of a known, bounded length is held for the outlets (an
  // upstream's body of any size is never buffered whole).
  if (outlet_hooks_ && json && headers.status == 200 && boundedLength(headers)) {
    response_ = &headers;
    return http::FilterHeadersStatus::StopAllIterationAndBuffer;
  }
  return http::FilterHeadersStatus::Continue;
}

http::FilterDataStatus PluginFilter::encodeData(Buffer& data, bool end_stream) {
  if (answering_) return http::FilterDataStatus::Continue;
  if (models_route_) {
    if (response_ && end_stream) mergePipeModels(data);
    return http::FilterDataStatus::Continue;
  }
  if (!active_) return http::FilterDataStatus::Continue;
  if (stream_failed_) {
    data.clear();
    return http::FilterDataStatus::StopIterationNoBuffer;
  }
  if (response_ && !sse_) {
    if (!end_stream) return http::FilterDataStatus::Continue;  // not reached: whole body
    held_response_ = &data;
    rapidjson::Document doc;
    std::string why;
    if (!json::parse(doc, data.toString(), &why) || !doc.IsObject()) {
      return http::FilterDataStatus::Continue;
    }
    response_json_ = serialize(doc);
    step_ = 0;
    in_encode_data_ = true;
    finished_inside_ = false;
    runOutlets();
    in_encode_data_ = false;
    return finished_inside_ ? http::FilterDataStatus::Continue
                            : http::FilterDataStatus::StopIterationNoBuffer;
  }
  if (!sse_) return http::FilterDataStatus::Continue;
  if (!stream_hooks_) {
    if (assembling_) {
      // Read along for the outlets; the bytes pass untouched. Past an
      // event too large to read, the outlets get what came before it.
      queueSseBytes(data);
      // An answer cut mid-event: its last event counts too.
      if (end_stream && !splitter_.pending().empty()) events_.emplace_back(splitter_.pending());
      for (const auto& ev : events_) {
        http::SseEvent e = http::readSseEvent(ev);
        rapidjson::Document d;
        std::string why;
        if (e.has_data && json::parse(d, e.data, &why)) assemble(d);
      }
      events_.clear();
      queued_bytes_ = 0;
      if (end_stream) fireStreamOutlets();
    }
    return http::FilterDataStatus::Continue;
  }
  if (!queueSseBytes(data)) event_too_large_ = true;
  data.clear();
  if (end_stream) {
    upstream_ended_ = true;
    // An upstream that ended mid-event: what it sent is an event too (a
    // client may read a line without its blank line), filtered as one.
    std::string_view tail = splitter_.pending();
    if (!event_too_large_ && !tail.empty()) {
      events_.push_back(std::string(tail) + "\n\n");
      queued_bytes_ += events_.back().size();
    }
  }
  if (!stream_busy_) runStream();
  checkWatermark();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

void PluginFilter::mergePipeModels(Buffer& body) {
  rapidjson::Document doc;
  std::string why;
  if (!json::parse(doc, body.toString(), &why) || !doc.IsObject()) return;
  auto data = doc.FindMember("data");
  if (data == doc.MemberEnd() || !data->value.IsArray()) return;
  auto& a = doc.GetAllocator();
  for (const auto& [pipe, inst] : host_->pipeModels()) {
    rapidjson::Value m(rapidjson::kObjectType);
    m.AddMember("id", rapidjson::Value(pipe->model.c_str(), a), a);
    m.AddMember("object", "model", a);
    m.AddMember("created", 0, a);
    m.AddMember("owned_by", rapidjson::Value(inst->spec().id.c_str(), a), a);
    m.AddMember("name", rapidjson::Value(pipe->name.c_str(), a), a);
    data->value.PushBack(m, a);
  }
  std::string out = serialize(doc);
  body.clear();
  body.add(out);
  response_->headers.set("content-length", std::to_string(out.size()));
}

bool PluginFilter::queueSseBytes(const Buffer& data) {
  return splitter_.feed(data, [this](std::string_view ev) {
    events_.emplace_back(ev);
    queued_bytes_ += ev.size();
    return true;
  });
}

void PluginFilter::runStream() {
  if (in_run_stream_) return;
  in_run_stream_ = true;
  while (!stream_busy_ && !stream_failed_ && event_index_ < events_.size()) {
    const std::string& ev = events_[event_index_];
    http::SseEvent e = http::readSseEvent(ev);
    if (!e.has_data || e.data == "[DONE]") {
      // A comment (keep-alive) or the end: nothing a filter reads.
      stream_out_.add(ev);
      consumeEvent();
      continue;
    }
    // The upstream's words: parsed and written out again before they go
    // into a protocol line (raw text could smuggle JSON-RPC members).
    rapidjson::Document ev_doc;
    std::string why;
    if (!json::parse(ev_doc, e.data, &why) || !ev_doc.IsObject()) {
      // Data a filter cannot be given (not an object, or cut short by an
      // upstream that ended mid-event) is not passed on past it either:
      // no OpenAI client could read it, and its words may be what a
      // filter would have removed.
      consumeEvent();
      continue;
    }
    current_event_ = serialize(ev_doc);
    current_other_ = std::move(e.other);
    stream_busy_ = true;
    step_ = 0;
    runStreamHooks();
  }
  if (!stream_busy_ && !stream_failed_ && event_index_ >= events_.size()) {
    events_.clear();
    event_index_ = 0;
    queued_bytes_ = 0;
    if (event_too_large_) {
      // Not passed on unfiltered: a filter that redacts must see every
      // event. What came before it has gone on.
      failStream(502, "bad_upstream_response",
                 "an event of the upstream's stream is larger than the stream filters take "
                 "(plugins.max_message_kb)");
      // The outlets hear what was answered up to it.
      fireStreamOutlets();
    } else {
      bool end = upstream_ended_;
      flushStreamOutput(end);
      if (end) fireStreamOutlets();
    }
  }
  in_run_stream_ = false;
  checkWatermark();
}

void PluginFilter::consumeEvent() {
  queued_bytes_ -= events_[event_index_].size();
  ++event_index_;
}

// Events waiting for the plugins hold the upstream back past the high
// mark, as a slow client does, and let it go below the low one.
void PluginFilter::checkWatermark() {
  if (!above_watermark_ && !stream_failed_ && queued_bytes_ > kQueueHighBytes) {
    above_watermark_ = true;
    encoder_->onEncoderFilterAboveWriteBufferHighWatermark();
  } else if (above_watermark_ && (stream_failed_ || queued_bytes_ < kQueueLowBytes)) {
    above_watermark_ = false;
    encoder_->onEncoderFilterBelowWriteBufferLowWatermark();
  }
}

void PluginFilter::runStreamHooks() {
  phase_ = Phase::Stream;
  if (const PluginSpecSharedPtr* spec = nextWith(&Instance::hasStream)) {
    callPlugin(*spec, Hook::Stream, "stream", "{\"event\":" + current_event_ + "}",
               (*spec)->stream_ms);
    return;
  }
  streamEventDone(current_event_);
}

void PluginFilter::streamEventDone(std::string event_json) {
  phase_ = Phase::Idle;
  if (!event_json.empty()) {
    // Its other lines (an id, an event name) as they came, then the data
    // as the filters left it, on one line.
    stream_out_.add(current_other_ + "data: " + event_json + "\n\n");
    if (assembling_) {
      rapidjson::Document d;
      std::string why;
      if (json::parse(d, event_json, &why)) assemble(d);
    }
  }
  consumeEvent();
  stream_busy_ = false;
  // Each event goes on as soon as it is done.
  if (!in_run_stream_) {
    flushStreamOutput(false);
    runStream();
  }
}

void PluginFilter::flushStreamOutput(bool end) {
  if (end_sent_ || (stream_out_.empty() && !end)) return;
  if (end) end_sent_ = true;
  encoder_->injectEncodedDataToFilterChain(*this, stream_out_, end);
}

void PluginFilter::failStream(int status, const std::string& code, const std::string& message) {
  (void)status;
  stream_failed_ = true;
  phase_ = Phase::Idle;
  checkWatermark();  // nothing more is filtered: the upstream may go on
  stream_out_.add(http::sseErrorEvent(message, "server_error", code));
  stream_out_.add("data: [DONE]\n\n");
  flushStreamOutput(true);
}

void PluginFilter::assemble(const rapidjson::Value& event) {
  if (!event.IsObject()) return;
  auto choices = event.FindMember("choices");
  if (choices == event.MemberEnd() || !choices->value.IsArray() || choices->value.Empty()) return;
  const auto& c = choices->value[0];
  if (!c.IsObject()) return;
  auto delta = c.FindMember("delta");
  if (delta == c.MemberEnd() || !delta->value.IsObject()) return;
  auto content = delta->value.FindMember("content");
  if (content == delta->value.MemberEnd() || !content->value.IsString()) return;
  if (assembled_.size() + content->value.GetStringLength() > kMaxAssembled) return;
  assembled_.append(content->value.GetString(), content->value.GetStringLength());
}

void PluginFilter::fireStreamOutlets() {
  if (!assembling_) return;
  assembling_ = false;
  // The request's messages and the assistant's answer, as Open WebUI's
  // outlet gets them; nobody waits for the result.
  rapidjson::Document req;
  std::string why;
  std::string messages = "[]";
  if (json::parse(req, body_json_, &why) && req.IsObject()) {
    auto m = req.FindMember("messages");
    if (m != req.MemberEnd() && m->value.IsArray()) messages = serialize(m->value);
  }
  std::string assistant = "{\"role\":\"assistant\",\"content\":" + jsonString(assembled_) + "}";
  if (messages == "[]") {
    messages = "[" + assistant + "]";
  } else {
    messages.insert(messages.size() - 1, "," + assistant);
  }
  std::string params = "{\"body\":{\"model\":" + jsonString(model_) + ",\"messages\":" + messages +
                       "},\"user\":" + user_json_ + "}";
  for (const auto& spec : chain_) {
    Instance* inst = instance(spec->id);
    if (!inst || !inst->hasOutlet()) continue;
    PluginProcess* p = inst->pick();
    if (p) p->call("outlet", params, spec->outlet_ms, nullptr);
  }
}

void PluginFilter::runOutlets() {
  phase_ = Phase::Outlet;
  if (const PluginSpecSharedPtr* spec = nextWith(&Instance::hasOutlet)) {
    std::string params = "{\"body\":" + response_json_ + ",\"user\":" + user_json_ + "}";
    callPlugin(*spec, Hook::Outlet, "outlet", params, (*spec)->outlet_ms);
    return;
  }
  outletsDone();
}

void PluginFilter::outletsDone() {
  phase_ = Phase::Idle;
  if (response_changed_) {
    held_response_->clear();
    held_response_->add(response_json_);
    response_->headers.set("content-length", std::to_string(response_json_.size()));
  }
  if (in_encode_data_) {
    finished_inside_ = true;
  } else {
    encoder_->continueEncoding();
  }
}

http::FilterFactory makeFactory() {
  return [](http::FilterChainBuilder& chain) {
    PluginHost* host = chain.workerLocals().get(kPluginHostKey);
    // No plugins: no filter, no cost.
    if (!host || host->empty()) return;
    auto f = std::make_shared<PluginFilter>(host);
    chain.addStreamFilter(f, f);
  };
}

}  // namespace eldric::filters::plugins
