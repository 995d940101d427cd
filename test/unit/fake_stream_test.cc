// The fake stream itself: that it drives a chain as the connection manager
// does (order, stops, buffering, local replies, resets) and records what
// filters do, so that filter tests built on it assert real behaviour.

#include "test/unit/fake_stream.h"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace eldric::test {
namespace {

using http::FilterDataStatus;
using http::FilterHeadersStatus;

// A filter on both paths that logs what it sees into a shared journal and
// answers as told.
class Recorder : public http::StreamDecoderFilter, public http::StreamEncoderFilter {
 public:
  Recorder(std::string name, std::vector<std::string>* journal)
      : name_(std::move(name)), journal_(journal) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { decoder = &cb; }
  void setEncoderFilterCallbacks(http::EncoderFilterCallbacks& cb) override { encoder = &cb; }
  FilterHeadersStatus decodeHeaders(http::RequestHeaders&, bool end) override {
    journal_->push_back(name_ + ".dh" + (end ? "!" : ""));
    return decode_headers;
  }
  FilterDataStatus decodeData(Buffer& data, bool end) override {
    journal_->push_back(name_ + ".dd(" + data.toString() + ")" + (end ? "!" : ""));
    held_body = &data;
    return decode_data;
  }
  FilterHeadersStatus encodeHeaders(http::ResponseHeaders& h, bool end) override {
    journal_->push_back(name_ + ".eh" + (end ? "!" : ""));
    h.headers.add("x-seen-by", name_);
    return encode_headers;
  }
  FilterDataStatus encodeData(Buffer& data, bool end) override {
    journal_->push_back(name_ + ".ed(" + data.toString() + ")" + (end ? "!" : ""));
    held_body = &data;
    return encode_data;
  }
  void onDestroy() override { journal_->push_back(name_ + ".destroy"); }

  FilterHeadersStatus decode_headers = FilterHeadersStatus::Continue;
  FilterDataStatus decode_data = FilterDataStatus::Continue;
  FilterHeadersStatus encode_headers = FilterHeadersStatus::Continue;
  FilterDataStatus encode_data = FilterDataStatus::Continue;
  http::DecoderFilterCallbacks* decoder = nullptr;
  http::EncoderFilterCallbacks* encoder = nullptr;
  // The buffer last given to decodeData/encodeData: the manager's, when
  // the filter holds a whole body.
  Buffer* held_body = nullptr;

 private:
  std::string name_;
  std::vector<std::string>* journal_;
};

struct Chain {
  explicit Chain(int n) {
    for (int i = 0; i < n; ++i) {
      auto f = std::make_shared<Recorder>("f" + std::to_string(i), &journal);
      filters.push_back(f.get());
      stream.addStreamFilter(f, f);
    }
  }
  // Before the stream: its filters write here until it is gone.
  std::vector<std::string> journal;
  FakeStream stream;
  std::vector<Recorder*> filters;
};

using Journal = std::vector<std::string>;

TEST(FakeStreamTest, DecodersRunInOrderAndEncodersInReverse) {
  Chain c(2);
  c.stream.decodeHeaders(false);
  c.stream.decodeData("body", true);
  c.stream.respond(200, "ok");
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f1.dh", "f0.dd(body)!", "f1.dd(body)!", "f1.eh", "f0.eh",
                                "f1.ed(ok)!", "f0.ed(ok)!"}));
  EXPECT_TRUE(c.stream.headers_passed_chain);
  EXPECT_EQ(c.stream.body_passed_chain, "body");
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
  EXPECT_EQ(c.stream.responseStatus(), 200);
  EXPECT_EQ(c.stream.response_body, "ok");
  EXPECT_TRUE(c.stream.response_complete);
  EXPECT_EQ(c.stream.info.status, 200);
}

TEST(FakeStreamTest, HeadersOnlyRequestEndsAtTheHeaders) {
  Chain c(1);
  c.stream.decodeHeaders(true);
  EXPECT_EQ(c.journal, (Journal{"f0.dh!"}));
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
}

