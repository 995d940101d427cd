// The dispatcher's flush scheduling: writes scheduled while handling an
// event leave in the same loop iteration's check phase, not before (so the
// pieces of one response leave together) and not later.

#include "dataplane/event/dispatcher.h"

#include <gtest/gtest.h>

#include <vector>

namespace eldric {
namespace {

struct Recorder : Flushable {
  explicit Recorder(std::vector<int>* log, int id) : log(log), id(id) {}
  void onFlush() override { log->push_back(id); }
  std::vector<int>* log;
  int id;
};

TEST(DispatcherTest, ScheduledFlushRunsInTheSameIterationNotBefore) {
  Dispatcher d;
  std::vector<int> log;
  Recorder a(&log, 1);
  d.scheduleFlush(&a);
  EXPECT_TRUE(log.empty());
  uv_run(d.loop(), UV_RUN_NOWAIT);
  EXPECT_EQ(log, std::vector<int>({1}));
}

TEST(DispatcherTest, CancelledFlushDoesNotRun) {
  Dispatcher d;
  std::vector<int> log;
  Recorder a(&log, 1);
  d.scheduleFlush(&a);
  d.cancelFlush(&a);
  uv_run(d.loop(), UV_RUN_NOWAIT);
  EXPECT_TRUE(log.empty());
}

}  // namespace
}  // namespace eldric
