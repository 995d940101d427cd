#include "test/unit/fake_stream.h"

#include <algorithm>
#include <utility>

#include "dataplane/http/errors.h"
#include "rapidjson/document.h"

namespace eldric::test {

FakeStream::FakeStream() { request.method = "GET"; }

FakeStream::~FakeStream() { destroyFilters(); }

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
// Building the chain

void FakeStream::addFilters(const http::FilterFactory& factory) { factory(*this); }

void FakeStream::addDecoderFilter(http::StreamDecoderFilterPtr filter) {
  filter->setDecoderFilterCallbacks(*this);
  decoders_.push_back(filter.get());
  owned_.push_back(std::shared_ptr<http::StreamDecoderFilter>(std::move(filter)));
}

void FakeStream::addEncoderFilter(http::StreamEncoderFilterPtr filter) {
  filter->setEncoderFilterCallbacks(*this);
  // Encoders run in reverse order of addition, as in the manager.
  encoders_.insert(encoders_.begin(), filter.get());
  owned_.push_back(std::shared_ptr<http::StreamEncoderFilter>(std::move(filter)));
}

void FakeStream::addStreamFilter(std::shared_ptr<http::StreamDecoderFilter> decoder,
                                 std::shared_ptr<http::StreamEncoderFilter> encoder) {
  decoder->setDecoderFilterCallbacks(*this);
  encoder->setEncoderFilterCallbacks(*this);
  decoders_.push_back(decoder.get());
  encoders_.insert(encoders_.begin(), encoder.get());
  owned_.push_back(std::move(decoder));
  owned_.push_back(std::move(encoder));
}

// ---------------------------------------------------------------------------
// Decoding

void FakeStream::decodeHeaders(bool end_stream) {
  request_complete_ = end_stream;
  iterateDecodeHeaders(0);
}

void FakeStream::iterateDecodeHeaders(size_t from) {
  for (size_t i = from; i < decoders_.size(); ++i) {
    bool end = request_complete_ && decode_buffered_.empty();
    http::FilterHeadersStatus st = decoders_[i]->decodeHeaders(request, end);
    if (decode_done_ || destroyed_) return;
    if (st == http::FilterHeadersStatus::StopIteration) {
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = true;
      return;
    }
  }
  headers_passed_chain = true;
  if (request_complete_ && decode_buffered_.empty()) end_stream_passed_chain = true;
}

void FakeStream::decodeData(std::string_view body, bool end_stream) {
  Buffer data;
  data.add(body);
  info.request_body_bytes += data.length();
  request_complete_ = end_stream;
  if (decode_done_ || destroyed_) return;
  iterateDecodeData(0, data, end_stream);
}

void FakeStream::iterateDecodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < decoders_.size(); ++i) {
    if (i == decode_stopped_at_) {
      decode_buffered_.move(data);
      if (decode_buffering_ && end_stream) {
        decode_stopped_at_ = kNone;
        decode_buffering_ = false;
        http::FilterDataStatus st = decoders_[i]->decodeData(decode_buffered_, true);
        if (decode_done_ || destroyed_) return;
        if (st == http::FilterDataStatus::Continue) {
          Buffer body;
          body.move(decode_buffered_);
          iterateDecodeData(i + 1, body, true);
        } else {
          decode_stopped_at_ = i;
        }
      }
      return;
    }
    http::FilterDataStatus st = decoders_[i]->decodeData(data, end_stream);
    if (decode_done_ || destroyed_) return;
    if (st == http::FilterDataStatus::Continue) continue;
    if (st == http::FilterDataStatus::StopIterationAndBuffer) {
      decode_buffered_.move(data);
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = !end_stream;
      return;
    }
    if (end_stream) {
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = false;
    }
    return;
  }
  body_passed_chain += data.toString();
  data.clear();
  if (end_stream) end_stream_passed_chain = true;
}

