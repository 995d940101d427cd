#pragma once

// One libuv loop, owned by one thread. Everything that touches the loop's
// handles runs on that thread; other threads reach it only through post().

#include <uv.h>

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace eldric {

// Objects that may be destroyed from inside their own callbacks are handed
// to the dispatcher, which deletes them once the current loop iteration's
// callbacks have returned.
class DeferredDeletable {
 public:
  virtual ~DeferredDeletable() = default;
};

class Timer;

// Something with output to push once the current loop iteration's
// callbacks are done: writes made while handling one event (a response's
// headers and body, several SSE frames from one read) leave in one syscall
// and, under TLS, one record.
class Flushable {
 public:
  virtual ~Flushable() = default;
  virtual void onFlush() = 0;
};

// An expensive step that waited for the loop's budget (see
// Dispatcher::admitExpensiveWork): called once it is admitted.
class ExpensiveWork {
 public:
  virtual ~ExpensiveWork() = default;
  virtual void onAdmitted() = 0;
};

class Dispatcher {
 public:
  Dispatcher();
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  uv_loop_t* loop() { return &loop_; }
  // Monotonic milliseconds, cached per loop iteration.
  uint64_t nowMs() const { return uv_now(const_cast<uv_loop_t*>(&loop_)); }
  // Monotonic nanoseconds, read fresh.
  static uint64_t monotonicNs() { return uv_hrtime(); }

  // Thread-safe: runs `fn` on this dispatcher's thread.
  void post(std::function<void()> fn);
  void deferredDelete(std::unique_ptr<DeferredDeletable> obj);

  std::unique_ptr<Timer> createTimer(std::function<void()> cb);

  // Calls f->onFlush() later in this loop iteration (after I/O callbacks),
  // without letting the loop block first. A Flushable that goes away must
  // cancel.
  void scheduleFlush(Flushable* f);
  void cancelFlush(Flushable* f);

  // Busy time per loop iteration: from the first callback into this
  // process's code after the loop woke (I/O, a timer, posted work, the
  // check phase) to the moment it is about to wait again, in nanoseconds.
  // One long iteration delays every connection on the loop: a stall. The
  // worker records it in its stats shard (eldric_edge_event_loop_busy_seconds).
  using IterationObserver = void (*)(void* ctx, uint64_t busy_ns);
  void setIterationObserver(IterationObserver fn, void* ctx);
  // Called first thing by each callback the loop makes into our code;
  // stamps the iteration's start once.
  void markBusy() {
    if (busy_since_ == 0) busy_since_ = uv_hrtime();
  }

  // Expensive steps that can wait (a new TLS connection's key exchange and
  // signature, a few hundred microseconds each): once this iteration has
  // been busy for the budget and has run at least one such step, the next
  // ones wait in a queue, first come first served, and are admitted in
  // later iterations' check phases (after the loop has polled again), so
  // that a burst of new connections does not stall the streams already
  // running on the loop. Each iteration admits at least one. 0: no budget,
  // everything runs at once.
  void setExpensiveWorkBudget(uint64_t ns) { expensive_budget_ns_ = ns; }
  // For a step arriving now: true, go ahead (it is counted); false, queue
  // it with queueExpensiveWork (also whenever others already wait).
  bool admitExpensiveWork() { return expensive_queue_.empty() && admitNext(); }
  // w->onAdmitted() when its turn comes, no earlier than the next
  // iteration. A queued ExpensiveWork that goes away must cancel.
  void queueExpensiveWork(ExpensiveWork* w);
  void cancelExpensiveWork(ExpensiveWork* w);

  // Runs until exit() is called.
  void run();
  // Thread-safe.
  void exit();

 private:
  static void onAsync(uv_async_t* h);
  static void onCheck(uv_check_t* h);
  static void onPrepare(uv_prepare_t* h);
  void clearDeferred();
  void runFlushes();
  void runQueuedWork();
  bool admitNext() {
    if (expensive_budget_ns_ != 0 && expensive_run_ != 0 && busy_since_ != 0 &&
        uv_hrtime() - busy_since_ >= expensive_budget_ns_)
      return false;
    ++expensive_run_;
    return true;
  }

  friend class Timer;
  // Timer handles are recycled: a timer per request (the router's
  // timeout, a pooled connection's idle timer) would otherwise cost an
  // allocation, uv_timer_init and a uv_close round trip through the
  // loop's closing phase each time.
  uv_timer_t* takeTimerHandle();
  void returnTimerHandle(uv_timer_t* h);
  static constexpr size_t kMaxFreeTimers = 4096;
  std::vector<uv_timer_t*> free_timers_;

  uv_loop_t loop_;
  uv_async_t async_;
  uv_check_t check_;
  // Runs just before the loop waits: ends an iteration's busy time.
  uv_prepare_t prepare_;
  IterationObserver observer_ = nullptr;
  void* observer_ctx_ = nullptr;
  uint64_t busy_since_ = 0;  // uv_hrtime() of the iteration's first callback, 0: none yet
  uint64_t expensive_budget_ns_ = 0;
  uint32_t expensive_run_ = 0;  // expensive steps admitted this iteration
  uint64_t iteration_ = 0;      // counted at each prepare phase
  // Waiting steps in arrival order, with the iteration they were queued in
  // (they run no earlier than the next); cancelled ones are null.
  std::deque<std::pair<ExpensiveWork*, uint64_t>> expensive_queue_;
  // Active only while flushes are pending: keeps uv_run from blocking in
  // poll before the check phase runs them.
  uv_idle_t idle_;
  std::vector<Flushable*> flushes_;
  // The batch being flushed or deleted. Kept as members (swapped, never
  // freed) so that their capacity is reused every iteration.
  std::vector<Flushable*> flush_batch_;
  std::mutex post_mutex_;
  std::vector<std::function<void()>> posted_;
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_;
  std::vector<std::unique_ptr<DeferredDeletable>> deferred_batch_;
  bool exiting_ = false;
};

// A one-shot timer; re-arm with enable(). Destroying it cancels it.
// Re-arming is lazy: timeouts that are pushed back on every request (a
// connection's idle timeout, a pooled connection's, a request's) would
// otherwise cost a libuv heap removal and insertion each time. enable()
// with a deadline no earlier than the armed one, and disable(), only
// record it; the armed libuv timer, when it fires, re-arms for the rest or
// does nothing. The callback runs at the deadline last set, never before.
class Timer {
 public:
  Timer(Dispatcher& d, std::function<void()> cb);
  ~Timer();
  void enable(uint64_t ms);
  void disable() { enabled_ = false; }
  bool enabled() const { return enabled_; }

 private:
  friend class Dispatcher;
  static void onTimer(uv_timer_t* t);
  Dispatcher& dispatcher_;
  // Borrowed from the dispatcher's free list and given back (stopped) on
  // destruction; closed (and set to null here) by the dispatcher at
  // teardown.
  uv_timer_t* handle_;
  std::function<void()> cb_;
  bool enabled_ = false;
  bool armed_ = false;        // the libuv timer is running
  uint64_t deadline_ = 0;     // loop time (ms) the callback is due, when enabled_
  uint64_t armed_until_ = 0;  // loop time the libuv timer fires, when armed_
};
using TimerPtr = std::unique_ptr<Timer>;

}  // namespace eldric
