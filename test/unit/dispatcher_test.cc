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

// Runs the loop until `stop_after_ms` of loop time have passed (bounded).
void runFor(Dispatcher& d, uint64_t stop_after_ms) {
  auto stop = d.createTimer([&d] { uv_stop(d.loop()); });
  stop->enable(stop_after_ms);
  uv_run(d.loop(), UV_RUN_DEFAULT);
}

// Lazy re-arming: a deadline pushed back is honoured (not the first one),
// one brought forward is too, and a disabled timer stays silent even
// though its libuv timer may still fire.
TEST(DispatcherTest, TimerFiresAtTheLastDeadlineSet) {
  Dispatcher d;
  uv_update_time(d.loop());
  uint64_t start = uv_now(d.loop());
  std::vector<uint64_t> later, sooner, disabled, refired;
  TimerPtr a = d.createTimer([&] { later.push_back(uv_now(d.loop()) - start); });
  TimerPtr b = d.createTimer([&] { sooner.push_back(uv_now(d.loop()) - start); });
  TimerPtr c = d.createTimer([&] { disabled.push_back(uv_now(d.loop()) - start); });
  TimerPtr r;
  r = d.createTimer([&] {
    refired.push_back(uv_now(d.loop()) - start);
    if (refired.size() < 2) r->enable(10);  // re-enabled from its own callback
  });
  a->enable(20);
  a->enable(60);  // pushed back: must not fire at 20
  b->enable(1000);
  b->disable();
  b->enable(30);  // brought forward
  c->enable(10);
  c->disable();
  r->enable(5);
  EXPECT_TRUE(a->enabled());
  EXPECT_FALSE(c->enabled());
  runFor(d, 150);
  ASSERT_EQ(later.size(), 1u);
  EXPECT_GE(later[0], 60u);
  ASSERT_EQ(sooner.size(), 1u);
  EXPECT_GE(sooner[0], 30u);
  EXPECT_LT(sooner[0], 1000u);
  EXPECT_TRUE(disabled.empty());
  ASSERT_EQ(refired.size(), 2u);
  EXPECT_GE(refired[1], refired[0] + 10);
  EXPECT_FALSE(a->enabled());
  EXPECT_FALSE(r->enabled());
}

// A Timer still alive when its dispatcher is torn down (its owner goes
// only in a close callback at exit, or later): the handle is freed with the
// loop, and the Timer touches neither afterwards (ASan: no leak, no use
// after free).
TEST(DispatcherTest, ATimerAliveAtTeardownIsFreedAndLetGo) {
  auto d = std::make_unique<Dispatcher>();
  TimerPtr armed = d->createTimer([] {});
  armed->enable(100000);
  TimerPtr idle = d->createTimer([] {});
  d.reset();
  armed->enable(5);
  armed->disable();
  armed.reset();
  idle.reset();
}

struct Later : ExpensiveWork {
  explicit Later(std::vector<int>* log, int id) : log(log), id(id) {}
  void onAdmitted() override { log->push_back(id); }
  std::vector<int>* log;
  int id;
};

// Queued from inside an iteration's check phase, as a connection's read
// callback would in its poll phase.
struct QueuesFromFlush : Flushable {
  QueuesFromFlush(Dispatcher& d, std::vector<ExpensiveWork*> w) : d(d), w(std::move(w)) {}
  void onFlush() override {
    for (auto* x : w) d.queueExpensiveWork(x);
  }
  Dispatcher& d;
  std::vector<ExpensiveWork*> w;
};

TEST(DispatcherTest, QueuedExpensiveWorkRunsInLaterIterationsInArrivalOrder) {
  Dispatcher d;
  d.setExpensiveWorkBudget(1);  // 1 ns: one step per iteration
  std::vector<int> log;
  Later a(&log, 1), b(&log, 2), c(&log, 3);
  QueuesFromFlush f(d, {&a, &b, &c});
  d.scheduleFlush(&f);
  uv_run(d.loop(), UV_RUN_NOWAIT);  // queued; none runs in the same iteration
  EXPECT_TRUE(log.empty());
  // Later arrivals wait behind the queue.
  EXPECT_FALSE(d.admitExpensiveWork());
  uv_run(d.loop(), UV_RUN_NOWAIT);  // polls without blocking, then admits one
  EXPECT_EQ(log, std::vector<int>({1}));
  uv_run(d.loop(), UV_RUN_NOWAIT);
  uv_run(d.loop(), UV_RUN_NOWAIT);
  EXPECT_EQ(log, std::vector<int>({1, 2, 3}));
  uv_run(d.loop(), UV_RUN_NOWAIT);
  EXPECT_EQ(log.size(), 3u);  // once each
  d.markBusy();
  EXPECT_TRUE(d.admitExpensiveWork());  // the queue is empty again
}

TEST(DispatcherTest, CancelledQueuedWorkDoesNotRun) {
  Dispatcher d;
  std::vector<int> log;
  Later a(&log, 1), b(&log, 2);
  d.queueExpensiveWork(&a);
  d.queueExpensiveWork(&b);
  d.cancelExpensiveWork(&a);
  uv_run(d.loop(), UV_RUN_NOWAIT);
  uv_run(d.loop(), UV_RUN_NOWAIT);
  EXPECT_EQ(log, std::vector<int>({2}));
}

TEST(DispatcherTest, TheExpensiveWorkBudgetAdmitsOneThenWaitsForTheNextIteration) {
  Dispatcher d;
  d.setExpensiveWorkBudget(1);  // 1 ns
  d.markBusy();
  EXPECT_TRUE(d.admitExpensiveWork());  // the first of an iteration always runs
  uint64_t t = uv_hrtime();
  while (uv_hrtime() == t) {
  }
  EXPECT_FALSE(d.admitExpensiveWork());
  uv_run(d.loop(), UV_RUN_NOWAIT);  // a new iteration
  d.markBusy();
  EXPECT_TRUE(d.admitExpensiveWork());

  d.setExpensiveWorkBudget(0);  // no budget: everything runs
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(d.admitExpensiveWork());
}

TEST(DispatcherTest, TheObserverSeesEachBusyIterationOnce) {
  Dispatcher d;
  std::vector<uint64_t> busy;
  d.setIterationObserver(
      [](void* ctx, uint64_t ns) { static_cast<std::vector<uint64_t>*>(ctx)->push_back(ns); },
      &busy);
  auto timer = d.createTimer([] {
    uint64_t t = uv_hrtime();
    while (uv_hrtime() - t < 2000000) {
    }
  });
  timer->enable(0);
  uv_run(d.loop(), UV_RUN_NOWAIT);  // the timer runs ~2 ms
  uv_run(d.loop(), UV_RUN_NOWAIT);  // nothing runs: nothing to report
  ASSERT_EQ(busy.size(), 1u);
  EXPECT_GE(busy[0], 2000000u);
  EXPECT_LT(busy[0], 1000000000u);
}

}  // namespace
}  // namespace eldric
