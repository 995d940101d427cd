#pragma once

// A stream's filter chain and its iteration (Envoy's FilterManager): the
// decoder filters see the request in order, the encoder filters the
// response in reverse order, each steering by what it returns (see
// filter.h); a local reply ends decoding and goes out through the encoder
// filters; a reset destroys the filters. It knows nothing of connections or
// codecs: what it needs from the stream that owns it (the request, where
// the response goes once every encoder filter passed it, the client
// connection's read switch and watermark) are the protected virtuals below.
// The connection manager's ActiveStream is one such stream; a test's fake
// stream is another, so filter tests run the real iteration.

#include <functional>
#include <memory>
#include <string>

#include "absl/container/inlined_vector.h"
#include "dataplane/common/buffer.h"
#include "dataplane/http/filter.h"

namespace eldric::http {

class FilterManager : public DecoderFilterCallbacks,
                      public EncoderFilterCallbacks,
                      public FilterChainBuilder {
 public:
  // The owner calls destroyFilters() in its own destructor (it calls
  // virtuals of the owner) and releaseFilters() if the filters must go
  // before the owner's members do.
  ~FilterManager() override = default;

  // The request (requestForFilters()) through the decoder filters.
  void runDecodeHeaders(bool end_stream);
  void runDecodeData(Buffer& data, bool end_stream);
  // The client's connection crossed its write watermarks.
  void onAboveWriteBufferHighWatermark();
  void onBelowWriteBufferLowWatermark();
  // The stream is over: onDestroy() on every filter, once; a read pause
  // the filters asked for is released.
  void destroyFilters();
  // Deletes the filters (after destroyFilters()).
  void releaseFilters();

  bool filtersDestroyed() const { return destroyed_; }
  bool requestComplete() const { return request_complete_; }
  bool responseComplete() const { return response_complete_; }
  // Passed every encoder filter (the head went, or is going, to the client).
  bool responseHeadersEncoded() const { return response_headers_encoded_; }
  size_t decoderFilterCount() const { return decoders_.size(); }
  size_t encoderFilterCount() const { return encoders_.size(); }
  const absl::InlinedVector<DownstreamWatermarkCallbacks*, 2>& watermarkCallbacks() const {
    return watermark_callbacks_;
  }

  // StreamFilterCallbacks. The owner answers the rest (dispatcher, route,
  // request headers, peer, scheme, closing after the response); declared
  // here so that calls from inside are not ambiguous between the decoder
  // and encoder callbacks.
  StreamInfo& streamInfo() override = 0;
  void resetStream(std::string_view reason) override;

  // DecoderFilterCallbacks
  void continueDecoding() override;
  void sendLocalReply(const ErrorReply& reply,
                      const std::function<void(ResponseHeaders&)>& extra = nullptr) override;
  // A whole answer made here that is not an error (an ACME challenge's key
  // authorization): like sendLocalReply, with this status, type and body.
  void sendLocalBody(int status, std::string_view content_type, std::string_view body,
                     const std::function<void(ResponseHeaders&)>& extra = nullptr);
  void encodeHeaders(ResponseHeadersPtr headers, bool end_stream) override;
  void encodeData(Buffer& data, bool end_stream) override;
  void continue100() override;
  void readDisableDownstream(bool disable) override;
  void addDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) override;
  void removeDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) override;

  // EncoderFilterCallbacks
  void continueEncoding() override;
  void injectEncodedData(Buffer& data, bool end_stream) override;
  void injectEncodedDataToFilterChain(const StreamEncoderFilter& from, Buffer& data,
                                      bool end_stream) override;
  void onEncoderFilterAboveWriteBufferHighWatermark() override;
  void onEncoderFilterBelowWriteBufferLowWatermark() override;

  // FilterChainBuilder
  void addDecoderFilter(StreamDecoderFilterPtr filter) override;
  void addEncoderFilter(StreamEncoderFilterPtr filter) override;
  void addStreamFilter(std::shared_ptr<StreamDecoderFilter> decoder,
                       std::shared_ptr<StreamEncoderFilter> encoder) override;

 protected:
  // The request the filters see and may rewrite.
  virtual RequestHeaders& requestForFilters() = 0;
  // The response after every encoder filter, to the client.
  virtual void writeHeaders(ResponseHeaders& headers, bool end_stream) = 0;
  virtual void writeData(Buffer& data, bool end_stream) = 0;
  // Ends the client's side abruptly (HTTP/1: the connection closes).
  virtual void abortResponse() = 0;
  // "100 Continue" to a client that waits for it.
  virtual void send100Continue() = 0;
  virtual void readDisableConnection(bool disable) = 0;
  virtual bool connectionAboveHighWatermark() = 0;
  // What passed the last decoder filter. Nothing, on a real stream: the
  // last filter is the handler that answers.
  virtual void onDecodeHeadersPassedChain(bool /*end_stream*/) {}
  virtual void onDecodeDataPassedChain(Buffer& data, bool /*end_stream*/) { data.clear(); }
  // Before routing: a request the stream answers itself (404, 405) is
  // still complete or not as the codec said.
  void setRequestComplete(bool complete) { request_complete_ = complete; }

 private:
  void iterateDecodeHeaders(size_t from);
  void iterateDecodeData(size_t from, Buffer& data, bool end_stream);
  // Filter `i` asked for the whole body and it is complete: hands it over.
  void decodeBufferedBody(size_t i);
  // Filter `i` is done with headers (if it stopped them) and the whole
  // buffered body: both go on to the filters after it.
  void resumeDecodingAfter(size_t i, bool headers_too);
  void iterateEncodeHeaders(size_t from);
  void iterateEncodeData(size_t from, Buffer& data, bool end_stream);
  void encodeBufferedBody(size_t i);
  void resumeEncodingAfter(size_t i, bool headers_too);
  void writeHeadersOut(bool end_stream);
  void writeDataOut(Buffer& data, bool end_stream);

  // Inline: a chain is a handful of filters, allocated per stream. The
  // chains are plain pointers; ownership is kept apart so that a filter
  // added as a unique_ptr costs one allocation, not a shared_ptr control
  // block more (the filters are owned until the stream is deleted).
  absl::InlinedVector<StreamDecoderFilter*, 6> decoders_;
  absl::InlinedVector<StreamEncoderFilter*, 6> encoders_;  // in encode order
  absl::InlinedVector<StreamDecoderFilterPtr, 4> owned_decoders_;
  absl::InlinedVector<StreamEncoderFilterPtr, 2> owned_encoders_;
  absl::InlinedVector<std::shared_ptr<void>, 2> owned_shared_;  // filters added to both chains

  // Decode iteration.
  static constexpr size_t kNone = static_cast<size_t>(-1);
  size_t decode_stopped_at_ = kNone;
  bool decode_stopped_in_headers_ = false;
  bool decode_buffering_ = false;  // the stopped filter asked to buffer
  // The stopped filter stopped the headers and has seen the whole body
  // (StopAllIterationAndBuffer): it resumes both.
  bool decode_body_seen_ = false;
  Buffer decode_buffered_;
  bool request_complete_ = false;
  bool decode_done_ = false;  // local reply sent or stream over

  // Encode iteration.
  ResponseHeadersPtr response_;
  size_t encode_stopped_at_ = kNone;
  bool encode_stopped_in_headers_ = false;
  bool encode_buffering_ = false;
  bool encode_body_seen_ = false;
  Buffer encode_buffered_;
  bool encode_end_seen_ = false;
  bool response_headers_encoded_ = false;  // passed all encoder filters
  bool response_complete_ = false;

  absl::InlinedVector<DownstreamWatermarkCallbacks*, 2> watermark_callbacks_;
  // Encoder filters above their own watermark. The callbacks hear one
  // "above" while the client or any filter is, one "below" when none is.
  uint32_t filters_above_ = 0;
  bool destroyed_ = false;
  bool read_disabled_ = false;
};

}  // namespace eldric::http
