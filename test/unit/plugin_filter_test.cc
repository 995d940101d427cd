// The plugin filter on a fake stream with real plugin processes: Debian's
// /usr/bin/python3 running the embedded host (filters/plugins/python), as
// the Edge runs them (sandboxed when bubblewrap works here). What the
// filter does with each answer the protocol allows, and with each way a
// plugin can fail.

#include "filters/plugins/plugin_filter.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "common/crypto.h"
#include "dataplane/http/route.h"
#include "filters/plugins/host_script.h"
#include "filters/plugins/runtime.h"
#include "test/unit/fake_stream.h"

namespace eldric::test {
namespace {

using filters::plugins::PluginHost;

edge::v1::RunnablePlugin plugin(const std::string& id, const std::string& type,
                                const std::string& main_py) {
  edge::v1::RunnablePlugin p;
  p.set_id(id);
  p.set_type(type);
  p.set_valves_json("{}");
  auto* f = p.add_files();
  f->set_path("main.py");
  f->set_content(main_py);
  unsigned char digest[32];
  crypto::sha256(main_py.data(), main_py.size(), digest);
  f->set_sha256(digest, 32);
  p.set_code_sha256(crypto::sha256Hex(main_py));
  return p;
}

// A chat chunk's SSE event carrying `text`.
std::string contentEvent(const std::string& text, const char* end = "\n\n") {
  return "data: {\"choices\":[{\"delta\":{\"content\":\"" + text + "\"}}]}" + end;
}

class PluginFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/eldric-plugin-test-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    runtime_dir_ = tmpl;
  }
  void TearDown() override {
    streams_.clear();
    host_.reset();
    std::string cmd = "rm -rf " + runtime_dir_;
    (void)system(cmd.c_str());
  }

  // Starts `plugins` on the test's loop and waits until each runs.
  void start(std::vector<edge::v1::RunnablePlugin> plugins, uint64_t max_message_bytes = 0) {
    edge::v1::Plugins snap;
    snap.set_runtime_dir(runtime_dir_);
    snap.set_max_message_bytes(max_message_bytes);
    for (auto& p : plugins) *snap.add_plugins() = std::move(p);
    std::shared_ptr<filters::plugins::PluginsConfig> cfg;
    std::string error;
    ASSERT_TRUE(runtime_.compile(snap, &cfg, &error)) << error;
    host_ = std::make_unique<PluginHost>(dispatcher());
    host_->apply(cfg);
    for (const auto& spec : cfg->plugins) {
      ASSERT_TRUE(runUntil([&] { return spec->status->running.load() > 0; }, 20000))
          << spec->id << " did not start: " << runtime_.statusJson(spec->id, false);
    }
  }

  // A stream on the chat route with the plugin filter in its chain.
  FakeStream& stream(const std::string& route = "chat_completions") {
    streams_.push_back(std::make_unique<FakeStream>());
    FakeStream& s = *streams_.back();
    s.matched_route.name = route;
    s.matched_route.count_tokens = route != "models";
    s.worker_locals.set(filters::plugins::kPluginHostKey,
                        std::shared_ptr<PluginHost>(std::shared_ptr<void>(), host_.get()));
    // The stream's loop is the host's: the same dispatcher.
    s.addFilters(filters::plugins::makeFactory());
    s.request.method = "POST";
    s.request.path = "/v1/chat/completions";
    return s;
  }

  // A streamed chat request that went on to the router, whose answer's
  // head (an SSE stream) has come back through the filter.
  FakeStream& streamedAnswer() {
    FakeStream& s = stream();
    s.decodeHeaders(false);
    s.decodeData(R"({"model":"m","stream":true,"messages":[]})", true);
    EXPECT_TRUE(runUntil([&] { return s.end_stream_passed_chain; }));
    auto head = std::make_unique<http::ResponseHeaders>();
    head->headers.add("content-type", "text/event-stream");
    s.encodeHeaders(std::move(head), false);
    return s;
  }

