// The router's policy on its own, over a fake upstream: which host an
// attempt goes to, when a failed attempt is retried (elsewhere after a
// refused connect, on a fresh connection after a stale keep-alive one,
// never after the request may have been acted on), what the client gets
// for each failure before and after the response started (502/503/504,
// an SSE error event, a reset), the headers the upstream sees, and that
// a slow client stops the upstream being read. No socket: the exchange is
// the UpstreamRequest seam (dataplane/upstream/upstream_request.h).

#include "dataplane/router/router.h"

#include <gtest/gtest.h>
#include <uv.h>

#include <memory>
#include <string>
#include <vector>

#include "dataplane/stats/stats.h"
#include "dataplane/upstream/host.h"
#include "test/unit/fake_stream.h"

namespace eldric::router {
namespace {

// What one exchange was asked to do; outlives the exchange (the router
// deletes it through the dispatcher).
struct Exchange {
  upstream::HostSharedPtr host;
  upstream::UpstreamCallbacks* callbacks = nullptr;
  bool headers_sent = false;
  http::RequestHeaders headers;
  std::string body;
  bool request_complete = false;
  bool reset = false;
  bool deleted = false;
  bool reused = false;
  std::vector<bool> read_disable;
  bool live() const { return !reset && !deleted; }
};

class FakeUpstreamRequest : public upstream::UpstreamRequest {
 public:
  explicit FakeUpstreamRequest(std::shared_ptr<Exchange> ex) : ex_(std::move(ex)) {}
  ~FakeUpstreamRequest() override { ex_->deleted = true; }
  void encodeHeaders(const http::RequestHeaders& headers, bool end_stream) override {
    EXPECT_FALSE(ex_->headers_sent);
    ex_->headers_sent = true;
    ex_->headers = headers;
    ex_->request_complete = end_stream;
  }
  void encodeData(Buffer& data, bool end_stream) override {
    EXPECT_TRUE(ex_->headers_sent);
    ex_->body += data.toString();
    data.clear();
    ex_->request_complete = end_stream;
  }
  void readDisable(bool disable) override { ex_->read_disable.push_back(disable); }
  void reset() override { ex_->reset = true; }
  bool reusedConnection() const override { return ex_->reused; }

 private:
  std::shared_ptr<Exchange> ex_;
};

class FakeUpstreamFactory : public upstream::UpstreamFactory {
 public:
  upstream::UpstreamRequestPtr newRequest(const upstream::ClusterInfo&,
                                          const upstream::HostSharedPtr& host,
                                          upstream::UpstreamCallbacks& callbacks) override {
    auto ex = std::make_shared<Exchange>();
    ex->host = host;
    ex->callbacks = &callbacks;
    ex->reused = reuse_next > 0;
    if (reuse_next > 0) --reuse_next;
    exchanges.push_back(ex);
    return std::make_unique<FakeUpstreamRequest>(ex);
  }
  std::vector<std::shared_ptr<Exchange>> exchanges;
  int reuse_next = 0;  // this many next exchanges go out on reused connections
};

upstream::HostSharedPtr makeHost(const std::string& name) {
  upstream::AddressList addrs(1);
  addrs[0].ss_family = AF_INET;
  return std::make_shared<upstream::Host>("http://" + name + ":8881", name, 8881, addrs);
}

class RouterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    stats_ = std::make_unique<stats::WorkerStats>();
    context_ = std::make_shared<RouterContext>(RouterContext{&upstreams_, stats_.get()});
    stream_.worker_locals.set(kRouterContextKey, context_);
    cluster_ = std::make_shared<upstream::ClusterInfo>();
    cluster_->name = "routers";
    cluster_->hosts = {makeHost("router1"), makeHost("router2")};
    cluster_->outlier_consecutive_failures = 100;  // no ejection unless a test wants it
    stream_.matched_route.to_upstream = true;
    stream_.request.method = "POST";
    stream_.request.path = "/v1/chat/completions";
    stream_.request.headers.add("host", "edge.example");
    stream_.request.headers.add("content-type", "application/json");
  }
  void TearDown() override {
    stream_.destroyFilters();
    runLoop();  // deferred deletions
    for (const auto& h : cluster_->hosts) EXPECT_EQ(h->in_flight.load(), 0) << h->url();
  }

