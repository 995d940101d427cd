// The model's tool calls (filters/tools/tool_calls.h) from untrusted
// bytes: each input line is one SSE chunk's JSON for the streaming
// assembler, and the whole input is also read as a non-streamed answer.
// Checked: the limits hold whatever arrives (calls, name and argument
// bytes), and a refused assembler stays refused.

#include <cstdint>
#include <string>
#include <string_view>

#include "common/json.h"
#include "filters/tools/tool_calls.h"
#include "test/fuzz/fuzz_util.h"

namespace eldric::fuzz {
namespace {

void checkLimits(const std::vector<filters::tools::ToolCall>& calls,
                 const filters::tools::Limits& limits) {
  if (calls.size() > limits.max_calls) abort();
  for (const auto& c : calls) {
    if (c.name.size() > limits.max_name_bytes || c.id.size() > limits.max_name_bytes ||
        c.arguments.size() > limits.max_arguments_bytes)
      abort();
  }
}

void fuzzOne(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  filters::tools::Limits limits;
  limits.max_calls = 4;
  limits.max_name_bytes = 32;
  limits.max_arguments_bytes = 256;
  filters::tools::ToolCallAssembler assembler(limits);
  bool refused = false;
  size_t start = 0;
  while (start <= input.size()) {
    size_t end = input.find('\n', start);
    if (end == std::string_view::npos) end = input.size();
    rapidjson::Document doc;
    std::string error;
    if (json::parse(doc, input.substr(start, end - start), &error)) {
      bool ok = assembler.addChunk(doc, &error);
      if (refused && ok) abort();  // spent means spent
      refused |= !ok;
    }
    checkLimits(assembler.calls(), limits);
    start = end + 1;
  }
  std::string error;
  assembler.complete(&error);
  rapidjson::Document whole;
  if (json::parse(whole, input, &error)) {
    std::vector<filters::tools::ToolCall> calls;
    if (filters::tools::parseMessageToolCalls(whole, limits, &calls, &error)) {
      checkLimits(calls, limits);
      for (const auto& c : calls) {
        if (c.name.empty()) abort();
      }
    }
  }
}

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { eldric::fuzz::fuzzOne(data, size); });
  return 0;
}