  Dispatcher& dispatcher() {
    if (!loop_owner_) loop_owner_ = std::make_unique<FakeStream>();
    return loop_owner_->dispatcher();
  }

  bool runUntil(const std::function<bool()>& done, uint64_t timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    TimerPtr tick = dispatcher().createTimer([] {});
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      tick->enable(5);
      uv_run(dispatcher().loop(), UV_RUN_ONCE);
    }
    return true;
  }

  filters::plugins::Runtime runtime_{filters::plugins::kHostScript};
  std::string runtime_dir_;
  std::unique_ptr<FakeStream> loop_owner_;  // owns the dispatcher
  std::unique_ptr<PluginHost> host_;
  std::vector<std::unique_ptr<FakeStream>> streams_;
};

constexpr const char* kUpper = R"(
class Filter:
    def inlet(self, body, __user__=None):
        for m in body.get("messages", []):
            m["content"] = m["content"].upper()
        body["user_seen"] = (__user__ or {}).get("id")
        return body

    def stream(self, event):
        for c in event.get("choices", []):
            d = c.get("delta", {})
            if "content" in d:
                if d["content"] == "drop":
                    return None
                d["content"] = d["content"].replace("a", "A")
        return event
)";

TEST_F(PluginFilterTest, AnInletRewritesTheRequestThatGoesOn) {
  start({plugin("upper", "filter", kUpper)});
  FakeStream& s = stream();
  s.decodeHeaders(false);
  // Pretty-printed, as a client may send it: the protocol stays one line.
  s.decodeData(
      "{\n  \"model\": \"m\",\n  \"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]\n}",
      true);
  ASSERT_TRUE(runUntil([&] { return s.end_stream_passed_chain; }));
  EXPECT_NE(s.body_passed_chain.find(R"("content":"HI")"), std::string::npos)
      << s.body_passed_chain;
  EXPECT_NE(s.body_passed_chain.find(R"("user_seen":"anonymous")"), std::string::npos);
  EXPECT_EQ(*s.request.headers.get("content-length"), std::to_string(s.body_passed_chain.size()));
}

TEST_F(PluginFilterTest, StreamEventsAreRewrittenInOrderAndOneMayBeDropped) {
  start({plugin("upper", "filter", kUpper)});
  FakeStream& s = streamedAnswer();
  Buffer b;
  b.add(contentEvent("banana") + contentEvent("drop"));
  s.encodeData(b, false);
  b.add(contentEvent("papaya") + "data: [DONE]\n\n");
  s.encodeData(b, true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }));
  EXPECT_EQ(s.response_body, contentEvent("bAnAnA") + contentEvent("pApAyA") + "data: [DONE]\n\n");
}

// Every event a client could read as data goes through the filter: data
// over several lines (a client joins them), an event with an id; what a
// filter cannot be given (not a JSON object, or cut short) goes nowhere.
TEST_F(PluginFilterTest, EveryEventAClientWouldReadGoesThroughTheFilter) {
  start({plugin("upper", "filter", kUpper)});
  FakeStream& s = streamedAnswer();
  Buffer b;
  b.add(
      ": keep-alive\n\n"
      "data: {\"choices\":[{\"delta\":\r\ndata: {\"content\":\"banana\"}}]}\r\n\r\n"
      "id: 7\ndata: {\"choices\":[{\"delta\":{\"content\":\"papaya\"}}]}\n\n"
      "data: a plain secret\n\n"
      "data: [DONE]\n\n"
      "data: {\"choices\":[{\"delta\":{\"content\":\"cut sh");
  s.encodeData(b, true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }));
  EXPECT_EQ(s.response_body, ": keep-alive\n\n" + contentEvent("bAnAnA") + "id: 7\n" +
                                 contentEvent("pApAyA") + "data: [DONE]\n\n");
}

