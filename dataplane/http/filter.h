#pragma once

// The HTTP filter API. A stream's filters see the request in order and the
// response in reverse order; each steers the chain by what it returns.
// Filters may be asynchronous: stop now, resume later through the
// callbacks (a plugin answering over a pipe, a quota check in flight).

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/errors.h"
#include "dataplane/http/headers.h"

namespace eldric::http {

struct Route;
class StreamEncoderFilter;

enum class FilterHeadersStatus {
  // Pass the headers to the next filter.
  Continue,
  // Do not pass them on. The filter must later call continueDecoding() /
  // continueEncoding(), or answer/reset the stream. Body data arriving in
  // the meantime is buffered by the manager and delivered after the
  // headers once iteration resumes.
  StopIteration,
  // Do not pass them on, and keep the body buffered until it is complete:
  // the filter's decodeData()/encodeData() is then called once with the
  // whole body and end_stream=true (a plugin that rewrites the request
  // needs all of it before anything goes further; Envoy's
  // StopAllIterationAndBuffer). From there as for StopIterationAndBuffer:
  // return Continue (the headers, then the body, go on), or
  // StopIterationNoBuffer and resume later with continueDecoding() /
  // continueEncoding(); until then the filter may rewrite the buffer it
  // was given and the headers (a new content-length). Without a body
  // (end_stream in the headers) it is StopIteration. The manager keeps one
  // stop at a time, so no filter before this one may stop the body
  // meanwhile: such a filter (one that reads whole bodies) goes after it.
  StopAllIterationAndBuffer,
};

enum class FilterDataStatus {
  // Pass this data (possibly modified in place) to the next filter.
  Continue,
  // Keep this data and everything after it buffered here; the filter is
  // called again once, with the whole buffered body and end_stream=true.
  // It then returns Continue, or StopIterationNoBuffer and resumes later
  // with continueDecoding()/continueEncoding().
  StopIterationAndBuffer,
  // The filter took the data (or dropped it); nothing goes further now.
  StopIterationNoBuffer,
};

// Who is calling: set by the auth filter from a valid API key, read by the
// rate limiter, handlers and the access log. Shared with the compiled
// config that holds it.
struct ClientIdentity {
  std::string client_id;
  std::string client_name;
  std::string key_prefix;            // never the key itself
  uint32_t scopes = 0;               // bit (1 << edge::v1::Scope)
  uint32_t requests_per_window = 0;  // 0: tier default
  uint32_t tokens_per_window = 0;
  uint32_t max_concurrent = 0;
  std::vector<std::string> allowed_models;  // empty: all
  // The Edge's tool plugins it is offered: plugin ids or function names;
  // empty: all, {"none"}: none (ApiKey.tools).
  std::vector<std::string> tools;
  int64_t expires_at = 0;
  bool hasScope(int scope) const { return (scopes >> scope) & 1u; }
  // The names of its scopes (edge::v1::Scope 1-4), in that order, as the
  // admin API and the headers sent upstream spell them.
  std::vector<std::string_view> scopeNames() const {
    static constexpr std::string_view kNames[] = {"inference", "admin", "worker", "router"};
    std::vector<std::string_view> out;
    for (int bit = 1; bit <= 4; ++bit) {
      if (hasScope(bit)) out.push_back(kNames[bit - 1]);
    }
    return out;
  }
  bool allowsTool(std::string_view plugin_id, std::string_view function) const {
    if (tools.empty()) return true;
    for (const auto& t : tools) {
      if (t == plugin_id || t == function) return true;
    }
    return false;
  }
  bool allowsModel(std::string_view model) const {
    if (allowed_models.empty()) return true;
    for (const auto& m : allowed_models) {
      if (m == model) return true;
    }
    return false;
  }
};

// A typed slot in a stream's FilterState. The filter that owns the slot
// defines it once (an inline constexpr object); its address is the key,
// its type parameter the type of what it holds.
template <class T>
struct FilterStateKey {
  const char* name;  // for a debugger; the identity is the address
};

// The key the client authenticated with, kept past the auth filter only on
// routes whose handler must present it again (Route::keeps_credential):
// admin REST that a farm member hands to the control plane, a tunnel
// forward relayed to the member that holds the tunnel. The receiver checks
// it again. Never logged.
inline constexpr FilterStateKey<std::string> kClientCredential{"client_credential"};

// What one filter leaves on the stream for a later one (Envoy's
// FilterState, reduced to what is needed here): the rate limiter's
// counters for the stream's IP and key, looked up once per stream
// instead of once per filter. Values live as long as the stream.
class FilterState {
 public:
  template <class T>
  void set(const FilterStateKey<T>& key, std::shared_ptr<T> value) {
    for (auto& [k, v] : values_) {
      if (k == &key) {
        v = std::move(value);
        return;
      }
    }
    values_.emplace_back(&key, std::move(value));
  }
  // What `key` holds, or null.
  template <class T>
  T* get(const FilterStateKey<T>& key) const {
    for (const auto& [k, v] : values_) {
      if (k == &key) return static_cast<T*>(v.get());
    }
    return nullptr;
  }