  // The router for this route, then the request (`body` empty: no body).
  void send(const std::string& body, uint64_t timeout_ms = 60000) {
    stream_.addFilters(makeFactory(cluster_, timeout_ms));
    if (body.empty()) {
      stream_.decodeHeaders(true);
      return;
    }
    stream_.request.content_length = body.size();
    stream_.decodeHeaders(false);
    stream_.decodeData(body, true);
  }
  void runLoop() {
    for (int i = 0; i < 4; ++i) uv_run(stream_.dispatcher().loop(), UV_RUN_NOWAIT);
  }
  Exchange& last() { return *upstreams_.exchanges.back(); }
  static http::ResponseHeadersPtr response(int status, const char* content_type) {
    auto h = std::make_unique<http::ResponseHeaders>();
    h->status = status;
    h->headers.add("content-type", content_type);
    return h;
  }
  static void data(Exchange& ex, std::string_view bytes, bool end) {
    Buffer b;
    b.add(bytes);
    ex.callbacks->onUpstreamData(b, end);
  }

  std::unique_ptr<stats::WorkerStats> stats_;
  FakeUpstreamFactory upstreams_;
  std::shared_ptr<RouterContext> context_;
  std::shared_ptr<upstream::ClusterInfo> cluster_;
  test::FakeStream stream_;
};

TEST_F(RouterTest, TheWholeBodyGoesUpOnceTheRequestIsComplete) {
  stream_.addFilters(makeFactory(cluster_, 60000));
  stream_.request.content_length = 11;
  stream_.decodeHeaders(false);
  EXPECT_EQ(stream_.continue100_calls, 1);  // the filters before it said yes
  stream_.decodeData("{\"model\":", false);
  EXPECT_TRUE(upstreams_.exchanges.empty());  // nothing before the request is whole
  stream_.decodeData("1}", true);
  ASSERT_EQ(upstreams_.exchanges.size(), 1u);
  EXPECT_EQ(last().body, "{\"model\":1}");
  EXPECT_TRUE(last().request_complete);
  EXPECT_EQ(last().headers.headers.get("content-length").value_or(""), "11");
  EXPECT_EQ(stats_->upstream_rq_total.value(), 1u);
}

TEST_F(RouterTest, CredentialsAndClientClaimsNeverReachTheUpstream) {
  auto& h = stream_.request.headers;
  h.add("authorization", "Bearer sk-secret");
  h.add("authorization", "Bearer sk-second");
  h.add("x-api-key", "sk-other");
  h.add("proxy-authorization", "Basic abc");
  h.add("cookie", "eldric_session=tok");
  h.add("x-forwarded-for", "1.2.3.4");
  h.add("x-forwarded-proto", "https");
  h.add("forwarded", "for=1.2.3.4");
  h.add("x-real-ip", "1.2.3.4");
  h.add("connection", "keep-alive, x-hop");
  h.add("x-hop", "1");
  h.add("x-custom", "kept");
  stream_.peer_ip = "203.0.113.9";
  stream_.client_scheme = "http";
  send("{}");
  const http::HeaderMap& up = last().headers.headers;
  for (const char* gone : {"authorization", "x-api-key", "proxy-authorization", "cookie",
                           "forwarded", "x-real-ip", "connection", "x-hop"}) {
    EXPECT_FALSE(up.get(gone).has_value()) << gone;
  }
  EXPECT_EQ(up.get("x-forwarded-for").value_or(""), "203.0.113.9");
  EXPECT_EQ(up.get("x-forwarded-proto").value_or(""), "http");
  EXPECT_EQ(up.get("x-forwarded-host").value_or(""), "edge.example");
  EXPECT_EQ(up.get("x-custom").value_or(""), "kept");
}

