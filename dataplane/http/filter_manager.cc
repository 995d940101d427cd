#include "dataplane/http/filter_manager.h"

#include <algorithm>

#include "dataplane/event/dispatcher.h"
#include "dataplane/http/errors.h"

namespace eldric::http {

void FilterManager::addDecoderFilter(StreamDecoderFilterPtr filter) {
  filter->setDecoderFilterCallbacks(*this);
  decoders_.push_back(filter.get());
  owned_decoders_.push_back(std::move(filter));
}

void FilterManager::addEncoderFilter(StreamEncoderFilterPtr filter) {
  filter->setEncoderFilterCallbacks(*this);
  // Encoders run in reverse order of addition (the last added is nearest
  // to the upstream, as in Envoy).
  encoders_.insert(encoders_.begin(), filter.get());
  owned_encoders_.push_back(std::move(filter));
}

void FilterManager::addStreamFilter(std::shared_ptr<StreamDecoderFilter> decoder,
                                    std::shared_ptr<StreamEncoderFilter> encoder) {
  decoder->setDecoderFilterCallbacks(*this);
  encoder->setEncoderFilterCallbacks(*this);
  decoders_.push_back(decoder.get());
  encoders_.insert(encoders_.begin(), encoder.get());
  owned_shared_.push_back(std::move(decoder));
  owned_shared_.push_back(std::move(encoder));
}

// ---------------------------------------------------------------------------
// Decoding

void FilterManager::runDecodeHeaders(bool end_stream) {
  request_complete_ = end_stream;
  iterateDecodeHeaders(0);
}

void FilterManager::iterateDecodeHeaders(size_t from) {
  RequestHeaders& request = requestForFilters();
  for (size_t i = from; i < decoders_.size(); ++i) {
    bool end = request_complete_ && decode_buffered_.empty();
    FilterHeadersStatus st = decoders_[i]->decodeHeaders(request, end);
    if (decode_done_ || destroyed_) return;
    if (st == FilterHeadersStatus::Continue) continue;
    decode_stopped_at_ = i;
    decode_stopped_in_headers_ = true;
    decode_body_seen_ = false;
    if (st == FilterHeadersStatus::StopAllIterationAndBuffer && !end) {
      decode_buffering_ = true;
      // The body may be complete already (it arrived while an earlier
      // filter held the headers).
      if (request_complete_) decodeBufferedBody(i);
    }
    return;
  }
  onDecodeHeadersPassedChain(request_complete_ && decode_buffered_.empty());
}

void FilterManager::runDecodeData(Buffer& data, bool end_stream) {
  streamInfo().request_body_bytes += data.length();
  request_complete_ = end_stream;
  if (decode_done_ || destroyed_) {
    data.clear();
    return;
  }
  // Filters before a stopped one get the data now; from the stopped one
  // on it waits (buffered) for continueDecoding().
  iterateDecodeData(0, data, end_stream);
}

void FilterManager::iterateDecodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < decoders_.size(); ++i) {
    if (i == decode_stopped_at_) {
      decode_buffered_.move(data);
      if (decode_buffering_ && end_stream) decodeBufferedBody(i);
      return;
    }
    FilterDataStatus st = decoders_[i]->decodeData(data, end_stream);
    if (decode_done_ || destroyed_) return;
    if (st == FilterDataStatus::Continue) continue;
    if (st == FilterDataStatus::StopIterationAndBuffer) {
      decode_buffered_.move(data);
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = !end_stream;
      return;
    }
    // StopIterationNoBuffer: the filter took the data.
    if (end_stream) {
      decode_stopped_at_ = i;
      decode_stopped_in_headers_ = false;
      decode_buffering_ = false;
    }
    return;
  }
  onDecodeDataPassedChain(data, end_stream);
}

void FilterManager::decodeBufferedBody(size_t i) {
  bool in_headers = decode_stopped_in_headers_;
  decode_stopped_at_ = kNone;
  decode_stopped_in_headers_ = false;
  decode_buffering_ = false;
  FilterDataStatus st = decoders_[i]->decodeData(decode_buffered_, true);
  if (decode_done_ || destroyed_) return;
  if (st == FilterDataStatus::Continue) {
    resumeDecodingAfter(i, in_headers);
    return;
  }
  // Resumes with continueDecoding(); the body stays here meanwhile.
  decode_stopped_at_ = i;
  decode_stopped_in_headers_ = in_headers;
  decode_body_seen_ = true;
}

void FilterManager::resumeDecodingAfter(size_t i, bool headers_too) {
  if (headers_too) {
    // The body is still buffered, so the headers do not say end_stream.
    iterateDecodeHeaders(i + 1);
    if (decode_done_ || destroyed_ || decode_stopped_at_ != kNone) return;
    // A body rewritten to nothing: the headers carried the end already.
    if (decode_buffered_.empty() && request_complete_) return;
  }
  Buffer body;
  body.move(decode_buffered_);
  iterateDecodeData(i + 1, body, request_complete_);
}

