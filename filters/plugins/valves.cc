#include "filters/plugins/valves.h"

#include <rapidjson/document.h>

#include "common/json.h"

namespace eldric::filters::plugins {

namespace {

// How many $ref / anyOf levels are followed before a value is accepted
// as it is.
constexpr int kMaxSchemaDepth = 8;
// Elements of a list (members of an object) checked against their schema.
constexpr size_t kMaxCheckedElements = 1000;

const rapidjson::Value* resolveRef(const rapidjson::Value& root, const rapidjson::Value& schema) {
  auto ref = schema.FindMember("$ref");
  if (ref == schema.MemberEnd() || !ref->value.IsString()) return &schema;
  std::string_view r(ref->value.GetString(), ref->value.GetStringLength());
  for (std::string_view prefix : {"#/definitions/", "#/$defs/"}) {
    if (r.substr(0, prefix.size()) != prefix) continue;
    std::string_view table = prefix == "#/definitions/" ? "definitions" : "$defs";
    auto defs = root.FindMember(rapidjson::StringRef(table.data(), table.size()));
    if (defs == root.MemberEnd() || !defs->value.IsObject()) return nullptr;
    std::string name(r.substr(prefix.size()));
    auto def = defs->value.FindMember(rapidjson::StringRef(name.data(), name.size()));
    return def == defs->value.MemberEnd() ? nullptr : &def->value;
  }
  return nullptr;
}

bool typeMatches(std::string_view type, const rapidjson::Value& v) {
  if (type == "string") return v.IsString();
  if (type == "integer")
    return v.IsInt64() || v.IsUint64() ||
           (v.IsDouble() &&
            v.GetDouble() == static_cast<double>(static_cast<int64_t>(v.GetDouble())));
  if (type == "number") return v.IsNumber();
  if (type == "boolean") return v.IsBool();
  if (type == "array") return v.IsArray();
  if (type == "object") return v.IsObject();
  if (type == "null") return v.IsNull();
  return true;  // a type this check does not know: the plugin decides
}

// Whether `v` fits `schema` (the subset above). `*expected` says what was
// wanted when it does not.
bool fits(const rapidjson::Value& root, const rapidjson::Value& schema_in,
          const rapidjson::Value& v, int depth, std::string* expected) {
  if (depth > kMaxSchemaDepth || !schema_in.IsObject()) return true;
  const rapidjson::Value* schema = resolveRef(root, schema_in);
  if (!schema || !schema->IsObject()) return true;
  // allOf with one member: pydantic v1's way to point at an enum.
  auto all = schema->FindMember("allOf");
  if (all != schema->MemberEnd() && all->value.IsArray()) {
    for (const auto& s : all->value.GetArray()) {
      if (!fits(root, s, v, depth + 1, expected)) return false;
    }
  }
  for (const char* key : {"anyOf", "oneOf"}) {
    auto any = schema->FindMember(key);
    if (any == schema->MemberEnd() || !any->value.IsArray() || any->value.Empty()) continue;
    bool ok = false;
    std::string first;
    for (const auto& s : any->value.GetArray()) {
      std::string why;
      if (fits(root, s, v, depth + 1, &why)) {
        ok = true;
        break;
      }
      if (first.empty()) first = why;
    }
    if (!ok) {
      *expected = first.empty() ? "another kind of value" : first;
      return false;
    }
  }
  auto en = schema->FindMember("enum");
  if (en != schema->MemberEnd() && en->value.IsArray()) {
    bool found = false;
    for (const auto& e : en->value.GetArray()) {
      if (e == v) found = true;
    }
    if (!found) {
      *expected = "one of the values the plugin lists";
      return false;
    }
  }
  auto type = schema->FindMember("type");
  if (type != schema->MemberEnd()) {
    if (type->value.IsString()) {
      std::string_view t(type->value.GetString(), type->value.GetStringLength());
      if (!typeMatches(t, v)) {
        *expected = "a value of type " + std::string(t);
        return false;
      }
    } else if (type->value.IsArray()) {
      bool ok = false;
      for (const auto& t : type->value.GetArray()) {
        if (t.IsString() && typeMatches(std::string_view(t.GetString(), t.GetStringLength()), v))
          ok = true;
      }
      if (!ok) {
        *expected = "a value of another type";
        return false;
      }
    }
  }
  // Inside lists and objects (List[str], Dict[str, str], nested models).
  if (v.IsArray()) {
    auto items = schema->FindMember("items");
    if (items != schema->MemberEnd() && items->value.IsObject()) {
      size_t n = 0;
      for (const auto& e : v.GetArray()) {
        if (++n > kMaxCheckedElements) break;
        std::string why;
        if (!fits(root, items->value, e, depth + 1, &why)) {
          *expected = "a list whose items are each " + why;
          return false;
        }
      }
    }
  } else if (v.IsObject()) {
    auto props = schema->FindMember("properties");
    auto extra = schema->FindMember("additionalProperties");
    size_t n = 0;
    for (const auto& m : v.GetObject()) {
      if (++n > kMaxCheckedElements) break;
      const rapidjson::Value* sub = nullptr;
      if (props != schema->MemberEnd() && props->value.IsObject()) {
        auto p = props->value.FindMember(m.name);
        if (p != props->value.MemberEnd()) sub = &p->value;
      }
      if (!sub && extra != schema->MemberEnd() && extra->value.IsObject()) sub = &extra->value;
      if (!sub) continue;
      std::string why;
      if (!fits(root, *sub, m.value, depth + 1, &why)) {
        *expected =
            "an object whose \"" +
            std::string(m.name.GetString(), std::min<size_t>(m.name.GetStringLength(), 64)) +
            "\" is " + why;
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool validateValves(std::string_view schema_json, std::string_view valves_json, std::string* error,
                    std::string* field) {
  rapidjson::Document valves;
  std::string why;
  // Whether the body is a JSON object at all is the admin API's answer
  // (invalid_json, invalid_valves), the same with or without a plugin.
  if (!json::parse(valves, valves_json, &why) || !valves.IsObject()) return true;
  rapidjson::Document schema;
  if (schema_json.empty() || !json::parse(schema, schema_json, &why) || !schema.IsObject()) {
    return true;
  }
  auto props = schema.FindMember("properties");
  if (props == schema.MemberEnd() || !props->value.IsObject()) return true;
  for (const auto& m : valves.GetObject()) {
    std::string name(m.name.GetString(), m.name.GetStringLength());
    auto prop = props->value.FindMember(m.name);
    if (prop == props->value.MemberEnd()) {
      *field = name;
      *error = "valves: the plugin has no setting \"" + name + "\"";
      return false;
    }
    std::string expected;
    if (!fits(schema, prop->value, m.value, 0, &expected)) {
      *field = name;
      *error = "valves: \"" + name + "\" must be " + expected;
      return false;
    }
  }
  auto required = schema.FindMember("required");
  if (required != schema.MemberEnd() && required->value.IsArray()) {
    for (const auto& r : required->value.GetArray()) {
      if (!r.IsString() || valves.HasMember(r)) continue;
      *field = std::string(r.GetString(), r.GetStringLength());
      *error = "valves: \"" + *field + "\" is required";
      return false;
    }
  }
  return true;
}

}  // namespace eldric::filters::plugins