void FakeStream::continueDecoding() {
  ++continue_decoding_calls;
  if (on_continue_decoding) on_continue_decoding();
  if (decode_stopped_at_ == kNone || decode_done_ || destroyed_) return;
  size_t i = decode_stopped_at_;
  bool in_headers = decode_stopped_in_headers_;
  decode_stopped_at_ = kNone;
  decode_stopped_in_headers_ = false;
  decode_buffering_ = false;
  if (in_headers) {
    iterateDecodeHeaders(i + 1);
    if (decode_done_ || destroyed_ || decode_stopped_at_ != kNone) return;
    // Body that arrived while stopped: the filter that stopped has not
    // seen it yet.
    if (!decode_buffered_.empty()) {
      Buffer body;
      body.move(decode_buffered_);
      iterateDecodeData(i, body, request_complete_);
    }
    return;
  }
  Buffer body;
  body.move(decode_buffered_);
  iterateDecodeData(i + 1, body, request_complete_);
}

void FakeStream::sendLocalReply(const http::ErrorReply& reply,
                                const std::function<void(http::ResponseHeaders&)>& extra) {
  if (destroyed_) return;
  LocalReply recorded{reply, {}, {}};
  if (on_local_reply) on_local_reply(reply);
  if (response_headers_encoded_) {
    local_replies.push_back(std::move(recorded));
    resetStream(reply.code);
    return;
  }
  decode_done_ = true;
  info.error_code = reply.code;
  auto headers = std::make_unique<http::ResponseHeaders>();
  headers->status = reply.status;
  headers->headers.add("content-type", "application/json");
  std::string body = http::errorBody(
      reply.message, reply.type.empty() ? http::defaultErrorType(reply.status) : reply.type,
      reply.code);
  headers->headers.add("content-length", std::to_string(body.size()));
  if (extra) extra(*headers);
  recorded.headers = *headers;
  recorded.body = body;
  local_replies.push_back(std::move(recorded));
  Buffer data;
  data.add(body);
  encodeHeaders(std::move(headers), false);
  if (!destroyed_) encodeData(data, true);
}

// ---------------------------------------------------------------------------
// Encoding

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

void FakeStream::encodeHeaders(http::ResponseHeadersPtr headers, bool end_stream) {
  if (destroyed_ || response_headers_encoded_) return;
  response_ = std::move(headers);
  encode_end_seen_ = end_stream;
  iterateEncodeHeaders(0);
}

void FakeStream::iterateEncodeHeaders(size_t from) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    http::FilterHeadersStatus st =
        encoders_[i]->encodeHeaders(*response_, encode_end_seen_ && encode_buffered_.empty());
    if (destroyed_) return;
    if (st == http::FilterHeadersStatus::StopIteration) {
      encode_stopped_at_ = i;
      encode_stopped_in_headers_ = true;
      return;
    }
  }
  response_headers_encoded_ = true;
  writeHeaders(encode_end_seen_ && encode_buffered_.empty());
  if (!destroyed_ && !encode_buffered_.empty()) {
    Buffer body;
    body.move(encode_buffered_);
    writeData(body, encode_end_seen_);
  }
}

void FakeStream::encodeData(Buffer& data, bool end_stream) {
  if (destroyed_ || response_complete) {
    data.clear();
    return;
  }
  encode_end_seen_ = end_stream;
  if (encode_stopped_at_ != kNone && encode_stopped_in_headers_) {
    encode_buffered_.move(data);
    return;
  }
  iterateEncodeData(0, data, end_stream);
}