TEST_F(RouterTest, AChunkedRequestGoesUpWithItsLength) {
  stream_.request.chunked = true;
  stream_.request.headers.add("transfer-encoding", "chunked");
  stream_.addFilters(makeFactory(cluster_, 60000));
  stream_.decodeHeaders(false);
  stream_.decodeData("abc", false);
  stream_.decodeData("de", true);
  EXPECT_FALSE(last().headers.headers.get("transfer-encoding").has_value());
  EXPECT_EQ(last().headers.headers.get("content-length").value_or(""), "5");
  EXPECT_EQ(last().body, "abcde");
}

TEST_F(RouterTest, ResponseStreamsThroughAndReleasesTheHost) {
  send("{}");
  Exchange& ex = last();
  EXPECT_EQ(ex.host->in_flight.load(), 1);
  auto head = response(200, "application/json");
  head->headers.add("connection", "keep-alive");
  head->headers.add("keep-alive", "timeout=5");
  ex.callbacks->onUpstreamHeaders(std::move(head), false);
  EXPECT_EQ(stream_.responseStatus(), 200);
  EXPECT_FALSE(stream_.responseHeader("connection").has_value());  // hop-by-hop
  EXPECT_FALSE(stream_.responseHeader("keep-alive").has_value());
  data(ex, "{\"id\":", false);
  EXPECT_EQ(stream_.response_body, "{\"id\":");  // not held back
  data(ex, "1}", true);
  EXPECT_EQ(stream_.response_body, "{\"id\":1}");
  EXPECT_TRUE(stream_.response_complete);
  EXPECT_EQ(ex.host->in_flight.load(), 0);
  EXPECT_EQ(ex.host->requests_total.load(), 1u);
  EXPECT_EQ(stream_.info.upstream_host, "http://" + ex.host->hostname() + ":8881");
  EXPECT_EQ(stream_.info.attempts, 1u);
}

TEST_F(RouterTest, ARefusedConnectIsRetriedOnTheOtherHost) {
  send("{\"a\":1}");
  ASSERT_EQ(upstreams_.exchanges.size(), 1u);
  upstream::Host* first = upstreams_.exchanges[0]->host.get();
  upstreams_.exchanges[0]->callbacks->onUpstreamFailure(upstream::UpstreamFailure::ConnectFailed,
                                                        "connection refused");
  ASSERT_EQ(upstreams_.exchanges.size(), 2u);
  EXPECT_TRUE(upstreams_.exchanges[0]->reset);
  EXPECT_NE(upstreams_.exchanges[1]->host.get(), first);
  EXPECT_EQ(upstreams_.exchanges[1]->body, "{\"a\":1}");  // the same body, again
  EXPECT_EQ(stats_->upstream_rq_retry.value(), 1u);
  EXPECT_EQ(first->in_flight.load(), 0);
  last().callbacks->onUpstreamHeaders(response(200, "application/json"), true);
  EXPECT_EQ(stream_.responseStatus(), 200);
  EXPECT_EQ(stream_.info.attempts, 2u);
  runLoop();
  EXPECT_TRUE(upstreams_.exchanges[0]->deleted);  // the failed exchange, a turn later
}

TEST_F(RouterTest, RetriesAreBoundedThen503) {
  cluster_->max_retries = 1;
  send("{}");
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ConnectFailed, "refused");
  ASSERT_EQ(upstreams_.exchanges.size(), 2u);
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ConnectFailed, "refused");
  EXPECT_EQ(upstreams_.exchanges.size(), 2u);
  EXPECT_EQ(stream_.responseStatus(), 503);
  auto err = stream_.responseError();
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->code, "upstream_unavailable");
  EXPECT_EQ(err->type, "server_error");
}

