#include "test/unit/fake_stream.h"

#include <algorithm>
#include <utility>

#include "dataplane/http/errors.h"
#include "rapidjson/document.h"

namespace eldric::test {

FakeStream::FakeStream() { request.method = "GET"; }

FakeStream::~FakeStream() {
  destroyFilters();
  // Before the dispatcher goes: a filter may hold a timer on it.
  releaseFilters();
}

Dispatcher& FakeStream::dispatcher() {
  if (!dispatcher_) dispatcher_ = std::make_unique<Dispatcher>();
  return *dispatcher_;
}

std::optional<std::string> FakeStream::responseHeader(std::string_view name) const {
  if (!response_headers) return std::nullopt;
  std::optional<std::string_view> v = response_headers->headers.get(name);
  if (!v) return std::nullopt;
  return std::string(*v);
}

std::optional<FakeStream::OpenAiError> FakeStream::responseError() const {
  rapidjson::Document doc;
  doc.Parse(response_body.data(), response_body.size());
  if (doc.HasParseError() || !doc.IsObject() || doc.MemberCount() != 1 || !doc.HasMember("error") ||
      !doc["error"].IsObject()) {
    return std::nullopt;
  }
  const auto& e = doc["error"];
  if (e.MemberCount() != 4 || !e.HasMember("message") || !e["message"].IsString() ||
      !e.HasMember("type") || !e["type"].IsString() || !e.HasMember("param") ||
      !e["param"].IsNull() || !e.HasMember("code") || !e["code"].IsString()) {
    return std::nullopt;
  }
  return OpenAiError{e["message"].GetString(), e["type"].GetString(), e["code"].GetString()};
}

// ---------------------------------------------------------------------------
// Driving the chain

void FakeStream::addFilters(const http::FilterFactory& factory) { factory(*this); }

void FakeStream::decodeHeaders(bool end_stream) { runDecodeHeaders(end_stream); }

void FakeStream::decodeData(std::string_view body, bool end_stream) {
  Buffer data;
  data.add(body);
  runDecodeData(data, end_stream);
}

void FakeStream::onDecodeHeadersPassedChain(bool end_stream) {
  headers_passed_chain = true;
  if (end_stream) end_stream_passed_chain = true;
}

void FakeStream::onDecodeDataPassedChain(Buffer& data, bool end_stream) {
  body_passed_chain += data.toString();
  data.clear();
  if (end_stream) end_stream_passed_chain = true;
}

void FakeStream::respond(int status, std::string_view body,
                         std::vector<std::pair<std::string, std::string>> headers) {
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = status;
  for (const auto& [name, value] : headers) h->headers.add(name, value);
  encodeHeaders(std::move(h), body.empty());
  if (!body.empty()) {
    Buffer data;
    data.add(body);
    encodeData(data, true);
  }
}

void FakeStream::raiseHighWatermark() {
  above_high_watermark = true;
  onAboveWriteBufferHighWatermark();
}

void FakeStream::lowerBelowLowWatermark() {
  above_high_watermark = false;
  onBelowWriteBufferLowWatermark();
}

// ---------------------------------------------------------------------------
// Calls the filters make: recorded, then as the manager does

void FakeStream::continueDecoding() {
  ++continue_decoding_calls;
  if (on_continue_decoding) on_continue_decoding();
  http::FilterManager::continueDecoding();
}

void FakeStream::continueEncoding() {
  ++continue_encoding_calls;
  if (on_continue_encoding) on_continue_encoding();
  http::FilterManager::continueEncoding();
}

void FakeStream::sendLocalReply(const http::ErrorReply& reply,
                                const std::function<void(http::ResponseHeaders&)>& extra) {
  if (filtersDestroyed()) return;
  if (on_local_reply) on_local_reply(reply);
  size_t index = local_replies.size();
  local_replies.push_back(LocalReply{reply, {}, {}});
  // The headers and body as the manager builds them, before the encoder
  // filters (a reply too late for a status records neither).
  http::FilterManager::sendLocalReply(reply, [&](http::ResponseHeaders& h) {
    if (extra) extra(h);
    local_replies[index].headers = h;
    local_replies[index].body = http::errorBody(
        reply.message, reply.type.empty() ? http::defaultErrorType(reply.status) : reply.type,
        reply.code);
  });
}

void FakeStream::resetStream(std::string_view reason) {
  if (filtersDestroyed()) return;
  resets.emplace_back(reason);
  if (on_reset) on_reset(reason);
  http::FilterManager::resetStream(reason);
}

void FakeStream::injectEncodedData(Buffer& data, bool end_stream) {
  if (filtersDestroyed()) return;
  injected += data.toString();
  http::FilterManager::injectEncodedData(data, end_stream);
}

// ---------------------------------------------------------------------------
// What would reach the codec and the connection

void FakeStream::writeHeaders(http::ResponseHeaders& headers, bool end_stream) {
  response_headers = std::make_unique<http::ResponseHeaders>(headers);
  if (end_stream) response_complete = true;
}

void FakeStream::writeData(Buffer& data, bool end_stream) {
  response_body += data.toString();
  data.clear();
  if (end_stream) response_complete = true;
}

void FakeStream::readDisableConnection(bool disable) {
  read_disabled = disable;
  read_disable_calls.push_back(disable);
}

}  // namespace eldric::test