TEST(FakeStreamTest, StopInHeadersHoldsTheChainAndItsBodyUntilContinue) {
  Chain c(3);
  c.filters[1]->decode_headers = FilterHeadersStatus::StopIteration;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("a", false);
  c.stream.decodeData("b", true);
  // The filter before the stop sees the data; the one that stopped does not.
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f1.dh", "f0.dd(a)", "f0.dd(b)!"}));
  EXPECT_FALSE(c.stream.headers_passed_chain);

  c.journal.clear();
  int hooked = 0;
  c.stream.on_continue_decoding = [&] { ++hooked; };
  c.filters[1]->decoder->continueDecoding();
  EXPECT_EQ(c.journal, (Journal{"f2.dh", "f1.dd(ab)!", "f2.dd(ab)!"}));
  EXPECT_EQ(c.stream.continue_decoding_calls, 1);
  EXPECT_EQ(hooked, 1);
  EXPECT_TRUE(c.stream.headers_passed_chain);
  EXPECT_EQ(c.stream.body_passed_chain, "ab");
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
}

TEST(FakeStreamTest, StopAndBufferGivesTheWholeBodyOnceAtTheEnd) {
  Chain c(2);
  c.filters[0]->decode_data = FilterDataStatus::StopIterationAndBuffer;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("x", false);
  c.filters[0]->decode_data = FilterDataStatus::Continue;
  c.stream.decodeData("y", false);
  c.stream.decodeData("z", true);
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f1.dh", "f0.dd(x)", "f0.dd(xyz)!", "f1.dd(xyz)!"}));
  EXPECT_EQ(c.stream.body_passed_chain, "xyz");
}

TEST(FakeStreamTest, NoBufferAtTheEndWaitsForContinueDecoding) {
  Chain c(2);
  c.filters[0]->decode_data = FilterDataStatus::StopIterationNoBuffer;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("gone", true);
  EXPECT_FALSE(c.stream.end_stream_passed_chain);
  c.filters[0]->decoder->continueDecoding();
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
  EXPECT_EQ(c.stream.body_passed_chain, "");
}

TEST(FakeStreamTest, LocalReplyIsOpenAiShapedAndSkipsLaterDecoders) {
  Chain c(3);
  c.stream.on_local_reply = [&](const http::ErrorReply& r) { c.journal.push_back("hook"); };
  c.filters[1]->decode_headers = FilterHeadersStatus::StopIteration;
  c.stream.decodeHeaders(true);
  c.filters[1]->decoder->sendLocalReply(
      http::ErrorReply{429, "slow down", "", "too_fast"},
      [](http::ResponseHeaders& h) { h.headers.add("retry-after", "3"); });
  c.filters[1]->decoder->continueDecoding();  // too late: decoding is over
  EXPECT_EQ(c.journal, (Journal{"f0.dh!", "f1.dh!", "hook", "f2.eh", "f1.eh", "f0.eh",
                                "f2.ed(" + c.stream.response_body + ")!",
                                "f1.ed(" + c.stream.response_body + ")!",
                                "f0.ed(" + c.stream.response_body + ")!"}));
  ASSERT_NE(c.stream.localReply(), nullptr);
  EXPECT_EQ(c.stream.localReply()->reply.status, 429);
  EXPECT_EQ(c.stream.responseStatus(), 429);
  EXPECT_EQ(c.stream.response_body,
            R"({"error":{"message":"slow down","type":"rate_limit_error","param":null,)"
            R"("code":"too_fast"}})");
  EXPECT_EQ(c.stream.localReply()->body, c.stream.response_body);
  auto error = c.stream.responseError();
  ASSERT_TRUE(error);
  EXPECT_EQ(error->message, "slow down");
  EXPECT_EQ(error->type, "rate_limit_error");
  EXPECT_EQ(error->code, "too_fast");
  EXPECT_EQ(c.stream.responseHeader("retry-after"), "3");
  EXPECT_EQ(c.stream.responseHeader("content-type"), "application/json");
  EXPECT_EQ(c.stream.responseHeader("content-length"),
            std::to_string(c.stream.response_body.size()));
  EXPECT_EQ(c.stream.localReply()->headers.headers.count("x-seen-by"), 0u);
  EXPECT_EQ(c.stream.response_headers->headers.count("x-seen-by"), 3u);
  EXPECT_EQ(c.stream.info.error_code, "too_fast");
  EXPECT_FALSE(c.stream.headers_passed_chain);
}

TEST(FakeStreamTest, LocalReplyAfterTheResponseStartedResetsTheStream) {
  Chain c(1);
  std::string reset_reason;
  c.stream.on_reset = [&](std::string_view why) { reset_reason = std::string(why); };
  c.stream.decodeHeaders(true);
  auto h = std::make_unique<http::ResponseHeaders>();
  c.stream.encodeHeaders(std::move(h), false);
  c.stream.sendLocalReply(http::ErrorReply{502, "upstream gone", "", "upstream_reset"});
  EXPECT_EQ(c.stream.resets, (std::vector<std::string>{"upstream_reset"}));
  EXPECT_EQ(reset_reason, "upstream_reset");
  EXPECT_EQ(c.stream.responseStatus(), 200);
  EXPECT_TRUE(c.stream.filtersDestroyed());
  EXPECT_EQ(c.journal.back(), "f0.destroy");
}

