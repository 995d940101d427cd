#include "filters/plugins/rpc.h"

#include "common/json.h"

namespace eldric::filters::plugins {

bool LineSplitter::feed(std::string_view bytes, const std::function<bool(std::string_view)>& line) {
  if (broken_) return false;
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    if (nl == std::string_view::npos) {
      if (partial_.size() + bytes.size() > max_line_) {
        broken_ = true;
        partial_.clear();
        return false;
      }
      partial_.append(bytes);
      return true;
    }
    std::string_view piece = bytes.substr(0, nl);
    bytes.remove_prefix(nl + 1);
    if (partial_.size() + piece.size() > max_line_) {
      broken_ = true;
      partial_.clear();
      return false;
    }
    bool go_on;
    if (partial_.empty()) {
      go_on = line(piece);
    } else {
      partial_.append(piece);
      std::string whole;
      whole.swap(partial_);
      go_on = line(whole);
    }
    if (!go_on) return false;
  }
  return true;
}

namespace {

std::string boundedString(const rapidjson::Value& v, size_t max) {
  if (!v.IsString()) return {};
  std::string s(v.GetString(), std::min<size_t>(v.GetStringLength(), max));
  return s;
}

}  // namespace

bool parseMessage(std::string_view line, RpcMessage* out, std::string* error) {
  std::string why;
  // Plugins send request bodies back: as deep as a client may send.
  if (!json::parse(out->doc, line, &why)) {
    *error = "the message is " + why;
    return false;
  }
  const rapidjson::Value& m = out->doc;
  if (!m.IsObject()) {
    *error = "the message is not a JSON object";
    return false;
  }
  auto jsonrpc = m.FindMember("jsonrpc");
  if (jsonrpc == m.MemberEnd() || !jsonrpc->value.IsString() ||
      std::string_view(jsonrpc->value.GetString(), jsonrpc->value.GetStringLength()) != "2.0") {
    *error = "the message lacks \"jsonrpc\": \"2.0\"";
    return false;
  }
  auto id = m.FindMember("id");
  auto method = m.FindMember("method");
  if (method != m.MemberEnd()) {
    if (id != m.MemberEnd() || !method->value.IsString()) {
      *error = "a plugin may send only notifications, not calls";
      return false;
    }
    out->kind = RpcMessage::Kind::Notification;
    out->method.assign(method->value.GetString(), method->value.GetStringLength());
    auto params = m.FindMember("params");
    if (params != m.MemberEnd()) {
      if (!params->value.IsObject()) {
        *error = "a notification's params must be an object";
        return false;
      }
      out->params = &params->value;
    }
    return true;
  }
  if (id == m.MemberEnd() || !id->value.IsUint64()) {
    *error = "a response needs an integer id";
    return false;
  }
  out->kind = RpcMessage::Kind::Response;
  out->id = id->value.GetUint64();
  auto result = m.FindMember("result");
  auto err = m.FindMember("error");
  if ((result == m.MemberEnd()) == (err == m.MemberEnd())) {
    *error = "a response needs exactly one of result and error";
    return false;
  }
  if (result != m.MemberEnd()) {
    out->ok = true;
    out->result = &result->value;
    return true;
  }
  const rapidjson::Value& e = err->value;
  if (!e.IsObject() || !e.HasMember("code") || !e["code"].IsInt() || !e.HasMember("message") ||
      !e["message"].IsString()) {
    *error = "an error needs an integer code and a string message";
    return false;
  }
  out->ok = false;
  out->error_code = e["code"].GetInt();
  out->error_message = boundedString(e["message"], kMaxErrorMessage);
  auto data = e.FindMember("data");
  if (data != e.MemberEnd() && data->value.IsObject()) {
    auto t = data->value.FindMember("type");
    if (t != data->value.MemberEnd()) out->error_type = boundedString(t->value, 128);
    auto f = data->value.FindMember("field");
    if (f != data->value.MemberEnd()) out->error_field = boundedString(f->value, 128);
  }
  return true;
}

}  // namespace eldric::filters::plugins
