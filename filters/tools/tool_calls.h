#pragma once

// The model's tool calls, read from an OpenAI chat completion (issue 20:
// the Edge executes the calls that name its own tools). A streamed answer
// gives them in pieces: each chunk's `choices[0].delta.tool_calls` entries
// carry an `index`, and the first piece of a call its `id` and
// `function.name`, the others more of `function.arguments` (a JSON text
// in a string, cut anywhere). A whole answer gives them at once in
// `choices[0].message.tool_calls`. Both are the model's output, relayed by
// a router: untrusted, bounded here (calls per answer, bytes per call's
// name and arguments), never trusted to be well formed.

#include <rapidjson/document.h>

#include <cstddef>
#include <string>
#include <type_traits>
#include <vector>

namespace eldric::filters::tools {

// rapidjson::Value, const when V (a Value or a Document) is.
template <typename V>
using ValueOf = std::conditional_t<std::is_const_v<V>, const rapidjson::Value, rapidjson::Value>;

// v's member `name`, or null (also when v is not an object).
template <typename V>
ValueOf<V>* member(V& v, const char* name) {
  if (!v.IsObject()) return nullptr;
  auto it = v.FindMember(name);
  return it == v.MemberEnd() ? nullptr : &it->value;
}

// choices[0] of an OpenAI completion or chunk when it is an object, or null.
template <typename V>
ValueOf<V>* firstChoice(V& doc) {
  ValueOf<V>* choices = member(doc, "choices");
  if (!choices || !choices->IsArray() || choices->Empty()) return nullptr;
  ValueOf<V>& c = (*choices)[0];
  return c.IsObject() ? &c : nullptr;
}

struct ToolCall {
  std::string id;         // "call_..."; may be empty (some servers omit it)
  std::string name;       // function.name
  std::string arguments;  // function.arguments: JSON text, not checked here
};

struct Limits {
  size_t max_calls = 16;
  size_t max_name_bytes = 128;
  size_t max_arguments_bytes = 64 * 1024;
};

// Assembles the tool calls of one streamed answer (one round), chunk by
// chunk, and notes how the answer ended.
class ToolCallAssembler {
 public:
  explicit ToolCallAssembler(Limits limits = {}) : limits_(limits) {}

  // One parsed SSE chunk. False with `*error` set when a tool-call piece
  // breaks a limit or its shape (an index out of range, a name or
  // arguments that are not strings...); the assembler is then spent.
  // Chunks without tool calls (content, role, usage) are accepted as they
  // are.
  bool addChunk(const rapidjson::Value& chunk, std::string* error);

  // The calls so far, in index order (an index never given is a gap: an
  // entry with an empty name, which complete() refuses).
  const std::vector<ToolCall>& calls() const { return calls_; }
  bool hasCalls() const { return !calls_.empty(); }
  // The first choice's finish_reason once given ("tool_calls", "stop",
  // ...); empty until then.
  const std::string& finishReason() const { return finish_reason_; }
  // Whether every call has a name (what an answer that ended must have).
  bool complete(std::string* error) const;

 private:
  Limits limits_;
  std::vector<ToolCall> calls_;
  std::string finish_reason_;
  bool failed_ = false;
};

// The tool calls of a whole (not streamed) answer's first choice. False
// with `*error` on a shape or limit broken; true with none when the answer
// calls no tool.
bool parseMessageToolCalls(const rapidjson::Value& completion, const Limits& limits,
                           std::vector<ToolCall>* out, std::string* error);

}  // namespace eldric::filters::tools
