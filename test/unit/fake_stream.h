#pragma once

// A stream for filter tests: the decoder and encoder filter callbacks as
// the connection manager (dataplane/http/conn_manager.cc, ActiveStream)
// implements them, without a connection, a codec or a route table. A test
// sets what the callbacks expose (route, request headers, stream info,
// peer IP, scheme, worker locals), adds filters (one by hand, or a whole
// factory's worth with addFilters), drives the request through the chain
// with decodeHeaders/decodeData, and reads back what reached the client
// (the response headers and body after the encoder filters, local
// replies) and every call a filter made (continueDecoding, resets,
// readDisable, watermark registrations).
//
// Iteration is the connection manager's own: the fake is a
// http::FilterManager (dataplane/http/filter_manager.h), as ActiveStream
// is, and only records what would have gone to the codec and the
// connection.

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/filter_manager.h"
#include "dataplane/http/route.h"

namespace eldric::test {

class FakeStream : public http::FilterManager {
 public:
  FakeStream();
  ~FakeStream() override;
  FakeStream(const FakeStream&) = delete;
  FakeStream& operator=(const FakeStream&) = delete;

  // ---- What the callbacks expose; set before the filters run.
  // route() returns &matched_route, or null when has_route is false.
  http::Route matched_route;
  bool has_route = true;
  // requestHeaders(), and what decodeHeaders() passes to the filters.
  http::RequestHeaders request;
  http::StreamInfo info;
  std::string peer_ip = "127.0.0.1";
  std::string peer_subject;  // a verified client certificate's CN
  std::string client_scheme = "http";
  // What the connection would say: addDownstreamWatermarkCallbacks tells a
  // newcomer at once while this is set (see ActiveStream).
  bool above_high_watermark = false;
  // FilterChainBuilder::workerLocals().
  http::FilterState worker_locals;

  // ---- What the filters did.
  struct LocalReply {
    http::ErrorReply reply;
    // The headers and body as sendLocalReply built them (before the
    // encoder filters), so a test sees what `extra` added.
    http::ResponseHeaders headers;
    std::string body;
  };
  std::vector<LocalReply> local_replies;
  // The response as the codec would get it: after every encoder filter.
  http::ResponseHeadersPtr response_headers;
  std::string response_body;
  bool response_complete = false;
  // Bytes a filter injected (also appended to response_body).
  std::string injected;
  int continue_decoding_calls = 0;
  int continue_encoding_calls = 0;
  int continue100_calls = 0;
  std::vector<std::string> resets;
  bool close_connection_after_response = false;
  // Every readDisable the connection received, in order (including the
  // release when filters are destroyed), and the current state.
  std::vector<bool> read_disable_calls;
  bool read_disabled = false;

  // What made it past the last decoder filter (where the terminal handler
  // would be): the headers, the body, and whether the request ended there.
  bool headers_passed_chain = false;
  std::string body_passed_chain;
  bool end_stream_passed_chain = false;

  // ---- Optional hooks, called after the call is recorded and before it
  // takes effect.
  std::function<void()> on_continue_decoding;
  std::function<void()> on_continue_encoding;
  std::function<void(const http::ErrorReply&)> on_local_reply;
  std::function<void(std::string_view reason)> on_reset;

  // ---- Driving the chain.
  // Runs `factory` against this stream (as the manager does per route).
  void addFilters(const http::FilterFactory& factory);
  // The request headers (`request`) through the decoder filters.
  void decodeHeaders(bool end_stream);
  void decodeData(std::string_view body, bool end_stream);
  // The response from a terminal handler, through the encoder filters.
  void respond(int status, std::string_view body = {},
               std::vector<std::pair<std::string, std::string>> headers = {});
  // The client's connection went above / below its write watermarks.
  void raiseHighWatermark();
  void lowerBelowLowWatermark();

  // ---- Reading results.
  // The last local reply, or null.
  const LocalReply* localReply() const {
    return local_replies.empty() ? nullptr : &local_replies.back();
  }
  // Status the client saw (0: no response yet).
  int responseStatus() const { return response_headers ? response_headers->status : 0; }
  // A response header the client saw, or nullopt.
  std::optional<std::string> responseHeader(std::string_view name) const;
  // The response body as an OpenAI-shaped error
  // ({"error":{"message","type","param":null,"code"}}), or nullopt if it
  // is not exactly that shape.
  struct OpenAiError {
    std::string message, type, code;
  };
  std::optional<OpenAiError> responseError() const;

  // StreamFilterCallbacks
  Dispatcher& dispatcher() override;
  const http::Route* route() override { return has_route ? &matched_route : nullptr; }
  const http::RequestHeaders& requestHeaders() override { return request; }
  http::StreamInfo& streamInfo() override { return info; }
  const std::string& peerIp() override { return peer_ip; }
  const std::string& peerCertificateSubject() override { return peer_subject; }
  std::string_view scheme() override { return client_scheme; }
  void resetStream(std::string_view reason) override;
  void closeConnectionAfterResponse() override { close_connection_after_response = true; }

  // DecoderFilterCallbacks: recorded, then as the manager does.
  void continueDecoding() override;
  void sendLocalReply(const http::ErrorReply& reply,
                      const std::function<void(http::ResponseHeaders&)>& extra = nullptr) override;
  void continue100() override { ++continue100_calls; }

  // EncoderFilterCallbacks
  void continueEncoding() override;
  void injectEncodedData(Buffer& data, bool end_stream) override;

  // FilterChainBuilder
  const http::FilterState& workerLocals() override { return worker_locals; }

 private:
  // http::FilterManager: where the stream meets the codec and connection.
  http::RequestHeaders& requestForFilters() override { return request; }
  void writeHeaders(http::ResponseHeaders& headers, bool end_stream) override;
  void writeData(Buffer& data, bool end_stream) override;
  void abortResponse() override {}
  void send100Continue() override {}
  void readDisableConnection(bool disable) override;
  bool connectionAboveHighWatermark() override { return above_high_watermark; }
  void onDecodeHeadersPassedChain(bool end_stream) override;
  void onDecodeDataPassedChain(Buffer& data, bool end_stream) override;

  std::unique_ptr<Dispatcher> dispatcher_;  // made on first use
};

}  // namespace eldric::test
