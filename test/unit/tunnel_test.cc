// The tunnel's pieces that meet other layers' defaults.

#include "filters/tunnel/tunnel.h"

#include <gtest/gtest.h>

#include "dataplane/config/runtime_config.h"

namespace eldric {
namespace {

// The tunnel route's body limit (config) and the tunnel filter's answer
// limit are one default: a worker's answer between them would be cut by
// the codec with a 413 the tunnel never explains.
TEST(TunnelLimits, TheAnswerLimitIsTheTunnelRoutesBodyLimit) {
  EXPECT_EQ(config::kDefaultTunnelAnswerBytes, filters::tunnel::TunnelLimits{}.max_answer_bytes);
}

// Flow control: an answer paused for a router that has room again is
// resumed once, by whoever clears the flag; a cancelled router frees it too.
TEST(TunnelFlow, APausedAnswerResumesOnceWhenTheRouterHasRoom) {
  Dispatcher loop;
  struct Sink : filters::tunnel::AnswerSink {
    int resumed = 0;
    void onResume() override { ++resumed; }
  };
  auto sink = std::make_shared<Sink>();
  filters::tunnel::TunnelRequest r;
  r.answer_loop = &loop;
  r.answer_sink = sink;
  r.answer_paused.store(true);
  r.in_transit.store(filters::tunnel::kAnswerHighBytes);
  r.resumeAnswerIfRoom();  // no room: nothing
  r.in_transit.store(0);
  r.router_full.store(true);
  r.resumeAnswerIfRoom();  // the router's connection is full: nothing
  r.router_full.store(false);
  r.resumeAnswerIfRoom();
  r.resumeAnswerIfRoom();  // already resumed
  auto done = loop.createTimer([&] { loop.exit(); });
  done->enable(20);
  loop.run();
  EXPECT_EQ(sink->resumed, 1);
  EXPECT_FALSE(r.answer_paused.load());
  r.answer_paused.store(true);
  r.router_full.store(true);
  r.cancelled.store(true);
  r.resumeAnswerIfRoom();
  done->enable(20);
  loop.run();
  EXPECT_EQ(sink->resumed, 2);
}

}  // namespace
}  // namespace eldric
