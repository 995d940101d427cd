#include "dataplane/grpc/channel.h"

#include <memory>
#include <string>
#include <utility>

#include "common/log.h"
#include "dataplane/grpc/call.h"
#include "dataplane/grpc/framing.h"
#include "dataplane/grpc/session.h"
#include "dataplane/tls/client_context.h"

namespace eldric::grpc {

using detail::Call;
using detail::Session;

namespace {

class StreamImpl : public Stream {
 public:
  StreamImpl(std::shared_ptr<Call> call, ChannelStats& stats, std::weak_ptr<bool> alive)
      : call_(std::move(call)), stats_(stats), alive_(std::move(alive)) {}
  ~StreamImpl() override { cancel(); }

  void send(const std::string& message) override {
    if (!call_->callbacks || call_->send_closed) return;
    call_->send_queue.add(framePrefix(static_cast<uint32_t>(message.size())));
    call_->send_queue.add(message);
    if (!alive_.expired()) ++stats_.messages_sent;
    if (call_->session) call_->session->sendQueued(call_.get());
  }
  void closeSend() override {
    if (!call_->callbacks || call_->send_closed) return;
    call_->send_closed = true;
    if (call_->session) call_->session->sendQueued(call_.get());
  }
  void cancel() override {
    if (!call_->callbacks) return;
    call_->callbacks = nullptr;
    if (call_->session) call_->session->cancel(call_.get());
  }
  size_t queuedBytes() const override { return call_->send_queue.length(); }

 private:
  std::shared_ptr<Call> call_;
  ChannelStats& stats_;  // use only while the Channel is alive
  std::weak_ptr<bool> alive_;
};

}  // namespace

namespace detail {

// unary() as a stream: one request, half-closed at once, a local deadline.
class UnaryCall : public StreamCallbacks, public DeferredDeletable {
 public:
  using Done = std::function<void(int, std::string, std::string)>;
  UnaryCall(Channel& channel, Done done) : channel_(channel), done_(std::move(done)) {}

  void onMessage(std::string message) override {
    if (++messages_ == 1) response_ = std::move(message);
  }
  void onClose(int status, std::string message) override { finish(status, std::move(message)); }

  void onDeadline() {
    stream->cancel();  // RST_STREAM(CANCEL), as libgrpc's client does
    finish(kDeadlineExceeded, "Deadline Exceeded");
  }

  void finish(int status, std::string message) {
    if (timer) timer->disable();
    if (status == kOk && messages_ != 1) {
      status = kInternal;
      message = messages_ == 0 ? "grpc: unary call ended without a response message"
                               : "grpc: unary call got more than one response message";
    }
    if (status == kOk) message.clear();
    Done done = std::move(done_);
    std::string response = status == kOk ? std::move(response_) : std::string();
    // Out of the Channel's list and into the deferred-delete list before
    // `done` runs: it may destroy the Channel.
    Dispatcher& dispatcher = channel_.dispatcher_;
    for (auto it = channel_.unaries_.begin(); it != channel_.unaries_.end(); ++it) {
      if (it->get() == this) {
        dispatcher.deferredDelete(std::move(*it));
        channel_.unaries_.erase(it);
        break;
      }
    }
    done(status, std::move(message), std::move(response));
  }

  std::unique_ptr<Stream> stream;
  TimerPtr timer;

