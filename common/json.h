#pragma once

// JSON from outside the process (request bodies, an upstream's events,
// admin REST bodies, config and plugin files) is parsed here and nowhere
// else. RapidJSON's default parser recurses once per nesting level, so a
// body of a few hundred thousand '[' overflows a worker's stack; here the
// nesting is checked before parsing (a linear scan, no allocation), the
// parse is iterative, and duplicate object keys are refused: two "model"
// members would let the Edge check one while the upstream uses the other.

#include <rapidjson/document.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace eldric::json {

struct ParseOptions {
  // Deepest nesting of arrays and objects accepted (1 = a flat object).
  uint32_t max_depth = 64;
  // Refuse an object that names the same member twice (at any depth).
  bool reject_duplicate_keys = true;
  // Config files only: // and /* */ comments and trailing commas.
  bool relaxed = false;
};

inline constexpr uint32_t kDefaultMaxDepth = 64;

// Parses `text` into `doc`. Returns true on success; otherwise false with
// `*error` set to a message that names what is wrong and where (a byte
// offset), worded to follow "the body is " ("not valid JSON: ...",
// "not accepted: duplicate JSON member ..."), never any of the text itself: bodies may hold
// secrets.
// `*error_offset`, if given, is set to the byte the error was found at
// (for a line number).
bool parse(rapidjson::Document& doc, std::string_view text, std::string* error,
           const ParseOptions& options = {}, size_t* error_offset = nullptr);

// The deepest nesting of arrays and objects in `text`, counting only
// brackets outside strings, stopping early once past `limit` (returns
// limit + 1 then). Does not validate.
uint32_t nestingDepth(std::string_view text, uint32_t limit);

// True if `text` is well-formed UTF-8 (no overlong forms, surrogates or
// code points past U+10FFFF): what a JSON string may carry (RFC 8259).
bool validUtf8(std::string_view text);

// `value` as compact JSON text.
std::string serialize(const rapidjson::Value& value);

// True if some object in `value`, at any depth, has two members with the
// same name; `*name` is set to that name. Iterative.
bool findDuplicateKey(const rapidjson::Value& value, std::string* name);

}  // namespace eldric::json
