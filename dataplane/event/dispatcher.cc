#include "dataplane/event/dispatcher.h"

#include <cstdlib>

#include "common/log.h"

namespace eldric {

Dispatcher::Dispatcher() {
  if (uv_loop_init(&loop_) != 0) abort();
  uv_async_init(&loop_, &async_, &Dispatcher::onAsync);
  async_.data = this;
  uv_check_init(&loop_, &check_);
  check_.data = this;
  uv_check_start(&check_, &Dispatcher::onCheck);
  // The check handle alone must not keep the loop alive.
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  uv_idle_init(&loop_, &idle_);
  idle_.data = this;
  uv_prepare_init(&loop_, &prepare_);
  prepare_.data = this;
  uv_prepare_start(&prepare_, &Dispatcher::onPrepare);
  uv_unref(reinterpret_cast<uv_handle_t*>(&prepare_));
}

Dispatcher::~Dispatcher() {
  clearDeferred();
  for (uv_timer_t* h : free_timers_) {
    uv_close(reinterpret_cast<uv_handle_t*>(h),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }
  free_timers_.clear();
  uv_close(reinterpret_cast<uv_handle_t*>(&async_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&idle_), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), nullptr);
  // Close whatever handles remain and let their close callbacks run. A
  // timer here is a pooled handle (takeTimerHandle) whose Timer still
  // lives, typically owned by something deleted only in those callbacks
  // (a connection closing at exit): the Timer lets go of it and the
  // handle is freed, not leaked.
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (uv_is_closing(h)) return;
        if (h->type == UV_TIMER) {
          if (h->data) static_cast<Timer*>(h->data)->handle_ = nullptr;
          h->data = nullptr;
          uv_close(h, [](uv_handle_t* t) { delete reinterpret_cast<uv_timer_t*>(t); });
          return;
        }
        uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

void Dispatcher::post(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(post_mutex_);
    posted_.push_back(std::move(fn));
  }
  uv_async_send(&async_);
}

void Dispatcher::onAsync(uv_async_t* h) {
  auto* self = static_cast<Dispatcher*>(h->data);
  self->markBusy();
  std::vector<std::function<void()>> work;
  {
    std::lock_guard<std::mutex> lock(self->post_mutex_);
    work.swap(self->posted_);
  }
  for (auto& fn : work) fn();
  if (self->exiting_) uv_stop(&self->loop_);
}

void Dispatcher::deferredDelete(std::unique_ptr<DeferredDeletable> obj) {
  deferred_.push_back(std::move(obj));
}

void Dispatcher::clearDeferred() {
  // Deleting may defer more deletions (into deferred_); loop until quiet.
  while (!deferred_.empty()) {
    deferred_batch_.swap(deferred_);
    deferred_batch_.clear();
  }
}

void Dispatcher::onCheck(uv_check_t* h) {
  auto* self = static_cast<Dispatcher*>(h->data);
  if (!self->flushes_.empty() || !self->deferred_.empty() || !self->expensive_queue_.empty())
    self->markBusy();
  self->runQueuedWork();
  self->runFlushes();
  self->clearDeferred();
}

void Dispatcher::setIterationObserver(IterationObserver fn, void* ctx) {
  observer_ = fn;
  observer_ctx_ = ctx;
}

void Dispatcher::onPrepare(uv_prepare_t* h) {
  // The loop is about to wait: the iteration's busy time ends here.
  auto* self = static_cast<Dispatcher*>(h->data);
  self->expensive_run_ = 0;
  ++self->iteration_;
  if (self->busy_since_ == 0) return;
  uint64_t busy = uv_hrtime() - self->busy_since_;
  self->busy_since_ = 0;
  if (self->observer_) self->observer_(self->observer_ctx_, busy);
}

void Dispatcher::queueExpensiveWork(ExpensiveWork* w) {
  // The idle handle keeps the next poll from blocking.
  uv_idle_start(&idle_, [](uv_idle_t*) {});
  expensive_queue_.emplace_back(w, iteration_);
}

void Dispatcher::cancelExpensiveWork(ExpensiveWork* w) {
  for (auto& e : expensive_queue_) {
    if (e.first == w) e.first = nullptr;
  }
}

void Dispatcher::runQueuedWork() {
  // In arrival order, while the budget admits; what was queued in this
  // iteration waits for the next (the loop polls for I/O first).
  while (!expensive_queue_.empty()) {
    auto [w, queued_in] = expensive_queue_.front();
    if (!w) {
      expensive_queue_.pop_front();
      continue;
    }
    if (queued_in == iteration_ || !admitNext()) break;
    expensive_queue_.pop_front();
    w->onAdmitted();
  }
}

void Dispatcher::scheduleFlush(Flushable* f) {
  if (flushes_.empty()) {
    uv_idle_start(&idle_, [](uv_idle_t*) {});
  }
  flushes_.push_back(f);
}

void Dispatcher::cancelFlush(Flushable* f) {
  for (auto& p : flushes_) {
    if (p == f) p = nullptr;
  }
  for (auto& p : flush_batch_) {
    if (p == f) p = nullptr;
  }
}

void Dispatcher::runFlushes() {
  // A flush may schedule more (a write that answers a write); run until quiet.
  while (!flushes_.empty()) {
    flush_batch_.swap(flushes_);
    // By index: cancelFlush may null entries of this batch meanwhile.
    for (size_t i = 0; i < flush_batch_.size(); ++i) {
      if (Flushable* f = flush_batch_[i]) f->onFlush();
    }
    flush_batch_.clear();
  }
  if (expensive_queue_.empty()) uv_idle_stop(&idle_);
}

uv_timer_t* Dispatcher::takeTimerHandle() {
  if (!free_timers_.empty()) {
    uv_timer_t* h = free_timers_.back();
    free_timers_.pop_back();
    return h;
  }
  auto* h = new uv_timer_t;
  uv_timer_init(&loop_, h);
  return h;
}

void Dispatcher::returnTimerHandle(uv_timer_t* h) {
  if (free_timers_.size() < kMaxFreeTimers) {
    free_timers_.push_back(h);
    return;
  }
  uv_close(reinterpret_cast<uv_handle_t*>(h),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

std::unique_ptr<Timer> Dispatcher::createTimer(std::function<void()> cb) {
  return std::make_unique<Timer>(*this, std::move(cb));
}

void Dispatcher::run() {
  uv_run(&loop_, UV_RUN_DEFAULT);
  clearDeferred();
}

void Dispatcher::exit() {
  post([this] { exiting_ = true; });
}

Timer::Timer(Dispatcher& d, std::function<void()> cb)
    : dispatcher_(d), handle_(d.takeTimerHandle()), cb_(std::move(cb)) {
  handle_->data = this;
}

Timer::~Timer() {
  // At teardown the dispatcher closes every handle still open and takes
  // this one away (and may be gone): a Timer destroyed after that must not
  // touch either again.
  if (!handle_) return;
  auto* h = reinterpret_cast<uv_handle_t*>(handle_);
  if (uv_is_closing(h)) return;
  uv_timer_stop(handle_);
  handle_->data = nullptr;
  dispatcher_.returnTimerHandle(handle_);
}

void Timer::enable(uint64_t ms) {
  if (!handle_) return;  // the dispatcher is being torn down
  // libuv counts a timeout from the loop's cached time, as uv_now does.
  uint64_t now = uv_now(handle_->loop);
  enabled_ = true;
  deadline_ = now + ms;
  if (armed_ && armed_until_ <= deadline_) return;  // fires first, then re-arms for the rest
  uv_timer_start(handle_, &Timer::onTimer, ms, 0);
  armed_ = true;
  armed_until_ = deadline_;
}

void Timer::onTimer(uv_timer_t* t) {
  auto* self = static_cast<Timer*>(t->data);
  if (!self) return;
  self->dispatcher_.markBusy();
  self->armed_ = false;
  if (!self->enabled_) return;
  uint64_t now = uv_now(t->loop);
  if (now < self->deadline_) {
    uv_timer_start(t, &Timer::onTimer, self->deadline_ - now, 0);
    self->armed_ = true;
    self->armed_until_ = self->deadline_;
    return;
  }
  self->enabled_ = false;
  self->cb_();
}

}  // namespace eldric
