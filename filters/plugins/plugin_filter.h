#pragma once

// Runs the worker's plugins on a request (PROTOCOL.md, README "Plugins"):
// on OpenAI chat and completion routes, every filter plugin that applies
// to the request's model, lowest priority first:
// - inlet: the whole request body goes to each filter in turn, each may
//   rewrite it or refuse it (400 with the plugin's message);
// - a pipe model (`<plugin>.<pipe>`) is then answered by its pipe, never
//   by a router, streamed as SSE when the client asked for a stream;
// - stream: each SSE `data:` event of the answer goes through the filters'
//   stream hook, in order, one event at a time, and on to the client as
//   soon as it is done (never the whole stream buffered);
// - outlet: a JSON answer waits for the filters' outlets, which may
//   rewrite it; a streamed one is assembled and handed to the outlets at
//   the end, without holding back anything already sent.
// On /v1/models the pipe models are added to the router's list.
// A plugin that fails (crash, deadline, garbage) is skipped (`fail_open`)
// or refuses the request with 502/503 (`fail_closed`), per plugin; the
// request path never waits on anything but the call it made.

#include <rapidjson/document.h>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/http/filter.h"
#include "dataplane/http/sse.h"
#include "filters/plugins/runtime.h"

namespace eldric::filters::plugins {

class PluginFilter : public http::StreamDecoderFilter,
                     public http::StreamEncoderFilter,
                     public CallObserver {
 public:
  explicit PluginFilter(PluginHost* host) : host_(host) {}
  ~PluginFilter() override;

  // StreamDecoderFilter
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

  // StreamEncoderFilter
  void setEncoderFilterCallbacks(http::EncoderFilterCallbacks& cb) override { encoder_ = &cb; }
  http::FilterHeadersStatus encodeHeaders(http::ResponseHeaders& headers, bool end_stream) override;
  http::FilterDataStatus encodeData(Buffer& data, bool end_stream) override;

  // CallObserver
  void onChunk(const rapidjson::Value& params) override;
  void onReply(RpcMessage& reply) override;
  void onFailure(CallFailure failure, const std::string& why) override;

 private:
  enum class Phase { Idle, Inlet, Pipe, Stream, Outlet };

  // The filters in order; `step_` is the one being called.
  void runInlets();
  void inletsDone();
  void startPipe(const PipeModel& pipe, Instance& instance);
  void pipeText(std::string_view text);
  void pipeEvent(const rapidjson::Value& event);
  void pipeFinished(const rapidjson::Value* result);
  void pipeFailed(int status, const std::string& code, const std::string& message);
  void sendPipeHead();
  void runStream();
  void streamEventDone(std::string event_json);
  void flushStreamOutput(bool end);
  void runOutlets();
  void outletsDone();
  // Splits `data` into events_; false once an event is too large.
  bool queueSseBytes(const Buffer& data);
  void consumeEvent();
  void checkWatermark();
  void assemble(const rapidjson::Value& event);
  void fireStreamOutlets();

  // Starts a call to `spec`'s plugin; its answer (or failure, perhaps at
  // once) continues the phase.
  void callPlugin(const PluginSpecSharedPtr& spec, Hook hook, const char* method,
                  const std::string& params, uint64_t timeout_ms);
  void runStreamHooks();
  void failStream(int status, const std::string& code, const std::string& message);
  void mergePipeModels(Buffer& body);
  void endCall(Outcome outcome);
  // A plugin could not answer: fail_open skips it, fail_closed refuses.
  // Returns true if the request goes on.
  bool applyPolicy(const PluginSpec& spec, CallFailure failure, const std::string& why);
  // The filter at or after step_ that has the hook (step_ moves to it), or
  // null when none is left.
  const PluginSpecSharedPtr* nextWith(bool (Instance::*has)() const);
  Instance* instance(const std::string& id) const;

  PluginHost* host_;
  http::DecoderFilterCallbacks* decoder_ = nullptr;
  http::EncoderFilterCallbacks* encoder_ = nullptr;
  http::RequestHeaders* request_ = nullptr;
  Buffer* held_body_ = nullptr;  // the manager's buffer, while the request waits
  bool active_ = false;          // an inference request plugins look at
  bool models_route_ = false;
  bool chat_route_ = false;
  std::string model_;
  std::string body_json_;  // the request as it stands
  bool body_changed_ = false;
  std::vector<PluginSpecSharedPtr> chain_;  // the filters, in order
  size_t step_ = 0;
  Phase phase_ = Phase::Idle;
  std::string user_json_;

  // The call in flight.
  PluginProcess* calling_ = nullptr;
  uint64_t call_id_ = 0;
  uint64_t call_started_ns_ = 0;
  Hook call_hook_ = Hook::Inlet;
  PluginSpecSharedPtr call_spec_;

  // A pipe's answer.
  bool answering_ = false;
  bool pipe_stream_ = false;
  bool pipe_head_sent_ = false;
  std::string pipe_model_;
  std::string pipe_text_;  // non-streamed: what it said so far
  std::string completion_id_;

  // The upstream's answer.
  bool sse_ = false;
  bool stream_hooks_ = false;  // some filter rewrites events
  bool outlet_hooks_ = false;
  http::ResponseHeaders* response_ = nullptr;
  Buffer* held_response_ = nullptr;
  // Events as large as a plugin may answer (plugins.max_message_kb, less
  // the protocol's framing); set with the answer's head.
  http::SseSplitter splitter_{0};
  bool event_too_large_ = false;
  std::vector<std::string> events_;  // complete SSE events waiting, in order
  size_t queued_bytes_ = 0;          // of events_ not yet done
  bool above_watermark_ = false;     // the upstream is held back
  size_t event_index_ = 0;
  std::string current_event_;  // the JSON of the event being filtered
  std::string current_other_;  // its lines other than data, as they came
  Buffer stream_out_;
  bool upstream_ended_ = false;
  bool stream_busy_ = false;
  std::string assembled_;  // a streamed answer's text, for the outlets
  bool assembling_ = false;
  bool stream_failed_ = false;
  bool end_sent_ = false;
  bool in_run_stream_ = false;
  std::string response_json_;
  bool response_changed_ = false;
  // Work that finished inside decodeData/encodeData: the manager is told
  // by the return value, not by continueDecoding/continueEncoding.
  bool in_decode_data_ = false;
  bool in_encode_data_ = false;
  bool finished_inside_ = false;
  uint64_t call_gen_ = 0;
};

// The factory for the "plugins" registry entry: finds the worker's host.
http::FilterFactory makeFactory();

}  // namespace eldric::filters::plugins
