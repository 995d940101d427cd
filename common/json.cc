#include "common/json.h"

#include <rapidjson/error/en.h>
#include <rapidjson/stringbuffer.h>
#include <rapidjson/writer.h>

#include <algorithm>
#include <cstring>
#include <vector>

namespace eldric::json {

uint32_t nestingDepth(std::string_view text, uint32_t limit) {
  uint32_t depth = 0;
  uint32_t deepest = 0;
  const char* p = text.data();
  const char* end = p + text.size();
  while (p < end) {
    char c = *p++;
    if (c == '"') {
      // Skip the string: to the next quote not escaped by a backslash.
      while (p < end) {
        const char* q = static_cast<const char*>(memchr(p, '"', static_cast<size_t>(end - p)));
        if (!q) return deepest;
        size_t backslashes = 0;
        for (const char* b = q; b > p && b[-1] == '\\'; --b) ++backslashes;
        p = q + 1;
        if (backslashes % 2 == 0) break;
      }
    } else if (c == '[' || c == '{') {
      if (++depth > deepest) {
        deepest = depth;
        if (deepest > limit) return deepest;
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

bool findDuplicateKey(const rapidjson::Value& root, std::string* name) {
  std::vector<const rapidjson::Value*> todo{&root};
  std::vector<std::string_view> keys;
  while (!todo.empty()) {
    const rapidjson::Value* v = todo.back();
    todo.pop_back();
    if (v->IsArray()) {
      for (const auto& e : v->GetArray()) {
        if (e.IsArray() || e.IsObject()) todo.push_back(&e);
      }
      continue;
    }
    if (!v->IsObject()) continue;
    keys.clear();
    for (const auto& m : v->GetObject()) {
      keys.emplace_back(m.name.GetString(), m.name.GetStringLength());
      if (m.value.IsArray() || m.value.IsObject()) todo.push_back(&m.value);
    }
    if (keys.size() < 2) continue;
    std::sort(keys.begin(), keys.end());
    auto dup = std::adjacent_find(keys.begin(), keys.end());
    if (dup != keys.end()) {
      if (name) name->assign(dup->data(), dup->size());
      return true;
    }
  }
  return false;
}

namespace {

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The code unit of the \u escape at `at` (its backslash), or -1.
int escapeAt(std::string_view text, size_t at) {
  if (at + 6 > text.size() || text[at] != '\\' || text[at + 1] != 'u') return -1;
  int v = 0;
  for (size_t i = at + 2; i < at + 6; ++i) {
    int h = hexValue(text[i]);
    if (h < 0) return -1;
    v = v * 16 + h;
  }
  return v;
}

// A \uDC00-\uDFFF escape that does not follow a \uD800-\uDBFF one: RapidJSON
// 1.1 takes it and stores the surrogate's three bytes, which are not UTF-8,
// so the document would not serialize back to valid JSON (found by
// tool_stream_fuzz). A high surrogate without its low half is refused by
// RapidJSON itself. Only texts holding "\u" are scanned past a memmem.
bool loneLowSurrogate(std::string_view text) {
  size_t at = 0;
  while (at + 1 < text.size()) {
    const void* q = memmem(text.data() + at, text.size() - at, "\\u", 2);
    if (!q) return false;
    size_t i = static_cast<size_t>(static_cast<const char*>(q) - text.data());
    // An escape only if its backslash is not itself escaped.
    size_t run = 0;
    for (size_t b = i; b > 0 && text[b - 1] == '\\'; --b) ++run;
    at = i + 2;
    if (run % 2 != 0) continue;
    int v = escapeAt(text, i);
    if (v < 0xDC00 || v > 0xDFFF) continue;
    int before = i >= 6 ? escapeAt(text, i - 6) : -1;
    if (before < 0xD800 || before > 0xDBFF) return true;
  }
  return false;
}

template <unsigned kFlags>
void parseWith(rapidjson::Document& doc, std::string_view text) {
  doc.Parse<kFlags | rapidjson::kParseIterativeFlag | rapidjson::kParseValidateEncodingFlag>(
      text.data(), text.size());
}

}  // namespace

bool parse(rapidjson::Document& doc, std::string_view text, std::string* error,
           const ParseOptions& options, size_t* error_offset) {
  if (error_offset) *error_offset = 0;
  uint32_t depth = nestingDepth(text, options.max_depth);
  if (depth > options.max_depth) {
    doc.SetNull();
    if (error)
      *error =
          "not accepted: JSON nested deeper than " + std::to_string(options.max_depth) + " levels";
    return false;
  }
  if (options.relaxed) {
    parseWith<rapidjson::kParseCommentsFlag | rapidjson::kParseTrailingCommasFlag>(doc, text);
  } else {
    parseWith<rapidjson::kParseNoFlags>(doc, text);
  }
  if (!doc.HasParseError() && loneLowSurrogate(text)) {
    doc.SetNull();
    if (error) *error = "not valid JSON: a \\u escape of a lone UTF-16 low surrogate";
    return false;
  }
  if (doc.HasParseError()) {
    if (error_offset) *error_offset = doc.GetErrorOffset();
    if (error) {
      *error = std::string("not valid JSON: ") + rapidjson::GetParseError_En(doc.GetParseError()) +
               " (at byte " + std::to_string(doc.GetErrorOffset()) + ")";
    }
    return false;
  }
  std::string dup;
  if (options.reject_duplicate_keys && findDuplicateKey(doc, &dup)) {
    if (error) {
      // The member's name, not its value: names are the schema's, but a
      // long or odd one is cut and escaped-free.
      std::string shown;
      for (char c : dup.substr(0, 64))
        shown += (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? c : '?';
      *error = "not accepted: duplicate JSON member \"" + shown + "\"";
    }
    return false;
  }
  return true;
}

std::string serialize(const rapidjson::Value& value) {
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  value.Accept(w);
  return std::string(sb.GetString(), sb.GetSize());
}

bool validUtf8(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;  // a continuation byte first, C0/C1, or F5-FF
    }
    if (static_cast<size_t>(end - p) <= n) return false;
    for (size_t i = 1; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    // Overlong forms, UTF-16 surrogates, past U+10FFFF.
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    p += n + 1;
  }
  return true;
}

}  // namespace eldric::json
