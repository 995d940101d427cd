#include "filters/tools/tool_calls.h"

#include <gtest/gtest.h>

#include "common/json.h"

namespace eldric::filters::tools {
namespace {

rapidjson::Document parse(const std::string& text) {
  rapidjson::Document d;
  std::string error;
  EXPECT_TRUE(json::parse(d, text, &error)) << error << ": " << text;
  return d;
}

// OpenAI's streamed shape: two calls, their arguments cut mid-token and
// interleaved, the first piece of each with id and name.
TEST(ToolCallsTest, StreamedPiecesAreAssembledByIndex) {
  ToolCallAssembler a;
  std::string error;
  for (
      const char* chunk : {
          R"({"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather__lookup","arguments":""}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"ci"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","type":"function","function":{"name":"clock__now","arguments":"{}"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"ty\": \"Lyon\"}"}}]}}]})",
          R"({"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]})",
          R"({"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}})",
      }) {
    ASSERT_TRUE(a.addChunk(parse(chunk), &error)) << error << ": " << chunk;
  }
  ASSERT_EQ(a.calls().size(), 2u);
  EXPECT_EQ(a.calls()[0].id, "call_1");
  EXPECT_EQ(a.calls()[0].name, "weather__lookup");
  EXPECT_EQ(a.calls()[0].arguments, R"({"city": "Lyon"})");
  EXPECT_EQ(a.calls()[1].name, "clock__now");
  EXPECT_EQ(a.finishReason(), "tool_calls");
  EXPECT_TRUE(a.complete(&error)) << error;
}

TEST(ToolCallsTest, ContentOnlyAnswersHaveNoCalls) {
  ToolCallAssembler a;
  std::string error;
  ASSERT_TRUE(a.addChunk(parse(R"({"choices":[{"delta":{"content":"Hi"}}]})"), &error));
  ASSERT_TRUE(a.addChunk(parse(R"({"choices":[{"delta":{},"finish_reason":"stop"}]})"), &error));
  ASSERT_TRUE(a.addChunk(parse(R"({"error":{"message":"x"}})"), &error));
  EXPECT_FALSE(a.hasCalls());
  EXPECT_EQ(a.finishReason(), "stop");
}

TEST(ToolCallsTest, BadPiecesAndLimitsAreRefused) {
  Limits small;
  small.max_calls = 2;
  small.max_name_bytes = 8;
  small.max_arguments_bytes = 10;
  struct Case {
    const char* chunk;
    const char* error;
  } cases[] = {
      {R"({"choices":[{"delta":{"tool_calls":{"index":0}}}]})", "not an array"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":-1}]}}]})", "index"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":"0"}]}}]})", "index"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":9223372036854775807}]}}]})", "more than 2"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"much-too-long"}}]}}]})",
       "longer than 8"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":{"a":1}}}]}}]})",
       "not a string"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":"f"}]}}]})", "not an object"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":0,"type":"code"}]}}]})", "type"},
      {R"({"choices":[{"delta":{"tool_calls":[{"index":0,"id":7}]}}]})", "id"},
  };
  for (const auto& c : cases) {
    ToolCallAssembler a(small);
    std::string error;
    EXPECT_FALSE(a.addChunk(parse(c.chunk), &error)) << c.chunk;
    EXPECT_NE(error.find(c.error), std::string::npos) << c.chunk << ": " << error;
    // Spent: nothing more is taken.
    EXPECT_FALSE(a.addChunk(parse(R"({"choices":[{"delta":{}}]})"), &error));
  }
  // Arguments growing past the limit piece by piece.
  ToolCallAssembler a(small);
  std::string error;
  ASSERT_TRUE(a.addChunk(
      parse(
          R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"name":"f","arguments":"123456"}}]}}]})"),
      &error));
  EXPECT_FALSE(a.addChunk(
      parse(
          R"({"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"78901"}}]}}]})"),
      &error));
  // A gap in the indices: the missing call has no name.
  ToolCallAssembler gap;
  ASSERT_TRUE(gap.addChunk(
      parse(R"({"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"name":"f"}}]}}]})"),
      &error));
  EXPECT_FALSE(gap.complete(&error));
  EXPECT_NE(error.find("tool call 0"), std::string::npos) << error;
}

TEST(ToolCallsTest, WholeAnswers) {
  std::vector<ToolCall> calls;
  std::string error;
  ASSERT_TRUE(parseMessageToolCalls(
      parse(R"({"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[
        {"id":"call_a","type":"function","function":{"name":"a__b","arguments":"{\"x\":1}"}},
        {"id":"call_b","type":"function","function":{"name":"c__d","arguments":"{}"}}]},
        "finish_reason":"tool_calls"}]})"),
      Limits(), &calls, &error))
      << error;
  ASSERT_EQ(calls.size(), 2u);
  EXPECT_EQ(calls[0].arguments, R"({"x":1})");
  EXPECT_EQ(calls[1].id, "call_b");
  ASSERT_TRUE(parseMessageToolCalls(parse(R"({"choices":[{"message":{"content":"hi"}}]})"),
                                    Limits(), &calls, &error));
  EXPECT_TRUE(calls.empty());
  EXPECT_FALSE(parseMessageToolCalls(
      parse(R"({"choices":[{"message":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]})"),
      Limits(), &calls, &error));
  EXPECT_NE(error.find("no function name"), std::string::npos) << error;
  EXPECT_FALSE(parseMessageToolCalls(parse(R"({"choices":[{"message":{"tool_calls":[1]}}]})"),
                                     Limits(), &calls, &error));
}

}  // namespace
}  // namespace eldric::filters::tools
