#include "filters/tools/tool_calls.h"

#include <algorithm>
#include <string_view>

namespace eldric::filters::tools {

namespace {

// Appends the string `v` (if any) to `out`, within `max` bytes. False
// (with `*error`) for a value that is not a string or too long.
bool appendString(const rapidjson::Value* v, size_t max, const char* what, std::string* out,
                  std::string* error) {
  if (!v || v->IsNull()) return true;
  if (!v->IsString()) {
    *error = std::string("a tool call's ") + what + " is not a string";
    return false;
  }
  if (out->size() + v->GetStringLength() > max) {
    *error =
        std::string("a tool call's ") + what + " is longer than " + std::to_string(max) + " bytes";
    return false;
  }
  out->append(v->GetString(), v->GetStringLength());
  return true;
}

// One entry of tool_calls (a whole call, or a streamed piece) into `call`.
bool addPiece(const rapidjson::Value& entry, const Limits& limits, ToolCall* call,
              std::string* error) {
  const rapidjson::Value* type = member(entry, "type");
  if (type && !type->IsNull() &&
      !(type->IsString() &&
        std::string_view(type->GetString(), type->GetStringLength()) == "function")) {
    *error = "a tool call of a type other than \"function\"";
    return false;
  }
  const rapidjson::Value* id = member(entry, "id");
  if (id && id->IsString() && call->id.empty()) {
    if (!appendString(id, limits.max_name_bytes, "id", &call->id, error)) return false;
  } else if (id && !id->IsNull() && !id->IsString()) {
    *error = "a tool call's id is not a string";
    return false;
  }
  const rapidjson::Value* fn = member(entry, "function");
  if (!fn || fn->IsNull()) return true;
  if (!fn->IsObject()) {
    *error = "a tool call's function is not an object";
    return false;
  }
  return appendString(member(*fn, "name"), limits.max_name_bytes, "name", &call->name, error) &&
         appendString(member(*fn, "arguments"), limits.max_arguments_bytes, "arguments",
                      &call->arguments, error);
}

}  // namespace

bool ToolCallAssembler::addChunk(const rapidjson::Value& chunk, std::string* error) {
  if (failed_) {
    *error = "the tool calls were already refused";
    return false;
  }
  const rapidjson::Value* choice = firstChoice(chunk);
  if (!choice) return true;  // a usage-only chunk, an error event...
  if (const rapidjson::Value* reason = member(*choice, "finish_reason");
      reason && reason->IsString()) {
    finish_reason_.assign(reason->GetString(), std::min<size_t>(reason->GetStringLength(), 64));
  }
  const rapidjson::Value* delta = member(*choice, "delta");
  const rapidjson::Value* pieces = delta ? member(*delta, "tool_calls") : nullptr;
  if (!pieces || pieces->IsNull()) return true;
  if (!pieces->IsArray()) {
    failed_ = true;
    *error = "delta.tool_calls is not an array";
    return false;
  }
  for (const auto& piece : pieces->GetArray()) {
    const rapidjson::Value* index = member(piece, "index");
    // Without an index (some servers send whole calls), a piece is the
    // next call.
    uint64_t i = calls_.size();
    if (index && index->IsUint64()) {
      i = index->GetUint64();
    } else if (index && !index->IsNull()) {
      failed_ = true;
      *error = "a tool call's index is not a non-negative integer";
      return false;
    }
    if (i >= limits_.max_calls) {
      failed_ = true;
      *error = "more than " + std::to_string(limits_.max_calls) + " tool calls in one answer";
      return false;
    }
    if (i >= calls_.size()) calls_.resize(i + 1);
    if (!addPiece(piece, limits_, &calls_[i], error)) {
      failed_ = true;
      return false;
    }
  }
  return true;
}

bool ToolCallAssembler::complete(std::string* error) const {
  for (size_t i = 0; i < calls_.size(); ++i) {
    if (calls_[i].name.empty()) {
      *error = "tool call " + std::to_string(i) + " has no function name";
      return false;
    }
  }
  return true;
}

bool parseMessageToolCalls(const rapidjson::Value& completion, const Limits& limits,
                           std::vector<ToolCall>* out, std::string* error) {
  out->clear();
  const rapidjson::Value* choice = firstChoice(completion);
  const rapidjson::Value* message = choice ? member(*choice, "message") : nullptr;
  const rapidjson::Value* calls = message ? member(*message, "tool_calls") : nullptr;
  if (!calls || calls->IsNull()) return true;
  if (!calls->IsArray()) {
    *error = "message.tool_calls is not an array";
    return false;
  }
  if (calls->Size() > limits.max_calls) {
    *error = "more than " + std::to_string(limits.max_calls) + " tool calls in one answer";
    return false;
  }
  for (const auto& entry : calls->GetArray()) {
    ToolCall call;
    if (!entry.IsObject()) {
      *error = "a tool call is not an object";
      return false;
    }
    if (!addPiece(entry, limits, &call, error)) return false;
    if (call.name.empty()) {
      *error = "tool call " + std::to_string(out->size()) + " has no function name";
      return false;
    }
    out->push_back(std::move(call));
  }
  return true;
}

}  // namespace eldric::filters::tools
