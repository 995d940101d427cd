// What the tools filter does to the final answer's chunks (rewriteChunk)
// and the names it offers tools under; the loop itself runs end to end in
// test/e2e/tools.test.mjs.

#include "filters/tools/tools_filter.h"

#include <gtest/gtest.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include "common/json.h"

namespace eldric::filters::tools {
namespace {

std::string rewrite(const std::string& text, ChunkRewrite& rw, bool* kept) {
  rapidjson::Document d;
  std::string error;
  EXPECT_TRUE(json::parse(d, text, &error)) << error;
  *kept = rewriteChunk(d, rw);
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  d.Accept(w);
  return sb.GetString();
}

TEST(ToolsFilterTest, TheEdgesCallsAreLeftOutAndTheClientsRenumbered) {
  ChunkRewrite rw;
  rw.index_map = {-1, 0};  // call 0 is the Edge's, call 1 the client's
  bool kept = false;
  EXPECT_EQ(
      rewrite(
          R"({"id":"b","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"k","function":{"name":"calc"}}]}}]})",
          rw, &kept),
      R"({"id":"b","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"k","function":{"name":"calc"}}]}}]})");
  EXPECT_TRUE(kept);
  // A chunk with nothing but the Edge's call is not sent.
  rewrite(
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]})",
      rw, &kept);
  EXPECT_FALSE(kept);
  // ... unless it also ends the answer.
  rewrite(
      R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0}]},"finish_reason":"tool_calls"}]})",
      rw, &kept);
  EXPECT_TRUE(kept);
}

TEST(ToolsFilterTest, UsageIsSummedAndTheIdKept) {
  ChunkRewrite rw;
  rw.id = "chatcmpl-first";
  rw.prompt_tokens = 10;
  rw.completion_tokens = 5;
  bool kept = false;
  EXPECT_EQ(
      rewrite(
          R"({"id":"chatcmpl-third","choices":[],"usage":{"prompt_tokens":30,"completion_tokens":7,"total_tokens":37}})",
          rw, &kept),
      R"({"id":"chatcmpl-first","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":12,"total_tokens":52}})");
  EXPECT_TRUE(kept);
  // Anything else passes as it is: not an object, no choices, odd shapes.
  for (const char* odd : {R"([1,2])", R"({"choices":"x"})", R"({"choices":[{"delta":3}]})",
                          R"({"choices":[{"delta":{"tool_calls":5}}]})", R"({"usage":[]})"}) {
    ChunkRewrite none;
    rewrite(odd, none, &kept);
    EXPECT_TRUE(kept) << odd;
  }
}

// Found by tool_stream_fuzz: a piece without an index is the next call, as
// the assembler reads it, not one to leave out.
TEST(ToolsFilterTest, PiecesWithoutAnIndexAreTheNextCall) {
  ChunkRewrite rw;
  rw.index_map = {-1, 0};  // the Edge's call, then the client's
  bool kept = false;
  rewrite(
      R"({"choices":[{"delta":{"tool_calls":[{"id":"e","function":{"name":"weather__lookup","arguments":"{}"}}]}}]})",
      rw, &kept);
  EXPECT_FALSE(kept);
  EXPECT_EQ(
      rewrite(
          R"({"choices":[{"delta":{"tool_calls":[{"index":null,"id":"k","function":{"name":"calc"}}]}}]})",
          rw, &kept),
      R"({"choices":[{"delta":{"tool_calls":[{"index":null,"id":"k","function":{"name":"calc"}}]}}]})");
  EXPECT_TRUE(kept);
  EXPECT_EQ(rw.calls_seen, 2u);
  // An error event is not a chunk of the answer: left as it is.
  ChunkRewrite fresh;
  fresh.index_map = {-1};
  rewrite(R"({"error":{"message":"x"},"choices":[{"delta":{"tool_calls":[{"index":0}]}}]})", fresh,
          &kept);
  EXPECT_TRUE(kept);
  EXPECT_EQ(fresh.calls_seen, 0u);
}

TEST(ToolsFilterTest, FunctionNamesAreWhatOpenAIAccepts) {
  EXPECT_EQ(functionName("weather", "lookup"), "weather__lookup");
  EXPECT_EQ(functionName("acme.weather-v2", "look_up"), "acme_weather-v2__look_up");
  std::string long_id(80, 'a');
  EXPECT_EQ(functionName(long_id, "m").size(), 64u);
}

}  // namespace
}  // namespace eldric::filters::tools