void FakeStream::iterateEncodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    if (i == encode_stopped_at_) {
      encode_buffered_.move(data);
      if (encode_buffering_ && end_stream) {
        encode_stopped_at_ = kNone;
        encode_buffering_ = false;
        http::FilterDataStatus st = encoders_[i]->encodeData(encode_buffered_, true);
        if (destroyed_) return;
        if (st == http::FilterDataStatus::Continue) {
          Buffer body;
          body.move(encode_buffered_);
          iterateEncodeData(i + 1, body, true);
        } else {
          encode_stopped_at_ = i;
        }
      }
      return;
    }
    http::FilterDataStatus st = encoders_[i]->encodeData(data, end_stream);
    if (destroyed_) return;
    if (st == http::FilterDataStatus::Continue) continue;
    if (st == http::FilterDataStatus::StopIterationAndBuffer) {
      encode_buffered_.move(data);
      encode_stopped_at_ = i;
      encode_stopped_in_headers_ = false;
      encode_buffering_ = !end_stream;
      return;
    }
    if (end_stream) encode_stopped_at_ = i;
    return;
  }
  writeData(data, end_stream);
}

void FakeStream::continueEncoding() {
  ++continue_encoding_calls;
  if (on_continue_encoding) on_continue_encoding();
  if (encode_stopped_at_ == kNone || destroyed_) return;
  size_t i = encode_stopped_at_;
  bool in_headers = encode_stopped_in_headers_;
  encode_stopped_at_ = kNone;
  encode_stopped_in_headers_ = false;
  encode_buffering_ = false;
  if (in_headers) {
    iterateEncodeHeaders(i + 1);
    return;
  }
  Buffer body;
  body.move(encode_buffered_);
  iterateEncodeData(i + 1, body, encode_end_seen_);
}

void FakeStream::injectEncodedData(Buffer& data, bool end_stream) {
  if (destroyed_) return;
  injected += data.toString();
  writeData(data, end_stream);
}

void FakeStream::writeHeaders(bool end_stream) {
  info.status = response_->status;
  if (!info.request_id.empty() && !response_->headers.get("x-request-id")) {
    response_->headers.add("x-request-id", info.request_id);
  }
  if (end_stream) response_complete = true;
  response_headers = std::move(response_);
}

void FakeStream::writeData(Buffer& data, bool end_stream) {
  if (response_complete) {
    data.clear();
    return;
  }
  info.response_body_bytes += data.length();
  response_body += data.toString();
  data.clear();
  if (end_stream) response_complete = true;
}

// ---------------------------------------------------------------------------
// Connection-level calls

void FakeStream::readDisableDownstream(bool disable) {
  if (destroyed_ || disable == read_disabled) return;
  connectionReadDisable(disable);
}

void FakeStream::connectionReadDisable(bool disable) {
  read_disabled = disable;
  read_disable_calls.push_back(disable);
}

void FakeStream::addDownstreamWatermarkCallbacks(http::DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks.push_back(&cb);
  if (above_high_watermark) cb.onAboveWriteBufferHighWatermark();
}

void FakeStream::removeDownstreamWatermarkCallbacks(http::DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks.erase(
      std::remove(watermark_callbacks.begin(), watermark_callbacks.end(), &cb),
      watermark_callbacks.end());
}

void FakeStream::raiseHighWatermark() {
  above_high_watermark = true;
  for (auto* cb : watermark_callbacks) cb->onAboveWriteBufferHighWatermark();
}

void FakeStream::lowerBelowLowWatermark() {
  above_high_watermark = false;
  for (auto* cb : watermark_callbacks) cb->onBelowWriteBufferLowWatermark();
}

void FakeStream::resetStream(std::string_view reason) {
  if (destroyed_) return;
  resets.emplace_back(reason);
  if (on_reset) on_reset(reason);
  if (info.error_code.empty()) info.error_code = std::string(reason);
  decode_done_ = true;
  destroyFilters();
}

void FakeStream::destroyFilters() {
  if (destroyed_) return;
  destroyed_ = true;
  watermark_callbacks.clear();
  if (read_disabled) connectionReadDisable(false);
  for (http::StreamDecoderFilter* f : decoders_) f->onDestroy();
  for (http::StreamEncoderFilter* f : encoders_) f->onDestroy();
}

}  // namespace eldric::test
