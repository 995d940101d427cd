// Valves checked against the schema a running plugin reported (pydantic v1
// and v2 shapes, and the host's for a plain class).

#include <gtest/gtest.h>

#include <string>

#include "filters/plugins/valves.h"

namespace eldric::filters::plugins {
namespace {

// What pydantic 1.10 says of
//   class Valves(BaseModel):
//       priority: int = 0
//       replacement: str = "[redacted]"
//       ratio: float = 0.5
//       words: Optional[List[str]] = None
//       mode: Mode = Mode.fast      (an Enum)
//       api_key: str               (required)
constexpr const char* kV1 = R"({"title":"Valves","type":"object","properties":{
  "priority":{"title":"Priority","default":0,"type":"integer"},
  "replacement":{"title":"Replacement","default":"[redacted]","type":"string"},
  "ratio":{"title":"Ratio","default":0.5,"type":"number"},
  "words":{"title":"Words","type":"array","items":{"type":"string"}},
  "mode":{"default":"fast","allOf":[{"$ref":"#/definitions/Mode"}]},
  "api_key":{"title":"Api Key","type":"string"}},
  "required":["api_key"],
  "definitions":{"Mode":{"title":"Mode","enum":["fast","slow"],"type":"string"}}})";

// pydantic 2: Optional as anyOf with null, enums under $defs.
constexpr const char* kV2 = R"({"properties":{
  "words":{"anyOf":[{"items":{"type":"string"},"type":"array"},{"type":"null"}],"default":null},
  "mode":{"$ref":"#/$defs/Mode","default":"fast"}},
  "$defs":{"Mode":{"enum":["fast","slow"],"type":"string"}},"type":"object"})";

bool check(const char* schema, const std::string& valves, std::string* error = nullptr,
           std::string* field = nullptr) {
  std::string e, f;
  bool ok = validateValves(schema, valves, &e, &f);
  if (error) *error = e;
  if (field) *field = f;
  return ok;
}

TEST(PluginValvesTest, ValuesOfTheRightTypesPass) {
  EXPECT_TRUE(check(kV1, R"({"api_key":"k","priority":3,"ratio":1,"words":["a"],"mode":"slow"})"));
  EXPECT_TRUE(check(kV2, R"({"words":null,"mode":"fast"})"));
  EXPECT_TRUE(check(kV2, R"({"words":["x"]})"));
}

TEST(PluginValvesTest, AnUnknownFieldIsNamed) {
  std::string error, field;
  EXPECT_FALSE(check(kV1, R"({"api_key":"k","colour":"red"})", &error, &field));
  EXPECT_EQ(field, "colour");
  EXPECT_NE(error.find("\"colour\""), std::string::npos);
}

TEST(PluginValvesTest, AWrongTypeIsNamedWithoutQuotingTheValue) {
  std::string error, field;
  EXPECT_FALSE(check(kV1, R"({"api_key":"k","priority":"sekrit-value"})", &error, &field));
  EXPECT_EQ(field, "priority");
  EXPECT_NE(error.find("integer"), std::string::npos);
  EXPECT_EQ(error.find("sekrit-value"), std::string::npos);
  EXPECT_FALSE(check(kV1, R"({"api_key":"k","priority":1.5})", nullptr, &field));
  EXPECT_FALSE(check(kV2, R"({"words":"not a list"})", nullptr, &field));
  EXPECT_EQ(field, "words");
}

TEST(PluginValvesTest, ListsAndMapsAreCheckedInside) {
  // Dict[str, str] and List[int], as pydantic describes them.
  constexpr const char* kNested = R"({"type":"object","properties":{
    "replacements":{"type":"object","additionalProperties":{"type":"string"}},
    "sizes":{"type":"array","items":{"type":"integer"}}}})";
  std::string error, field;
  EXPECT_TRUE(check(kNested, R"({"replacements":{"a":"b"},"sizes":[1,2]})"));
  EXPECT_FALSE(check(kNested, R"({"replacements":{"tok2":["not","a","string"]}})", &error, &field));
  EXPECT_EQ(field, "replacements");
  EXPECT_NE(error.find("tok2"), std::string::npos) << error;
  EXPECT_FALSE(check(kNested, R"({"sizes":[1,"two"]})", nullptr, &field));
  EXPECT_EQ(field, "sizes");
}

TEST(PluginValvesTest, EnumsAreCheckedThroughReferences) {
  std::string field;
  EXPECT_FALSE(check(kV1, R"({"api_key":"k","mode":"warp"})", nullptr, &field));
  EXPECT_EQ(field, "mode");
  EXPECT_FALSE(check(kV2, R"({"mode":"warp"})", nullptr, &field));
}

TEST(PluginValvesTest, ARequiredFieldLeftOutIsNamed) {
  std::string field;
  EXPECT_FALSE(check(kV1, R"({"priority":1})", nullptr, &field));
  EXPECT_EQ(field, "api_key");
}

TEST(PluginValvesTest, NoSchemaOrNotAnObjectIsNotThisChecksToRefuse) {
  EXPECT_TRUE(check("", R"({"anything":1})"));
  EXPECT_TRUE(check("{}", R"({"anything":1})"));
  EXPECT_TRUE(check(kV1, "[1]"));
  EXPECT_TRUE(check(kV1, "{bad json"));
  // A schema that is not JSON (plugin code wrote it) accepts, it does not crash.
  EXPECT_TRUE(check("{\"properties\":", R"({"a":1})"));
}

}  // namespace
}  // namespace eldric::filters::plugins