TEST_F(PluginFilterTest, AnUpstreamThatEndsMidEventHasThatEventFilteredToo) {
  start({plugin("upper", "filter", kUpper)});
  FakeStream& s = streamedAnswer();
  Buffer b;
  std::string last = contentEvent("papaya");
  b.add(contentEvent("banana") + last.substr(0, last.size() - 1));  // one newline of two
  s.encodeData(b, true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }));
  EXPECT_EQ(s.response_body, contentEvent("bAnAnA") + contentEvent("pApAyA"));
}

// Events that pile up behind a slow stream filter hold the upstream back
// (the router stops reading it) until the filter has caught up.
TEST_F(PluginFilterTest, EventsPilingUpBehindTheFilterHoldTheUpstreamBack) {
  start({plugin("slow", "filter", R"(
import time

class Filter:
    def stream(self, event):
        if event["choices"][0]["delta"]["content"] == "slow":
            time.sleep(0.1)
        return event
)")});
  FakeStream& s = streamedAnswer();
  struct Reader : http::DownstreamWatermarkCallbacks {
    void onAboveWriteBufferHighWatermark() override { ++above; }
    void onBelowWriteBufferLowWatermark() override { ++below; }
    int above = 0, below = 0;
  } reader;
  s.addDownstreamWatermarkCallbacks(reader);
  std::string many;
  for (int i = 0; i < 5000; ++i) many += contentEvent("token" + std::to_string(i));
  ASSERT_GT(many.size(), 256u * 1024);
  Buffer b;
  b.add(contentEvent("slow") + many);
  s.encodeData(b, false);
  EXPECT_EQ(reader.above, 1);  // at once: the queue is past 256 KiB
  EXPECT_EQ(reader.below, 0);
  ASSERT_TRUE(runUntil([&] { return reader.below == 1; }, 30000));
  b.add("data: [DONE]\n\n");
  s.encodeData(b, true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }, 30000));
  EXPECT_EQ(s.response_body, contentEvent("slow") + many + "data: [DONE]\n\n");
  EXPECT_EQ(reader.above, 1);
}

TEST_F(PluginFilterTest, AnEventTooLargeForThePluginEndsTheStreamRatherThanPassUnfiltered) {
  // plugins.max_message_kb 64: an event may take 60 KiB of it.
  start({plugin("upper", "filter", kUpper)}, 64 << 10);
  FakeStream& s = streamedAnswer();
  auto event = [](const std::string& text) { return contentEvent(text, "\r\n\r\n"); };
  std::string big = event(std::string(70000, 'a'));
  Buffer b;
  b.add(event("banana") + big.substr(0, 40000));
  s.encodeData(b, false);
  b.add(big.substr(40000) + event("papaya") + "data: [DONE]\n\n");
  s.encodeData(b, true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }));
  std::string want = contentEvent("bAnAnA");
  ASSERT_EQ(s.response_body.substr(0, want.size()), want) << s.response_body.substr(0, 200);
  std::string rest = s.response_body.substr(want.size());
  EXPECT_NE(rest.find("plugins.max_message_kb"), std::string::npos) << rest;
  EXPECT_NE(rest.find("\"code\":\"bad_upstream_response\""), std::string::npos) << rest;
  EXPECT_EQ(rest.find("aaaa"), std::string::npos);
  EXPECT_EQ(rest.find("pApAyA"), std::string::npos);
  EXPECT_EQ(rest.substr(rest.size() - 14), "data: [DONE]\n\n");
}