TEST_F(RouterTest, OneHostIsNotRetried) {
  cluster_->hosts.resize(1);
  send("{}");
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ConnectFailed, "refused");
  EXPECT_EQ(upstreams_.exchanges.size(), 1u);
  EXPECT_EQ(stream_.responseStatus(), 503);
}

TEST_F(RouterTest, AStaleReusedConnectionIsRetriedFreshOnTheSameTerms) {
  upstreams_.reuse_next = 1;
  send("{}");
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ClosedBeforeResponse,
                                      "closed before responding");
  ASSERT_EQ(upstreams_.exchanges.size(), 2u);
  EXPECT_FALSE(last().reused);
  EXPECT_EQ(stats_->upstream_rq_retry.value(), 0u);  // not a retry: the host did nothing wrong
  last().callbacks->onUpstreamHeaders(response(200, "application/json"), true);
  EXPECT_EQ(stream_.responseStatus(), 200);
  EXPECT_EQ(stream_.info.attempts, 1u);
}

TEST_F(RouterTest, AFreshConnectionClosedBeforeRespondingIs502NotRetried) {
  send("{}");
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ClosedBeforeResponse,
                                      "upstream closed the connection");
  // The request may have been acted on: no second attempt anywhere.
  EXPECT_EQ(upstreams_.exchanges.size(), 1u);
  EXPECT_EQ(stream_.responseStatus(), 502);
  EXPECT_EQ(stream_.responseError()->code, "upstream_closed");
}

TEST_F(RouterTest, StaleRetriesAreBounded) {
  upstreams_.reuse_next = 10;
  send("{}");
  for (int i = 0; i < 3; ++i) {
    last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::ClosedBeforeResponse, "closed");
  }
  EXPECT_EQ(upstreams_.exchanges.size(), 3u);  // the first and two fresh tries
  EXPECT_EQ(stream_.responseStatus(), 502);
}

TEST_F(RouterTest, ABadResponseIs502AndCountsAgainstTheHost) {
  cluster_->outlier_consecutive_failures = 1;
  cluster_->outlier_ejection_ms = 60000;
  send("{}");
  upstream::Host* h = last().host.get();
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::BadResponse,
                                      "invalid HTTP response from upstream");
  EXPECT_EQ(stream_.responseStatus(), 502);
  EXPECT_EQ(stream_.responseError()->code, "bad_upstream_response");
  EXPECT_TRUE(h->ejected(stream_.dispatcher().nowMs()));
}

TEST_F(RouterTest, A5xxIsPassedOnAndCountsAgainstTheHost) {
  send("{}");
  upstream::Host* h = last().host.get();
  auto head = response(500, "application/json");
  last().callbacks->onUpstreamHeaders(std::move(head), false);
  data(last(), "{\"error\":\"boom\"}", true);
  EXPECT_EQ(stream_.responseStatus(), 500);  // the router's answer, as it gave it
  EXPECT_EQ(stream_.response_body, "{\"error\":\"boom\"}");
  EXPECT_EQ(h->failures_total.load(), 1u);
}

TEST_F(RouterTest, NoRouterAnswersInTimeIs504) {
  send("{}", /*timeout_ms=*/5);
  for (int i = 0; i < 200 && stream_.responseStatus() == 0; ++i) {
    uv_run(stream_.dispatcher().loop(), UV_RUN_ONCE);
  }
  EXPECT_EQ(stream_.responseStatus(), 504);
  EXPECT_EQ(stream_.responseError()->code, "upstream_timeout");
  EXPECT_TRUE(last().reset);
  EXPECT_EQ(stats_->upstream_rq_timeout.value(), 1u);
}