void FilterManager::continueDecoding() {
  if (decode_stopped_at_ == kNone || decode_done_ || destroyed_) return;
  size_t i = decode_stopped_at_;
  bool in_headers = decode_stopped_in_headers_;
  bool body_seen = decode_body_seen_;
  decode_stopped_at_ = kNone;
  decode_stopped_in_headers_ = false;
  decode_buffering_ = false;
  decode_body_seen_ = false;
  if (in_headers && !body_seen) {
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
  resumeDecodingAfter(i, in_headers);
}

void FilterManager::sendLocalReply(const ErrorReply& reply,
                                   const std::function<void(ResponseHeaders&)>& extra) {
  if (destroyed_) return;
  if (response_headers_encoded_) {
    // Too late for a status: the client's stream ends instead.
    resetStream(reply.code);
    return;
  }
  streamInfo().error_code = reply.code;
  sendLocalBody(
      reply.status, "application/json",
      errorBody(reply.message, reply.type.empty() ? defaultErrorType(reply.status) : reply.type,
                reply.code),
      extra);
}

void FilterManager::sendLocalBody(int status, std::string_view content_type, std::string_view body,
                                  const std::function<void(ResponseHeaders&)>& extra) {
  if (destroyed_) return;
  if (response_headers_encoded_) {
    resetStream("local_reply_after_headers");
    return;
  }
  decode_done_ = true;
  auto headers = std::make_unique<ResponseHeaders>();
  headers->status = status;
  headers->headers.add("content-type", content_type);
  headers->headers.add("content-length", std::to_string(body.size()));
  if (extra) extra(*headers);
  Buffer data;
  data.add(body);
  encodeHeaders(std::move(headers), false);
  if (!destroyed_) encodeData(data, true);
}

// ---------------------------------------------------------------------------
// Encoding

void FilterManager::encodeHeaders(ResponseHeadersPtr headers, bool end_stream) {
  if (destroyed_ || response_headers_encoded_) return;
  response_ = std::move(headers);
  encode_end_seen_ = end_stream;
  iterateEncodeHeaders(0);
}

void FilterManager::iterateEncodeHeaders(size_t from) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    bool end = encode_end_seen_ && encode_buffered_.empty();
    FilterHeadersStatus st = encoders_[i]->encodeHeaders(*response_, end);
    if (destroyed_) return;
    if (st == FilterHeadersStatus::Continue) continue;
    encode_stopped_at_ = i;
    encode_stopped_in_headers_ = true;
    encode_body_seen_ = false;
    if (st == FilterHeadersStatus::StopAllIterationAndBuffer && !end) {
      encode_buffering_ = true;
      if (encode_end_seen_) encodeBufferedBody(i);
    }
    return;
  }
  response_headers_encoded_ = true;
  writeHeadersOut(encode_end_seen_ && encode_buffered_.empty());
}

void FilterManager::encodeData(Buffer& data, bool end_stream) {
  if (destroyed_ || response_complete_) {
    data.clear();
    return;
  }
  encode_end_seen_ = end_stream;
  if (encode_stopped_at_ != kNone && encode_stopped_in_headers_) {
    encode_buffered_.move(data);
    if (encode_buffering_ && end_stream) encodeBufferedBody(encode_stopped_at_);
    return;
  }
  iterateEncodeData(0, data, end_stream);
}

void FilterManager::iterateEncodeData(size_t from, Buffer& data, bool end_stream) {
  for (size_t i = from; i < encoders_.size(); ++i) {
    if (i == encode_stopped_at_) {
      encode_buffered_.move(data);
      if (encode_buffering_ && end_stream) encodeBufferedBody(i);
      return;
    }
    FilterDataStatus st = encoders_[i]->encodeData(data, end_stream);
    if (destroyed_) return;
    if (st == FilterDataStatus::Continue) continue;
    if (st == FilterDataStatus::StopIterationAndBuffer) {
      encode_buffered_.move(data);
      encode_stopped_at_ = i;
      encode_stopped_in_headers_ = false;
      encode_buffering_ = !end_stream;
      return;
    }
    if (end_stream) encode_stopped_at_ = i;
    return;
  }
  writeDataOut(data, end_stream);
}

void FilterManager::encodeBufferedBody(size_t i) {
  bool in_headers = encode_stopped_in_headers_;
  encode_stopped_at_ = kNone;
  encode_stopped_in_headers_ = false;
  encode_buffering_ = false;
  FilterDataStatus st = encoders_[i]->encodeData(encode_buffered_, true);
  if (destroyed_) return;
  if (st == FilterDataStatus::Continue) {
    resumeEncodingAfter(i, in_headers);
    return;
  }
  encode_stopped_at_ = i;
  encode_stopped_in_headers_ = in_headers;
  encode_body_seen_ = true;
}

void FilterManager::resumeEncodingAfter(size_t i, bool headers_too) {
  if (headers_too) {
    iterateEncodeHeaders(i + 1);
    if (destroyed_ || encode_stopped_at_ != kNone) return;
    if (encode_buffered_.empty() && encode_end_seen_) return;
  }
  Buffer body;
  body.move(encode_buffered_);
  iterateEncodeData(i + 1, body, encode_end_seen_);
}