TEST_F(PluginFilterTest, AnInletThatRaisesRefusesTheRequestWithItsMessage) {
  start({plugin("strict", "filter", R"(
class Filter:
    async def inlet(self, body, __user__=None):
        raise ValueError("no shouting")
)")});
  FakeStream& s = stream();
  s.decodeHeaders(false);
  s.decodeData(R"({"model":"m","messages":[]})", true);
  ASSERT_TRUE(runUntil([&] { return s.localReply() != nullptr; }));
  EXPECT_EQ(s.localReply()->reply.status, 400);
  EXPECT_EQ(s.localReply()->reply.code, "plugin_refused");
  EXPECT_EQ(s.localReply()->reply.message, "no shouting");
  EXPECT_FALSE(s.headers_passed_chain);
}

constexpr const char* kSlow = R"(
import time
class Filter:
    def inlet(self, body, __user__=None):
        time.sleep(5)
        return body
)";

TEST_F(PluginFilterTest, AMissedDeadlineRefusesFailClosedAndReplacesTheProcess) {
  auto p = plugin("slow", "filter", kSlow);
  p.mutable_inlet_timeout()->set_nanos(200 * 1000000);
  start({p});
  FakeStream& s = stream();
  s.decodeHeaders(false);
  s.decodeData(R"({"model":"m","messages":[]})", true);
  ASSERT_TRUE(runUntil([&] { return s.localReply() != nullptr; }));
  EXPECT_EQ(s.localReply()->reply.status, 503);
  EXPECT_EQ(s.localReply()->reply.code, "plugin_unavailable");
  EXPECT_NE(s.localReply()->reply.message.find("slow"), std::string::npos);
  auto status = runtime_.status().find("slow");
  ASSERT_TRUE(
      runUntil([&] { return status->restarts.load() >= 1 && status->running.load() > 0; }, 20000));
}

TEST_F(PluginFilterTest, ACrashFailOpenLetsTheRequestGoOnUntouched) {
  auto p = plugin("crash", "filter", R"(
import os
class Filter:
    def inlet(self, body, __user__=None):
        os._exit(3)
)");
  p.set_on_error(edge::v1::PLUGIN_ERROR_POLICY_FAIL_OPEN);
  start({p});
  FakeStream& s = stream();
  s.decodeHeaders(false);
  s.decodeData(R"({"model":"m","messages":[]})", true);
  ASSERT_TRUE(runUntil([&] { return s.end_stream_passed_chain; }));
  EXPECT_EQ(s.body_passed_chain, R"({"model":"m","messages":[]})");
  EXPECT_TRUE(s.local_replies.empty());
  auto status = runtime_.status().find("crash");
  EXPECT_EQ(status
                ->calls[static_cast<int>(filters::plugins::Hook::Inlet)]
                       [static_cast<int>(filters::plugins::Outcome::Failed)]
                .load(),
            1u);
}

TEST_F(PluginFilterTest, APipeAnswersItsModelStreamedAndTheRouterNeverSeesIt) {
  start({plugin("gen", "pipe", R"(
class Pipe:
    def pipes(self):
        return [{"id": "words", "name": "Words"}]
    def pipe(self, body, __user__=None):
        for w in ["one ", "two"]:
            yield w
)")});
  FakeStream& s = stream();
  s.decodeHeaders(false);
  s.decodeData(R"({"model":"gen.words","stream":true,"messages":[]})", true);
  ASSERT_TRUE(runUntil([&] { return s.response_complete; }));
  EXPECT_FALSE(s.headers_passed_chain);
  EXPECT_EQ(s.responseStatus(), 200);
  EXPECT_NE(s.response_body.find(R"("content":"one ")"), std::string::npos) << s.response_body;
  EXPECT_NE(s.response_body.find(R"("content":"two")"), std::string::npos);
  EXPECT_NE(s.response_body.find("data: [DONE]"), std::string::npos);
}

TEST_F(PluginFilterTest, APipeModelIsRefusedToAKeyLimitedToOtherModels) {
  start({plugin("echo", "pipe", R"(
class Pipe:
    def pipe(self, body, __user__=None):
        return "hi"
)")});
  FakeStream& s = stream();
  auto who = std::make_shared<http::ClientIdentity>();
  who->client_id = "c1";
  who->allowed_models = {"m"};
  s.info.identity = who;
  s.decodeHeaders(false);
  s.decodeData(R"({"model":"echo","messages":[]})", true);
  ASSERT_TRUE(runUntil([&] { return s.localReply() != nullptr; }));
  EXPECT_EQ(s.localReply()->reply.status, 403);
  EXPECT_EQ(s.localReply()->reply.code, "model_not_allowed");
}

}  // namespace
}  // namespace eldric::test