TEST(FakeStreamTest, ResetDestroysFiltersOnceAndStopsEverything) {
  Chain c(2);
  c.stream.decodeHeaders(false);
  c.filters[0]->decoder->resetStream("bad");
  c.stream.resetStream("again");
  c.stream.destroyFilters();
  c.stream.decodeData("late", true);
  c.stream.respond(200, "late");
  EXPECT_EQ(c.journal,
            (Journal{"f0.dh", "f1.dh", "f0.destroy", "f1.destroy", "f1.destroy", "f0.destroy"}));
  EXPECT_EQ(c.stream.resets, (std::vector<std::string>{"bad"}));
  EXPECT_EQ(c.stream.info.error_code, "bad");
  EXPECT_EQ(c.stream.responseStatus(), 0);
}

TEST(FakeStreamTest, EncoderStopInHeadersBuffersTheBodyUntilContinue) {
  Chain c(2);
  c.filters[1]->encode_headers = FilterHeadersStatus::StopIteration;
  c.stream.decodeHeaders(true);
  c.stream.respond(201, "made");
  EXPECT_EQ(c.stream.responseStatus(), 0);
  c.filters[1]->encoder->continueEncoding();
  EXPECT_EQ(c.stream.continue_encoding_calls, 1);
  EXPECT_EQ(c.stream.responseStatus(), 201);
  EXPECT_EQ(c.stream.response_body, "made");
  EXPECT_TRUE(c.stream.response_complete);
  // The body that waited behind the held headers goes through the filter
  // that held them and every one after it.
  EXPECT_EQ(c.journal,
            (Journal{"f0.dh!", "f1.dh!", "f1.eh", "f0.eh", "f1.ed(made)!", "f0.ed(made)!"}));
}

TEST(FakeStreamTest, StopAllAndBufferHandsTheWholeRequestBodyToTheFilterThatHeldTheHeaders) {
  Chain c(3);
  c.filters[1]->decode_headers = FilterHeadersStatus::StopAllIterationAndBuffer;
  c.filters[1]->decode_data = FilterDataStatus::StopIterationNoBuffer;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("a", false);
  c.stream.decodeData("b", true);
  // f1 gets the body once, whole; nothing reaches f2 yet.
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f1.dh", "f0.dd(a)", "f0.dd(b)!", "f1.dd(ab)!"}));
  EXPECT_FALSE(c.stream.headers_passed_chain);

  // What a plugin does: rewrites the held body, then resumes. The headers
  // go on without end_stream, then the rewritten body, once.
  c.journal.clear();
  c.filters[1]->held_body->clear();
  c.filters[1]->held_body->add("rewritten");
  c.filters[1]->decoder->continueDecoding();
  EXPECT_EQ(c.journal, (Journal{"f2.dh", "f2.dd(rewritten)!"}));
  EXPECT_EQ(c.stream.body_passed_chain, "rewritten");
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
}

TEST(FakeStreamTest, StopAllAndBufferReturningContinueLetsHeadersAndBodyGoOn) {
  Chain c(2);
  c.filters[0]->decode_headers = FilterHeadersStatus::StopAllIterationAndBuffer;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("xy", true);
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f0.dd(xy)!", "f1.dh", "f1.dd(xy)!"}));
  EXPECT_EQ(c.stream.body_passed_chain, "xy");
}

TEST(FakeStreamTest, StopAllAndBufferAfterAnEarlierStopGetsTheBodyThatAlreadyArrived) {
  Chain c(3);
  c.filters[0]->decode_headers = FilterHeadersStatus::StopIteration;
  c.filters[1]->decode_headers = FilterHeadersStatus::StopAllIterationAndBuffer;
  c.stream.decodeHeaders(false);
  c.stream.decodeData("whole", true);
  c.filters[0]->decoder->continueDecoding();
  EXPECT_EQ(c.journal, (Journal{"f0.dh", "f1.dh", "f1.dd(whole)!", "f2.dh", "f2.dd(whole)!"}));
}