 private:
  Channel& channel_;
  Done done_;
  int messages_ = 0;
  std::string response_;
};

}  // namespace detail

// --- Channel ---

Channel::Channel(Dispatcher& dispatcher, ChannelOptions options)
    : dispatcher_(dispatcher),
      options_(std::move(options)),
      keepalive_ms_(options_.keepalive_ms),
      alive_(std::make_shared<bool>(true)) {
  if (options_.tls) {
    ssl_ctx_ = tls::makeClientContext(options_.ca_file, options_.cert_file, options_.key_file,
                                      {"h2"}, &config_error_, options_.pin_certificate_file);
    if (!ssl_ctx_)
      log::error("grpc channel: TLS options rejected", {{"error", log::str(config_error_)}});
  }
  failure_timer_ = dispatcher_.createTimer([this] { runFailures(); });
}

Channel::~Channel() {
  // Sessions (and calls) check this before every callback.
  alive_.reset();
  // With the Channel gone, stop() silences their calls rather than ending
  // them.
  auto stop = [this](std::unique_ptr<Session> s) {
    s->stop(kUnavailable, "grpc: channel destroyed");
    dispatcher_.deferredDelete(std::move(s));
  };
  if (current_) stop(std::move(current_));
  for (auto& s : draining_) stop(std::move(s));
  draining_.clear();
  // Their streams were silenced above; destroying them only cancels.
  unaries_.clear();
}

Session* Channel::sessionForNewCall() {
  // current_ is never Draining or Dead: those are moved out at once.
  if (!current_) current_ = std::make_unique<Session>(*this, alive_);
  return current_.get();
}

void Channel::onSessionGoaway(Session* s) {
  if (current_.get() == s) draining_.push_back(std::move(current_));
}

void Channel::onSessionDead(Session* s) {
  if (current_.get() == s) {
    dispatcher_.deferredDelete(std::move(current_));
    return;
  }
  for (auto it = draining_.begin(); it != draining_.end(); ++it) {
    if (it->get() == s) {
      dispatcher_.deferredDelete(std::move(*it));
      draining_.erase(it);
      return;
    }
  }
}

void Channel::failLater(std::shared_ptr<Call> call, int status, std::string message) {
  failures_.push_back(Failure{call, status, std::move(message)});
  failure_timer_->enable(0);
}

void Channel::runFailures() {
  std::vector<Failure> batch;
  batch.swap(failures_);
  std::weak_ptr<bool> alive = alive_;
  for (auto& f : batch) {
    if (alive.expired()) return;
    if (auto call = f.call.lock()) call->end(f.status, std::move(f.message));
  }
}

std::unique_ptr<Stream> Channel::startStream(const std::string& path, StreamCallbacks& callbacks) {
  auto call = std::make_shared<Call>(path, &callbacks, options_.max_receive_message_bytes);
  call->metadata = options_.metadata;
  auto stream = std::make_unique<StreamImpl>(call, stats_, alive_);
  if (!config_error_.empty()) {
    failLater(call, kUnavailable, config_error_);
  } else {
    sessionForNewCall()->start(call);
  }
  return stream;
}

void Channel::unary(
    const std::string& path, std::string request, uint64_t timeout_ms,
    std::function<void(int grpc_status, std::string message, std::string response)> done,
    Metadata metadata) {
  auto u = std::make_unique<detail::UnaryCall>(*this, std::move(done));
  detail::UnaryCall* raw = u.get();
  auto call = std::make_shared<Call>(path, raw, options_.max_receive_message_bytes);
  call->metadata = options_.metadata;
  call->metadata.insert(call->metadata.end(), metadata.begin(), metadata.end());
  if (timeout_ms > 0) {
    call->deadline_ms = dispatcher_.nowMs() + timeout_ms;
    raw->timer = dispatcher_.createTimer([raw] { raw->onDeadline(); });
    raw->timer->enable(timeout_ms);
  }
  // The whole request is queued before the call starts: HEADERS and the
  // one DATA frame (with END_STREAM) leave together.
  call->send_queue.add(framePrefix(static_cast<uint32_t>(request.size())));
  call->send_queue.add(request);
  call->send_closed = true;
  ++stats_.messages_sent;
  raw->stream = std::make_unique<StreamImpl>(call, stats_, alive_);
  unaries_.push_back(std::move(u));
  if (!config_error_.empty()) {
    failLater(call, kUnavailable, config_error_);
  } else {
    sessionForNewCall()->start(call);
  }
}

bool Channel::connected() const { return current_ && current_->state() == Session::State::Ready; }

const std::string& Channel::connectedTarget() const {
  static const std::string kNone;
  return connected() ? current_->target() : kNone;
}

}  // namespace eldric::grpc
