#pragma once

// The Edge's own tools (issue 20, README "Tool plugins"): on
// /v1/chat/completions, the functions of the enabled tool plugins that
// apply to the request's model are added to its `tools` (a client's own
// tool of the same name wins: the Edge's is not offered). The request then
// goes to the router from here, as a round of its own (http::AsyncStream),
// and the answer is read before the client sees it:
// - the model calls only the Edge's tools: they run, in parallel, each
//   with its deadline; the assistant message and one `tool` message per
//   call are appended and the model is asked again, up to
//   plugins.max_tool_rounds times;
// - anything else is the final answer, and goes to the client as any
//   answer does (through the encoder filters: the usage filter counts it),
//   with `usage` summed over the rounds; calls of the client's own tools
//   reach the client (the Edge's calls of that round are left out of it).
// Which tools: those of plugins that apply to the model (manifest or
// valves `models`) and that the client's `tools` setting allows.
// Streamed, a round is held until its first delta says what it is:
// content streams on at once, tool calls are assembled and nothing of
// them reaches the client (but, with plugins.stream_tool_events or the
// request header `x-eldric-tool-events: on`, an SSE comment naming the
// tool that runs). A tool that fails, times out or is
// given arguments that are not JSON answers the model with an error text,
// never the client. Requests with no tool to offer pass through untouched.

#include <rapidjson/document.h>

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/http/async_stream.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/sse.h"
#include "filters/plugins/runtime.h"
#include "filters/tools/tool_calls.h"

namespace eldric::filters::tools {

// What rewriting one streamed event of the final answer needs.
struct ChunkRewrite {
  // Per tool-call index of the round: its new index, or -1 to leave it out
  // (a call of the Edge's tools beside the client's).
  std::vector<int> index_map;
  // The first round's completion id, given to every chunk ("": keep).
  std::string id;
  // Tokens of the earlier rounds, added to the chunk's `usage`.
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  // Calls seen so far, as ToolCallAssembler counts them: a piece without
  // an index is the next call. The chunks of a round go through one
  // ChunkRewrite in order.
  size_t calls_seen = 0;
};

// Applies `rw` to one parsed chunk (the round's chunks in order, error
// events aside). False when nothing is left of it to send (it only
// carried calls that are left out).
bool rewriteChunk(rapidjson::Document& chunk, ChunkRewrite& rw);

// The name a plugin's method is offered under: `<plugin id>__<method>`,
// with what a function name may not hold (OpenAI: [A-Za-z0-9_-]{1,64})
// replaced by '_', at most 64 bytes.
std::string functionName(std::string_view plugin_id, std::string_view method);

class ToolsFilter : public http::StreamDecoderFilter,
                    public http::AsyncStreamCallbacks,
                    public http::DownstreamWatermarkCallbacks {
 public:
  ToolsFilter(plugins::PluginHost* host, const http::FilterState& worker_locals)
      : host_(host), worker_locals_(worker_locals) {}
  ~ToolsFilter() override;

  // StreamDecoderFilter
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

  // AsyncStreamCallbacks: a round's answer.
  void onAsyncHeaders(http::ResponseHeaders& headers, bool end_stream) override;
  void onAsyncData(Buffer& data, bool end_stream) override;
  void onAsyncReset(std::string_view reason) override;

  // DownstreamWatermarkCallbacks: passed on to the round in progress.
  void onAboveWriteBufferHighWatermark() override;
  void onBelowWriteBufferLowWatermark() override;

 private:
  struct Offered {
    std::string name;  // as the model sees it
    std::string plugin_id;
    std::string method;
  };
  // One call of the Edge's tools, in flight or answered.
  struct Run : plugins::CallObserver {
    ToolsFilter* owner = nullptr;
    ToolCall call;
    const Offered* offered = nullptr;
    plugins::PluginSpecSharedPtr spec;
    plugins::PluginProcess* process = nullptr;  // while the call is in flight
    uint64_t call_id = 0;
    uint64_t started_ns = 0;
    bool done = false;
    std::string content;  // the `tool` message for the model

    void onReply(plugins::RpcMessage& reply) override;
    void onFailure(plugins::CallFailure failure, const std::string& why) override;
    void finish(plugins::Outcome outcome, std::string text);
  };
  // How a round's answer is being handled.
  enum class Mode {
    Collect,      // a whole JSON answer, read before deciding
    Undecided,    // streamed, nothing told yet what it is
    Hold,         // streamed, calls tools: held
    Forward,      // streamed, content: on to the client as it comes
    Passthrough,  // not an answer the loop reads (an error): as it is
    Discard,      // not readable, and the client already has a stream head
  };

  void startRound();
  bool onEvent(std::string_view event);
  void emit(std::string_view event);
  void emitRewritten(std::string_view event, ChunkRewrite& rw);
  void sendHead();
  void onStreamEnd();
  void onWholeAnswer();
  // The model called the Edge's tools and no other: run them.
  void runTools(std::vector<ToolCall> calls, std::string text);
  void onRunDone();
  void continueAfterTools();
  bool isOffered(std::string_view name) const;
  const Offered* offered(std::string_view name) const;
  // Ends the request with an OpenAI-shaped error (an SSE error event once
  // the client has a stream head).
  void fail(int status, const char* code, const std::string& message);
  void endClientStream();
  void retireRound();
  void addUsage(const rapidjson::Value& doc);

  plugins::PluginHost* host_;
  const http::FilterState& worker_locals_;
  http::DecoderFilterCallbacks* decoder_ = nullptr;
  http::RequestHeaders* request_headers_ = nullptr;
  bool active_ = false;
  bool finished_ = false;
  rapidjson::Document request_;  // the body as it grows, round by round
  std::string model_;
  bool stream_ = false;
  bool stream_events_ = false;
  uint32_t max_rounds_ = 5;
  // plugins.max_tool_result_kb (a tool's answer, a round's text) and
  // max_tool_answer_kb (what is read or held of the model's answer).
  size_t max_result_ = 1u << 20;
  size_t max_answer_ = 8u << 20;
  std::string user_json_;
  std::vector<Offered> offered_;

  // Rounds.
  http::AsyncStreamPtr round_;
  uint32_t rounds_ = 0;                                 // asked of the model
  uint32_t tool_rounds_ = 0;                            // ran tools
  uint64_t prompt_tokens_ = 0, completion_tokens_ = 0;  // of rounds before this one
  std::string completion_id_;
  bool above_watermark_ = false;
  bool head_sent_ = false;
  http::ResponseHeadersPtr round_head_;
  Mode mode_ = Mode::Collect;
  std::string collected_;  // Collect: the answer so far
  http::SseSplitter splitter_{max_answer_};
  ToolCallAssembler assembler_;
  std::vector<std::string> held_;
  size_t held_bytes_ = 0;
  // The round's content, for its assistant message: what the model said
  // before its calls, kept up to max_result_ (it goes into the request, as
  // a tool's answer does); full once a piece was cut.
  std::string round_text_;
  bool round_text_full_ = false;
  std::string round_error_;
  uint64_t round_prompt_ = 0, round_completion_ = 0;

  // Tools of the round in progress.
  std::vector<std::unique_ptr<Run>> runs_;
  bool starting_runs_ = false;
  TimerPtr next_round_;
};

// The factory for the "tools" registry entry.
http::FilterFactory makeFactory();

}  // namespace eldric::filters::tools