TEST(FakeStreamTest, StopAllAndBufferWithoutABodyIsAPlainStop) {
  Chain c(2);
  c.filters[0]->decode_headers = FilterHeadersStatus::StopAllIterationAndBuffer;
  c.stream.decodeHeaders(true);
  EXPECT_EQ(c.journal, (Journal{"f0.dh!"}));
  c.filters[0]->decoder->continueDecoding();
  EXPECT_EQ(c.journal, (Journal{"f0.dh!", "f1.dh!"}));
  EXPECT_TRUE(c.stream.end_stream_passed_chain);
}

TEST(FakeStreamTest, EncoderStopAllAndBufferRewritesTheWholeResponseBeforeItsHeadersGo) {
  Chain c(2);
  c.filters[1]->encode_headers = FilterHeadersStatus::StopAllIterationAndBuffer;
  c.filters[1]->encode_data = FilterDataStatus::StopIterationNoBuffer;
  c.stream.decodeHeaders(true);
  auto headers = std::make_unique<http::ResponseHeaders>();
  headers->status = 200;
  c.stream.encodeHeaders(std::move(headers), false);
  Buffer part;
  part.add("ab");
  c.stream.encodeData(part, false);
  part.add("cd");
  c.stream.encodeData(part, true);
  EXPECT_EQ(c.stream.responseStatus(), 0);
  c.filters[1]->held_body->clear();
  c.filters[1]->held_body->add("new");
  c.filters[1]->encoder->continueEncoding();
  EXPECT_EQ(c.stream.responseStatus(), 200);
  EXPECT_EQ(c.stream.response_body, "new");
  EXPECT_TRUE(c.stream.response_complete);
  EXPECT_EQ(c.journal,
            (Journal{"f0.dh!", "f1.dh!", "f1.eh", "f1.ed(abcd)!", "f0.eh", "f0.ed(new)!"}));
}

TEST(FakeStreamTest, DataInjectedIntoTheChainGoesThroughTheEncodersAfterTheInjector) {
  Chain c(3);
  c.filters[2]->encode_data = FilterDataStatus::StopIterationNoBuffer;
  c.stream.decodeHeaders(true);
  c.stream.encodeHeaders(std::make_unique<http::ResponseHeaders>(), false);
  Buffer chunk;
  chunk.add("one");
  c.stream.encodeData(chunk, false);
  Buffer later;
  later.add("ONE");
  c.filters[2]->encoder->injectEncodedDataToFilterChain(*c.filters[2], later, true);
  EXPECT_EQ(c.stream.response_body, "ONE");
  EXPECT_TRUE(c.stream.response_complete);
  EXPECT_EQ(c.journal, (Journal{"f0.dh!", "f1.dh!", "f2.dh!", "f2.eh", "f1.eh", "f0.eh",
                                "f2.ed(one)", "f1.ed(ONE)!", "f0.ed(ONE)!"}));
}

TEST(FakeStreamTest, InjectedDataSkipsTheEncodersAndGoesToTheClient) {
  Chain c(1);
  c.stream.encodeHeaders(std::make_unique<http::ResponseHeaders>(), false);
  Buffer extra;
  extra.add("event");
  c.filters[0]->encoder->injectEncodedData(extra, true);
  EXPECT_EQ(c.stream.injected, "event");
  EXPECT_EQ(c.stream.response_body, "event");
  EXPECT_TRUE(c.stream.response_complete);
  EXPECT_EQ(c.journal, (Journal{"f0.eh"}));
}

TEST(FakeStreamTest, RequestIdIsAddedToTheResponse) {
  FakeStream s;
  s.info.request_id = "rid-1";
  s.respond(204);
  EXPECT_EQ(s.responseHeader("x-request-id"), "rid-1");
}

TEST(FakeStreamTest, ReadDisableIsRecordedAndReleasedOnDestroy) {
  FakeStream s;
  s.readDisableDownstream(true);
  s.readDisableDownstream(true);  // no change: not passed on
  s.readDisableDownstream(false);
  s.readDisableDownstream(true);
  s.destroyFilters();
  EXPECT_EQ(s.read_disable_calls, (std::vector<bool>{true, false, true, false}));
  EXPECT_FALSE(s.read_disabled);
}

class Watermarks : public http::DownstreamWatermarkCallbacks {
 public:
  void onAboveWriteBufferHighWatermark() override { ++above; }
  void onBelowWriteBufferLowWatermark() override { ++below; }
  int above = 0, below = 0;
};