 private:
  absl::InlinedVector<std::pair<const void*, std::shared_ptr<void>>, 2> values_;
};

// Per-request facts shared by filters and the access log.
struct StreamInfo {
  uint64_t start_ns = 0;
  uint64_t request_headers_done_ns = 0;
  uint64_t upstream_headers_ns = 0;
  uint64_t first_byte_sent_ns = 0;
  int status = 0;
  uint64_t request_body_bytes = 0;
  uint64_t response_body_bytes = 0;
  std::string request_id;
  std::string upstream_host;                       // "http://router1:8881"
  std::string error_code;                          // why the stream ended badly, if it did
  std::string client_name;                         // set by the auth filter
  std::shared_ptr<const ClientIdentity> identity;  // null: anonymous
  std::string client_ip;                           // as the rate limiter saw it
  uint32_t attempts = 0;
  uint64_t prompt_tokens = 0;
  uint64_t completion_tokens = 0;
  // The Edge's own tools (issue 20): how many times the request went back
  // to the model with their results, and which ran ("weather__lookup,..."
  // names only, never arguments).
  uint32_t tool_rounds = 0;
  std::string tools_ran;
  // A client that shuts down its sending side is gone, even with its
  // request whole: set by a handler that holds a request open until
  // something happens (a tunnel's parked poll), where a FIN is a worker that
  // died, not a curl that finished sending (ConnectionManager's half-close).
  bool half_close_ends_stream = false;
  FilterState filter_state;
};

// A filter may register to hear when the client's side cannot take more
// (a slow reader): the router stops reading its upstream in response.
class DownstreamWatermarkCallbacks {
 public:
  virtual ~DownstreamWatermarkCallbacks() = default;
  virtual void onAboveWriteBufferHighWatermark() = 0;
  virtual void onBelowWriteBufferLowWatermark() = 0;
};

class StreamFilterCallbacks {
 public:
  virtual ~StreamFilterCallbacks() = default;
  virtual Dispatcher& dispatcher() = 0;
  // The route the request matched (never null once filters run).
  virtual const Route* route() = 0;
  virtual const RequestHeaders& requestHeaders() = 0;
  virtual StreamInfo& streamInfo() = 0;
  // The client's IP as text ("203.0.113.9", "::1"): the TCP peer, which
  // may be a trusted proxy (see ratelimit::clientIp).
  virtual const std::string& peerIp() = 0;
  // The verified client certificate's subject common name ("" when none;
  // see tls.client_ca).
  virtual const std::string& peerCertificateSubject() = 0;
  // "https" or "http", as the client connected.
  virtual std::string_view scheme() = 0;
  // Ends the stream: the client sees a reset (HTTP/1: the connection
  // closes). Filters are destroyed after.
  virtual void resetStream(std::string_view reason) = 0;
  // Close the client connection once this response is complete.
  virtual void closeConnectionAfterResponse() = 0;
};

class DecoderFilterCallbacks : public StreamFilterCallbacks {
 public:
  virtual void continueDecoding() = 0;
  // Answers the request with an OpenAI-shaped error; skips the filters
  // after this one. `extra` may add headers (Retry-After, WWW-Authenticate).
  virtual void sendLocalReply(const ErrorReply& reply,
                              const std::function<void(ResponseHeaders&)>& extra = nullptr) = 0;
  // A terminal filter (router, built-in handler) produces the response
  // through these; it then runs through the encoder filters.
  virtual void encodeHeaders(ResponseHeadersPtr headers, bool end_stream) = 0;
  virtual void encodeData(Buffer& data, bool end_stream) = 0;
  // Tells the client to send its body (Expect: 100-continue).
  virtual void continue100() = 0;
  // Stop / resume reading the client's request body (upstream backpressure).
  virtual void readDisableDownstream(bool disable) = 0;
  virtual void addDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) = 0;
  virtual void removeDownstreamWatermarkCallbacks(DownstreamWatermarkCallbacks& cb) = 0;
};

