#pragma once

// A request the Edge makes on its own behalf through a route's terminal
// handler (Envoy's AsyncClient): the tools filter asks the router again
// after running the model's tool calls, as many rounds as it takes, while
// the client's own stream waits for the final answer. The handler runs
// here as it would on a client's stream (the same factory, the worker's
// pools, the client's facts: who is calling, from where); what it answers
// comes to the AsyncStreamCallbacks
// instead of a connection. No encoder filters run here: the caller passes
// what it keeps on to its own stream, where they do.

#include <memory>
#include <string_view>

#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/filter_manager.h"

namespace eldric::http {

class AsyncStreamCallbacks {
 public:
  virtual ~AsyncStreamCallbacks() = default;
  // The handler's answer, as the client would have had it. The callbacks
  // may reset() the stream from inside; they must not delete it there
  // (hand it to the dispatcher's deferredDelete).
  virtual void onAsyncHeaders(ResponseHeaders& headers, bool end_stream) = 0;
  virtual void onAsyncData(Buffer& data, bool end_stream) = 0;
  // The handler ended the exchange without a whole answer (the upstream
  // broke after its head): nothing more comes.
  virtual void onAsyncReset(std::string_view reason) = 0;
};

class AsyncStream : public FilterManager, public DeferredDeletable {
 public:
  // `parent` is the client's stream the request is made for; it outlives
  // this one (its filter owns this). `worker_locals` are the worker's
  // objects the handler's factory looks up.
  AsyncStream(StreamFilterCallbacks& parent, const FilterState& worker_locals,
              AsyncStreamCallbacks& callbacks);
  ~AsyncStream() override;

  // Builds the chain from `handler` (a route's terminal factory) and sends
  // the request with `body` (taken) as its whole body.
  void start(const FilterFactory& handler, RequestHeaders headers, Buffer& body);
  // The caller no longer wants the answer: the handler is destroyed (its
  // upstream closed), and no callback comes after.
  void reset();
  bool done() const { return done_; }

  // StreamFilterCallbacks: the client's stream answers.
  Dispatcher& dispatcher() override { return parent_.dispatcher(); }
  const Route* route() override { return parent_.route(); }
  const RequestHeaders& requestHeaders() override { return request_; }
  // A copy of the client's stream's facts at the start (who, from where,
  // the request id); the handler's own (upstream host, attempts, error
  // code, bytes) stay here for the caller to report.
  StreamInfo& streamInfo() override { return info_; }
  const std::string& peerIp() override { return parent_.peerIp(); }
  const std::string& peerCertificateSubject() override { return parent_.peerCertificateSubject(); }
  std::string_view scheme() override { return parent_.scheme(); }
  void closeConnectionAfterResponse() override { parent_.closeConnectionAfterResponse(); }

  // FilterChainBuilder
  const FilterState& workerLocals() override { return worker_locals_; }

 private:
  // FilterManager
  RequestHeaders& requestForFilters() override { return request_; }
  void writeHeaders(ResponseHeaders& headers, bool end_stream) override;
  void writeData(Buffer& data, bool end_stream) override;
  void abortResponse() override;
  void send100Continue() override {}
  void readDisableConnection(bool) override {}
  // The caller passes the client's watermarks on (FilterManager's
  // onAbove/onBelowWriteBufferHighWatermark).
  bool connectionAboveHighWatermark() override { return false; }

  StreamFilterCallbacks& parent_;
  const FilterState& worker_locals_;
  AsyncStreamCallbacks& callbacks_;
  RequestHeaders request_;
  StreamInfo info_;
  bool done_ = false;  // answered, reset, or abandoned: no more callbacks
};
using AsyncStreamPtr = std::unique_ptr<AsyncStream>;

}  // namespace eldric::http