void FilterManager::continueEncoding() {
  if (encode_stopped_at_ == kNone || destroyed_) return;
  size_t i = encode_stopped_at_;
  bool in_headers = encode_stopped_in_headers_;
  bool body_seen = encode_body_seen_;
  encode_stopped_at_ = kNone;
  encode_stopped_in_headers_ = false;
  encode_buffering_ = false;
  encode_body_seen_ = false;
  if (in_headers && !body_seen) {
    iterateEncodeHeaders(i + 1);
    if (destroyed_ || encode_stopped_at_ != kNone) return;
    // Body that arrived while the headers were held: the filter that held
    // them has not seen it yet.
    if (!encode_buffered_.empty()) {
      Buffer body;
      body.move(encode_buffered_);
      iterateEncodeData(i, body, encode_end_seen_);
    }
    return;
  }
  resumeEncodingAfter(i, in_headers);
}

void FilterManager::injectEncodedData(Buffer& data, bool end_stream) {
  if (destroyed_) return;
  writeDataOut(data, end_stream);
}

void FilterManager::injectEncodedDataToFilterChain(const StreamEncoderFilter& from, Buffer& data,
                                                   bool end_stream) {
  if (destroyed_) return;
  auto it = std::find(encoders_.begin(), encoders_.end(), &from);
  size_t next =
      it == encoders_.end() ? encoders_.size() : static_cast<size_t>(it - encoders_.begin()) + 1;
  if (end_stream) encode_end_seen_ = true;
  iterateEncodeData(next, data, end_stream);
}

void FilterManager::writeHeadersOut(bool end_stream) {
  StreamInfo& info = streamInfo();
  info.status = response_->status;
  info.first_byte_sent_ns = Dispatcher::monotonicNs();
  if (!info.request_id.empty() && !response_->headers.get("x-request-id")) {
    response_->headers.add("x-request-id", info.request_id);
  }
  if (end_stream) response_complete_ = true;
  writeHeaders(*response_, end_stream);
}

void FilterManager::writeDataOut(Buffer& data, bool end_stream) {
  if (response_complete_) {
    data.clear();
    return;
  }
  streamInfo().response_body_bytes += data.length();
  if (end_stream) response_complete_ = true;
  writeData(data, end_stream);
}

// ---------------------------------------------------------------------------
// The client's connection

void FilterManager::continue100() {
  if (requestForFilters().expect_continue && !request_complete_) send100Continue();
}

void FilterManager::readDisableDownstream(bool disable) {
  if (destroyed_ || disable == read_disabled_) return;
  read_disabled_ = disable;
  readDisableConnection(disable);
}

void FilterManager::addDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks_.push_back(&cb);
  // A client, or a filter, already behind: tell the newcomer at once.
  if (connectionAboveHighWatermark() || filters_above_ > 0) cb.onAboveWriteBufferHighWatermark();
}

void FilterManager::removeDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) {
  watermark_callbacks_.erase(
      std::remove(watermark_callbacks_.begin(), watermark_callbacks_.end(), &cb),
      watermark_callbacks_.end());
}

void FilterManager::onAboveWriteBufferHighWatermark() {
  if (filters_above_ > 0) return;  // already told
  for (auto* cb : watermark_callbacks_) cb->onAboveWriteBufferHighWatermark();
}

void FilterManager::onBelowWriteBufferLowWatermark() {
  if (filters_above_ > 0) return;  // a filter still holds too much
  for (auto* cb : watermark_callbacks_) cb->onBelowWriteBufferLowWatermark();
}

void FilterManager::onEncoderFilterAboveWriteBufferHighWatermark() {
  if (destroyed_ || filters_above_++ > 0 || connectionAboveHighWatermark()) return;
  for (auto* cb : watermark_callbacks_) cb->onAboveWriteBufferHighWatermark();
}

void FilterManager::onEncoderFilterBelowWriteBufferLowWatermark() {
  if (destroyed_ || filters_above_ == 0) return;
  if (--filters_above_ > 0 || connectionAboveHighWatermark()) return;
  for (auto* cb : watermark_callbacks_) cb->onBelowWriteBufferLowWatermark();
}

void FilterManager::resetStream(std::string_view reason) {
  if (destroyed_) return;
  StreamInfo& info = streamInfo();
  if (info.error_code.empty()) info.error_code = std::string(reason);
  decode_done_ = true;
  destroyFilters();
  abortResponse();
}

void FilterManager::destroyFilters() {
  if (destroyed_) return;
  destroyed_ = true;
  watermark_callbacks_.clear();
  if (read_disabled_) {
    read_disabled_ = false;
    // The connection may already be closed; a read switch ignores that.
    readDisableConnection(false);
  }
  for (StreamDecoderFilter* f : decoders_) f->onDestroy();
  for (StreamEncoderFilter* f : encoders_) f->onDestroy();
}

void FilterManager::releaseFilters() {
  decoders_.clear();
  encoders_.clear();
  owned_decoders_.clear();
  owned_encoders_.clear();
  owned_shared_.clear();
}

}  // namespace eldric::http