class EncoderFilterCallbacks : public StreamFilterCallbacks {
 public:
  virtual void continueEncoding() = 0;
  // Adds bytes after the current chunk (an SSE event a filter injects),
  // straight to the client.
  virtual void injectEncodedData(Buffer& data, bool end_stream) = 0;
  // Passes `data` to the encoder filters after `from` (Envoy's
  // injectEncodedDataToFilterChain): how a filter that took a chunk
  // (StopIterationNoBuffer) to transform it asynchronously sends the
  // result on, in order, without the manager buffering the stream.
  virtual void injectEncodedDataToFilterChain(const StreamEncoderFilter& from, Buffer& data,
                                              bool end_stream) = 0;
  // The filter holds more of the answer than it should (a transform that
  // runs behind the upstream, such as a plugin called per event): whoever
  // reads the upstream stops, as for a slow client, until the filter says
  // it is below again (Envoy's onEncoderFilterAboveWriteBufferHighWatermark).
  // The two calls pair up; the stream's end clears what is left.
  virtual void onEncoderFilterAboveWriteBufferHighWatermark() = 0;
  virtual void onEncoderFilterBelowWriteBufferLowWatermark() = 0;
};

class StreamDecoderFilter {
 public:
  virtual ~StreamDecoderFilter() = default;
  virtual void setDecoderFilterCallbacks(DecoderFilterCallbacks& callbacks) = 0;
  virtual FilterHeadersStatus decodeHeaders(RequestHeaders& headers, bool end_stream) = 0;
  virtual FilterDataStatus decodeData(Buffer& data, bool end_stream) = 0;
  // The stream is over (finished or reset). Release upstream resources
  // here: the filter object itself is deleted later.
  virtual void onDestroy() {}
};

class StreamEncoderFilter {
 public:
  virtual ~StreamEncoderFilter() = default;
  virtual void setEncoderFilterCallbacks(EncoderFilterCallbacks& callbacks) = 0;
  virtual FilterHeadersStatus encodeHeaders(ResponseHeaders& headers, bool end_stream) = 0;
  virtual FilterDataStatus encodeData(Buffer& data, bool end_stream) = 0;
  virtual void onDestroy() {}
};

using StreamDecoderFilterPtr = std::unique_ptr<StreamDecoderFilter>;
using StreamEncoderFilterPtr = std::unique_ptr<StreamEncoderFilter>;

// Filters add themselves to a stream's chain through this.
class FilterChainBuilder {
 public:
  virtual ~FilterChainBuilder() = default;
  // Objects of the worker thread building the chain (the router's
  // connection pools), set by the worker under keys their owners define,
  // as in FilterState.
  virtual const FilterState& workerLocals() = 0;
  virtual void addDecoderFilter(StreamDecoderFilterPtr filter) = 0;
  virtual void addEncoderFilter(StreamEncoderFilterPtr filter) = 0;
  // A filter that is both (shared ownership between the two chains).
  virtual void addStreamFilter(std::shared_ptr<StreamDecoderFilter> decoder,
                               std::shared_ptr<StreamEncoderFilter> encoder) = 0;
};

// Adds one filter to a stream's chain. Captures its shared config (as
// Envoy's filter factories do); made once per config by the filter's entry
// in config::FilterRegistry.
using FilterFactory = std::function<void(FilterChainBuilder&)>;

}  // namespace eldric::http
