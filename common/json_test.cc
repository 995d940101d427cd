#include "common/json.h"

#include <gtest/gtest.h>

#include <string>

namespace eldric::json {
namespace {

TEST(JsonTest, ParsesAnObject) {
  rapidjson::Document doc;
  std::string error;
  ASSERT_TRUE(parse(doc, R"({"model":"m","messages":[{"role":"user","content":"[{"}]})", &error))
      << error;
  EXPECT_STREQ(doc["model"].GetString(), "m");
}

TEST(JsonTest, DeepNestingIsRefusedWithoutRecursion) {
  // A few hundred thousand '[' overflowed the stack of the recursive
  // parser; this must fail fast and cleanly.
  std::string deep(400000, '[');
  rapidjson::Document doc;
  std::string error;
  EXPECT_FALSE(parse(doc, deep, &error));
  EXPECT_NE(error.find("nested deeper than 64"), std::string::npos) << error;
  std::string objects;
  for (int i = 0; i < 100000; ++i) objects += "{\"a\":";
  EXPECT_FALSE(parse(doc, objects, &error));
}

TEST(JsonTest, DepthLimitIsExact) {
  std::string ok = std::string(64, '[') + std::string(64, ']');
  std::string over = std::string(65, '[') + std::string(65, ']');
  rapidjson::Document doc;
  std::string error;
  EXPECT_TRUE(parse(doc, ok, &error)) << error;
  EXPECT_FALSE(parse(doc, over, &error));
  ParseOptions wide;
  wide.max_depth = 100;
  EXPECT_TRUE(parse(doc, over, &error, wide)) << error;
}

TEST(JsonTest, BracketsInsideStringsDoNotCount) {
  std::string text = "{\"a\":\"" + std::string(1000, '[') + "\\\"" + std::string(1000, '{') + "\"}";
  rapidjson::Document doc;
  std::string error;
  EXPECT_TRUE(parse(doc, text, &error)) << error;
  EXPECT_EQ(nestingDepth(R"(["\\", [[]]])", 10), 3u);
}

TEST(JsonTest, DuplicateKeysAreRefusedAtAnyDepth) {
  rapidjson::Document doc;
  std::string error;
  EXPECT_FALSE(parse(doc, R"({"model":"a","stream":true,"model":"b"})", &error));
  EXPECT_NE(error.find("duplicate JSON member \"model\""), std::string::npos) << error;
  EXPECT_FALSE(parse(doc, R"({"x":[{"k":1,"k":2}]})", &error));
  EXPECT_TRUE(parse(doc, R"({"x":[{"k":1},{"k":2}],"k":3})", &error)) << error;
  ParseOptions lax;
  lax.reject_duplicate_keys = false;
  EXPECT_TRUE(parse(doc, R"({"a":1,"a":2})", &error, lax));
}

TEST(JsonTest, ErrorsNameTheOffsetNotTheText) {
  rapidjson::Document doc;
  std::string error;
  EXPECT_FALSE(parse(doc, R"({"api_key":"sk-secret-value",})", &error));
  EXPECT_EQ(error.find("sk-secret"), std::string::npos) << error;
  EXPECT_NE(error.find("at byte"), std::string::npos) << error;
  EXPECT_FALSE(parse(doc, "\"\xff\"", &error));  // invalid UTF-8
}

TEST(JsonTest, RelaxedAllowsCommentsAndTrailingCommas) {
  rapidjson::Document doc;
  std::string error;
  ParseOptions relaxed;
  relaxed.relaxed = true;
  EXPECT_TRUE(parse(doc, "{\"a\": 1, // note\n \"b\": [1,2,],}", &error, relaxed)) << error;
  EXPECT_FALSE(parse(doc, "{\"a\": 1, // note\n}", &error));
}

}  // namespace
}  // namespace eldric::json

namespace eldric::json {
namespace {

// Found by tool_stream_fuzz: RapidJSON 1.1 took a lone low surrogate
// escape and stored bytes that are not UTF-8, so the document did not
// serialize back to JSON that parses.
TEST(JsonTest, LoneSurrogateEscapesAreRefused) {
  rapidjson::Document d;
  std::string error;
  for (const char* bad : {R"({"a":"\uDC00"})", R"({"a":"x\udfff"})", R"({"\uDDDD":1})",
                          R"({"a":"\\\uDC00"})", R"({"a":"\uD800"})", R"({"a":"\uD800x"})"}) {
    EXPECT_FALSE(parse(d, bad, &error)) << bad;
  }
  EXPECT_NE(error.find("not valid JSON"), std::string::npos) << error;
  for (const char* good : {R"({"a":"\uD83D\uDE00"})", R"({"a":"\\uDC00"})", R"({"a":"\u00e9"})",
                           R"({"a":"\\\\uDC00"})", R"({"a":"uDC00"})"}) {
    EXPECT_TRUE(parse(d, good, &error)) << good << ": " << error;
  }
}

TEST(Utf8, WellFormedTextOnly) {
  EXPECT_TRUE(validUtf8(""));
  EXPECT_TRUE(validUtf8("plain ascii"));
  EXPECT_TRUE(validUtf8("gr\xC3\xBC\xC3\x9F \xE2\x82\xAC \xF0\x9F\x98\x80"));  // ü ß € 😀
  EXPECT_TRUE(validUtf8("\xF4\x8F\xBF\xBF"));                                  // U+10FFFF
  for (const char* bad : {
           "\x80",              // a continuation byte first
           "\xC0\xAF",          // overlong '/'
           "\xE0\x80\xAF",      // overlong, three bytes
           "\xED\xA0\x80",      // a UTF-16 surrogate
           "\xF4\x90\x80\x80",  // past U+10FFFF
           "\xC3",              // cut short
           "\xE2\x82",          // cut short
           "\xFF",
       }) {
    EXPECT_FALSE(validUtf8(bad)) << bad;
  }
}

}  // namespace
}  // namespace eldric::json