TEST(FakeStreamTest, WatermarkCallbacksAreToldAndForgotten) {
  FakeStream s;
  Watermarks a, b;
  s.addDownstreamWatermarkCallbacks(a);
  s.raiseHighWatermark();
  s.addDownstreamWatermarkCallbacks(b);  // the client is already behind
  EXPECT_EQ(b.above, 1);
  s.removeDownstreamWatermarkCallbacks(a);
  s.lowerBelowLowWatermark();
  EXPECT_EQ(a.above, 1);
  EXPECT_EQ(a.below, 0);
  EXPECT_EQ(b.below, 1);
  s.destroyFilters();
  EXPECT_TRUE(s.watermarkCallbacks().empty());
}

// An encoder filter that holds too much (a plugin behind the upstream)
// holds the upstream back as a slow client does; the readers hear one
// "above" while either is behind and one "below" when neither is.
TEST(FakeStreamTest, AFilterBehindHoldsTheUpstreamBackWithTheClient) {
  FakeStream s;
  Watermarks w;
  s.addDownstreamWatermarkCallbacks(w);
  s.onEncoderFilterAboveWriteBufferHighWatermark();
  EXPECT_EQ(w.above, 1);
  s.raiseHighWatermark();  // the client too: nothing new to say
  EXPECT_EQ(w.above, 1);
  s.onEncoderFilterBelowWriteBufferLowWatermark();  // the client still behind
  EXPECT_EQ(w.below, 0);
  s.lowerBelowLowWatermark();
  EXPECT_EQ(w.below, 1);
  // Two filters: the upstream goes on when both are below.
  s.onEncoderFilterAboveWriteBufferHighWatermark();
  s.onEncoderFilterAboveWriteBufferHighWatermark();
  EXPECT_EQ(w.above, 2);
  Watermarks late;
  s.addDownstreamWatermarkCallbacks(late);  // a filter is behind: told at once
  EXPECT_EQ(late.above, 1);
  s.onEncoderFilterBelowWriteBufferLowWatermark();
  EXPECT_EQ(w.below, 1);
  s.onEncoderFilterBelowWriteBufferLowWatermark();
  EXPECT_EQ(w.below, 2);
  s.onEncoderFilterBelowWriteBufferLowWatermark();  // unpaired: ignored
  EXPECT_EQ(w.below, 2);
  // The client alone, as before.
  s.raiseHighWatermark();
  s.lowerBelowLowWatermark();
  EXPECT_EQ(w.above, 3);
  EXPECT_EQ(w.below, 3);
}

TEST(FakeStreamTest, FactoriesSeeTheWorkerLocalsAndAddFilters) {
  static constexpr http::FilterStateKey<std::string> kPool{"test.pool"};
  FakeStream s;
  s.worker_locals.set(kPool, std::make_shared<std::string>("pool-7"));
  std::vector<std::string> journal;
  s.addFilters([&journal](http::FilterChainBuilder& b) {
    auto* pool = b.workerLocals().get(kPool);
    ASSERT_NE(pool, nullptr);
    b.addDecoderFilter(std::make_unique<Recorder>("d-" + *pool, &journal));
    b.addEncoderFilter(std::make_unique<Recorder>("e", &journal));
  });
  EXPECT_EQ(s.decoderFilterCount(), 1u);
  EXPECT_EQ(s.encoderFilterCount(), 1u);
  s.decodeHeaders(true);
  s.respond(200);
  s.destroyFilters();
  EXPECT_EQ(journal, (Journal{"d-pool-7.dh!", "e.eh!", "d-pool-7.destroy", "e.destroy"}));
}

TEST(FakeStreamTest, CallbacksExposeWhatTheTestSet) {
  FakeStream s;
  s.peer_ip = "203.0.113.9";
  s.client_scheme = "https";
  s.request.path = "/v1/models";
  s.matched_route.name = "models";
  http::DecoderFilterCallbacks& cb = s;
  EXPECT_EQ(cb.peerIp(), "203.0.113.9");
  EXPECT_EQ(cb.scheme(), "https");
  EXPECT_EQ(cb.requestHeaders().path, "/v1/models");
  EXPECT_EQ(cb.route()->name, "models");
  s.has_route = false;
  EXPECT_EQ(cb.route(), nullptr);
  cb.closeConnectionAfterResponse();
  cb.continue100();
  EXPECT_TRUE(s.close_connection_after_response);
  EXPECT_EQ(s.continue100_calls, 1);
  EXPECT_NE(cb.dispatcher().loop(), nullptr);
}

}  // namespace
}  // namespace eldric::test