TEST_F(RouterTest, ATimeoutMidStreamEndsTheSseStreamWithAnErrorEvent) {
  send("{}", /*timeout_ms=*/5);
  last().callbacks->onUpstreamHeaders(response(200, "text/event-stream"), false);
  data(last(), "data: {\"choices\":[]}\n\n", false);
  for (int i = 0; i < 200 && !stream_.response_complete; ++i) {
    uv_run(stream_.dispatcher().loop(), UV_RUN_ONCE);
  }
  EXPECT_TRUE(stream_.response_complete);
  EXPECT_NE(stream_.response_body.find("request timeout reached"), std::string::npos);
  EXPECT_TRUE(stream_.close_connection_after_response);
}

TEST_F(RouterTest, AnSseStreamCutShortEndsWithAnErrorEventTheClientCanParse) {
  send("{}");
  last().callbacks->onUpstreamHeaders(response(200, "text/event-stream; charset=utf-8"), false);
  data(last(), "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n", false);
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::Reset, "upstream closed mid-body");
  EXPECT_TRUE(stream_.response_complete);
  EXPECT_TRUE(stream_.resets.empty());
  const std::string& body = stream_.response_body;
  size_t event = body.find("\n\nevent: error\ndata: ");
  ASSERT_NE(event, std::string::npos) << body;
  EXPECT_NE(body.find("upstream_reset", event), std::string::npos);
  EXPECT_NE(body.find("the response is incomplete", event), std::string::npos);
  EXPECT_TRUE(stream_.close_connection_after_response);
  EXPECT_EQ(stream_.info.error_code, "upstream_reset");
  EXPECT_EQ(stats_->upstream_rq_reset.value(), 1u);
}

TEST_F(RouterTest, AJsonBodyCutShortResetsTheClientStream) {
  send("{}");
  last().callbacks->onUpstreamHeaders(response(200, "application/json"), false);
  data(last(), "{\"id\":", false);
  last().callbacks->onUpstreamFailure(upstream::UpstreamFailure::Reset, "closed");
  ASSERT_EQ(stream_.resets.size(), 1u);
  EXPECT_EQ(stream_.resets[0], "upstream_reset");
  EXPECT_FALSE(stream_.response_complete);  // never a truncated body passed as whole
}

TEST_F(RouterTest, ASlowClientStopsTheUpstreamBeingRead) {
  send("{}");
  last().callbacks->onUpstreamHeaders(response(200, "text/event-stream"), false);
  stream_.raiseHighWatermark();
  stream_.lowerBelowLowWatermark();
  EXPECT_EQ(last().read_disable, (std::vector<bool>{true, false}));
}

TEST_F(RouterTest, AClientAlreadyBehindStopsTheUpstreamAtOnce) {
  stream_.above_high_watermark = true;
  send("{}");
  EXPECT_EQ(last().read_disable, (std::vector<bool>{true}));
}

TEST_F(RouterTest, TheClientGoingAwayClosesTheUpstream) {
  send("{}");
  last().callbacks->onUpstreamHeaders(response(200, "text/event-stream"), false);
  stream_.destroyFilters();
  EXPECT_TRUE(last().reset);
  EXPECT_EQ(last().host->in_flight.load(), 0);
}

TEST_F(RouterTest, AnEmptyClusterIs503) {
  cluster_->hosts.clear();
  send("{}");
  EXPECT_TRUE(upstreams_.exchanges.empty());
  EXPECT_EQ(stream_.responseStatus(), 503);
  EXPECT_EQ(stream_.responseError()->code, "no_upstream");
}

TEST_F(RouterTest, AnUnavailableHostIsAvoided) {
  cluster_->hosts[0]->setHealthy(false);
  for (int i = 0; i < 8; ++i) {
    test::FakeStream s;
    s.worker_locals.set(kRouterContextKey, context_);
    s.request = stream_.request;
    s.addFilters(makeFactory(cluster_, 60000));
    s.decodeHeaders(true);
    EXPECT_EQ(last().host, cluster_->hosts[1]);
    s.destroyFilters();
  }
}

}  // namespace
}  // namespace eldric::router
