#include "dataplane/tunnel_agent/work.h"

#include <rapidjson/document.h>

#include "common/json.h"
#include "dataplane/http/path.h"

namespace eldric::tunnel_agent {

namespace {

bool isIdChar(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-';
}

// A header value: visible ASCII and spaces, nothing that ends a line.
bool safeValue(std::string_view v) {
  for (char c : v) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

bool stringMember(const rapidjson::Value& obj, const char* name, size_t max, std::string* out) {
  auto m = obj.FindMember(name);
  if (m == obj.MemberEnd() || !m->value.IsString() || m->value.GetStringLength() > max) {
    return false;
  }
  out->assign(m->value.GetString(), m->value.GetStringLength());
  return true;
}

}  // namespace

bool isId(std::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    if (!isIdChar(c)) return false;
  }
  return true;
}

bool parseWork(std::string_view json, Work* out, std::string* error) {
  if (json.size() > kMaxWorkBytes) {
    *error = "the poll's answer is larger than the agent reads";
    return false;
  }
  rapidjson::Document doc;
  json::ParseOptions options;
  options.max_depth = 4;
  std::string why;
  if (!json::parse(doc, json, &why, options)) {
    *error = "the poll's answer is " + why;
    return false;
  }
  if (!doc.IsObject()) {
    *error = "the poll's answer is not a JSON object";
    return false;
  }
  Work w;
  if (!stringMember(doc, "id", 64, &w.id) || w.id.empty()) {
    *error = "the poll's answer has no request id";
    return false;
  }
  if (!isId(w.id)) {
    *error = "the poll's request id is not an id";
    return false;
  }
  if (!stringMember(doc, "method", 16, &w.method)) w.method = "POST";
  if (w.method.empty()) {
    *error = "the poll's method is empty";
    return false;
  }
  for (char c : w.method) {
    if (c < 'A' || c > 'Z') {
      *error = "the poll's method is not a method";
      return false;
    }
  }
  if (!stringMember(doc, "path", 4096, &w.path) || w.path.empty() || w.path[0] != '/') {
    *error = "the poll's path is not an origin-form path";
    return false;
  }
  for (char c : w.path) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) {
      *error = "the poll's path has a byte a request line cannot carry";
      return false;
    }
  }
  // In normal form only: no "..", "%2e" or "//" to climb out of the local
  // server's base path.
  std::string normal;
  const char* reason = "";
  if (http::normalizePath(w.path, &normal, &reason) != http::PathResult::Unchanged) {
    *error = "the poll's path is not in normal form";
    return false;
  }
  w.content_type = "application/json";
  auto h = doc.FindMember("headers");
  if (h != doc.MemberEnd()) {
    if (!h->value.IsObject()) {
      *error = "the poll's headers are not an object";
      return false;
    }
    if (h->value.HasMember("content-type") &&
        !stringMember(h->value, "content-type", 256, &w.content_type)) {
      *error = "the poll's content-type is not a short string";
      return false;
    }
    if (h->value.HasMember("accept") && !stringMember(h->value, "accept", 256, &w.accept)) {
      *error = "the poll's accept is not a short string";
      return false;
    }
    if (!safeValue(w.content_type) || !safeValue(w.accept)) {
      *error = "the poll's headers have a byte a header cannot carry";
      return false;
    }
  }
  auto b = doc.FindMember("body");
  if (b != doc.MemberEnd()) {
    if (!b->value.IsString()) {
      *error = "the poll's body is not a string";
      return false;
    }
    w.body.assign(b->value.GetString(), b->value.GetStringLength());
  }
  *out = std::move(w);
  return true;
}

}  // namespace eldric::tunnel_agent
