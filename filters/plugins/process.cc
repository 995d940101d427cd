#include "filters/plugins/process.h"

#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "common/log.h"

namespace eldric::filters::plugins {

namespace {

// A child that does not read its stdin while this much waits to be
// written is stuck: calls fail instead of the Edge's memory growing.
constexpr size_t kMaxUnwritten = 64u << 20;
// What the plugin prints: lines per second logged, and each line's length.
constexpr uint32_t kOutputLinesPerSecond = 20;
constexpr size_t kMaxOutputLine = 2048;

void allocBuffer(uv_handle_t*, size_t, uv_buf_t* buf) {
  // Each read is handled before the next one on this thread.
  thread_local char storage[64 * 1024];
  buf->base = storage;
  buf->len = sizeof(storage);
}

}  // namespace

const char* failureName(CallFailure f) {
  switch (f) {
    case CallFailure::NotRunning:
      return "not_running";
    case CallFailure::Timeout:
      return "timeout";
    case CallFailure::Crashed:
      return "crashed";
    case CallFailure::BadMessage:
      return "bad_message";
    case CallFailure::Overloaded:
      return "overloaded";
  }
  return "unknown";
}

namespace {
// Handles not yet closed, by loop: what a worker's teardown finishes.
std::mutex g_live_mutex;
std::map<uv_loop_t*, std::set<PluginProcess::Handles*>> g_live;
}  // namespace

// The child's libuv handles. They are closed only once the child has been
// reaped (a process handle closed earlier would leave a zombie), so they
// may outlive the PluginProcess: `process` is null from then on.
struct PluginProcess::Handles {
  uv_process_t child;
  uv_pipe_t in;     // its stdin
  uv_pipe_t proto;  // its fd 3
  uv_pipe_t out;    // its fd 2 (and 1)
  PluginProcess* process = nullptr;
  int open = 0;
  bool spawned = false;
  bool exited = false;

  uv_loop_t* loop = nullptr;

  void init(uv_loop_t* l) {
    loop = l;
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      g_live[loop].insert(this);
    }
    uv_pipe_init(loop, &in, 0);
    uv_pipe_init(loop, &proto, 0);
    uv_pipe_init(loop, &out, 0);
    for (uv_handle_t* h : pipes()) h->data = this;
    child.data = this;
    open = 3;
  }
  std::vector<uv_handle_t*> pipes() {
    return {reinterpret_cast<uv_handle_t*>(&in), reinterpret_cast<uv_handle_t*>(&proto),
            reinterpret_cast<uv_handle_t*>(&out)};
  }
  static void onClosed(uv_handle_t* h) {
    auto* self = static_cast<Handles*>(h->data);
    if (--self->open > 0) return;
    {
      std::lock_guard<std::mutex> lock(g_live_mutex);
      auto it = g_live.find(self->loop);
      if (it != g_live.end()) {
        it->second.erase(self);
        if (it->second.empty()) g_live.erase(it);
      }
    }
    delete self;
  }
  // Closes everything; deletes itself when the last close completes.
  void closeAll() {
    for (uv_handle_t* h : pipes()) {
      if (!uv_is_closing(h)) uv_close(h, onClosed);
    }
    if (spawned && !uv_is_closing(reinterpret_cast<uv_handle_t*>(&child))) {
      uv_close(reinterpret_cast<uv_handle_t*>(&child), onClosed);
    }
  }
  void killGroup() {
    if (!spawned || exited) return;
    // The child leads its own process group (UV_PROCESS_DETACHED): what it
    // forked goes too. A sandboxed plugin dies with bwrap (--die-with-parent).
    ::kill(-child.pid, SIGKILL);
    ::kill(child.pid, SIGKILL);
  }
};

PluginProcess::PluginProcess(Dispatcher& dispatcher, Owner& owner, size_t max_message_bytes)
    : dispatcher_(dispatcher),
      owner_(owner),
      max_message_bytes_(max_message_bytes),
      protocol_(max_message_bytes) {}

PluginProcess::~PluginProcess() {
  *alive_ = false;
  std::vector<CallObserver*> waiting;
  for (auto& [id, call] : calls_) {
    if (call.observer) waiting.push_back(call.observer);
  }
  calls_.clear();
  for (CallObserver* o : waiting) o->onFailure(CallFailure::NotRunning, "the plugin was stopped");
  if (handles_) {
    handles_->process = nullptr;
    if (handles_->spawned && !handles_->exited) {
      handles_->killGroup();
      // Stop reading; the handles close once the child is reaped.
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&handles_->proto));
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&handles_->out));
    } else {
      handles_->closeAll();
    }
  }
}

void PluginProcess::awaitExits(uv_loop_t* loop, uint64_t timeout_ms) {
  std::vector<Handles*> orphans;
  {
    std::lock_guard<std::mutex> lock(g_live_mutex);
    auto it = g_live.find(loop);
    if (it == g_live.end()) return;
    for (Handles* h : it->second) {
      if (!h->process && h->spawned && !h->exited) orphans.push_back(h);
    }
  }
  // Killed already (their PluginProcess is gone): reaped here, not by the
  // loop, which is not run again but to close what is left.
  uint64_t deadline = uv_hrtime() + timeout_ms * 1000000;
  for (Handles* h : orphans) {
    h->killGroup();
    while (true) {
      int status = 0;
      pid_t r = waitpid(h->child.pid, &status, WNOHANG);
      if (r != 0 || uv_hrtime() >= deadline) break;  // reaped, gone, or out of time
      usleep(1000);
    }
    h->exited = true;
    // The close callbacks run in the loop's last turn (~Dispatcher).
    h->closeAll();
  }
}

bool PluginProcess::start(const LaunchSpec& spec, std::string configure_params,
                          uint64_t configure_timeout_ms, std::string* error) {
  handles_ = new Handles();
  handles_->process = this;
  handles_->init(dispatcher_.loop());

  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> env;
  for (const auto& e : spec.env) env.push_back(const_cast<char*>(e.c_str()));
  env.push_back(nullptr);

  uv_stdio_container_t stdio[4];
  stdio[0].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_READABLE_PIPE);
  stdio[0].data.stream = reinterpret_cast<uv_stream_t*>(&handles_->in);
  // fd 1: the host points it at fd 2 before loading the plugin; anything
  // printed before that is dropped.
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&handles_->out);
  stdio[3].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
  stdio[3].data.stream = reinterpret_cast<uv_stream_t*>(&handles_->proto);

  uv_process_options_t options{};
  options.file = argv[0];
  options.args = argv.data();
  options.env = env.data();
  options.cwd = spec.cwd.empty() ? nullptr : spec.cwd.c_str();
  options.stdio = stdio;
  options.stdio_count = 4;
  options.flags = UV_PROCESS_DETACHED;
  if (spec.uid >= 0) {
    options.flags |= UV_PROCESS_SETUID | UV_PROCESS_SETGID;
    options.uid = static_cast<uv_uid_t>(spec.uid);
    options.gid = static_cast<uv_gid_t>(spec.gid);
  }
  options.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* h = static_cast<Handles*>(p->data);
    h->exited = true;
    PluginProcess* self = h->process;
    h->closeAll();
    if (self) self->onExit(status, signal);
  };
  int rc = uv_spawn(dispatcher_.loop(), &handles_->child, &options);
  if (rc != 0) {
    *error = std::string("cannot start ") + argv[0] + ": " + uv_strerror(rc);
    handles_->process = nullptr;
    // A failed spawn still initialized the process handle: close it too.
    handles_->spawned = true;
    handles_->exited = true;
    ++handles_->open;
    handles_->closeAll();
    handles_ = nullptr;
    state_ = State::Gone;
    return false;
  }
  handles_->spawned = true;
  ++handles_->open;
  pid_ = handles_->child.pid;

  uv_read_start(reinterpret_cast<uv_stream_t*>(&handles_->proto), allocBuffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  auto* h = static_cast<Handles*>(s->data);
                  if (!h->process) return;
                  h->process->dispatcher_.markBusy();
                  if (n > 0) {
                    h->process->onProtocolBytes(std::string_view(buf->base, n));
                  } else if (n < 0) {
                    uv_read_stop(s);
                  }
                });
  uv_read_start(reinterpret_cast<uv_stream_t*>(&handles_->out), allocBuffer,
                [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
                  auto* h = static_cast<Handles*>(s->data);
                  if (!h->process) return;
                  if (n > 0) {
                    h->process->onOutputBytes(std::string_view(buf->base, n));
                  } else if (n < 0) {
                    uv_read_stop(s);
                  }
                });

  configure_id_ = next_id_++;
  configure_timeout_ms_ = configure_timeout_ms;
  Call c;
  c.timer = dispatcher_.createTimer(
      [this] { kill(CallFailure::Timeout, "the plugin did not load in time"); });
  c.timer->enable(configure_timeout_ms);
  calls_.emplace(configure_id_, std::move(c));
  std::string line = R"({"jsonrpc":"2.0","id":)" + std::to_string(configure_id_) +
                     R"(,"method":"configure","params":)" + configure_params + "}\n";
  write(std::move(line));
  return true;
}

void PluginProcess::write(std::string line) {
  if (!handles_ || handles_->exited) return;
  auto* stream = reinterpret_cast<uv_stream_t*>(&handles_->in);
  if (uv_stream_get_write_queue_size(stream) > kMaxUnwritten) {
    kill(CallFailure::Overloaded, "the plugin does not read its input");
    return;
  }
  struct WriteReq {
    uv_write_t req;
    std::string data;
  };
  auto* w = new WriteReq();
  w->data = std::move(line);
  uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
  int rc = uv_write(&w->req, stream, &buf, 1,
                    [](uv_write_t* req, int) { delete reinterpret_cast<WriteReq*>(req); });
  if (rc != 0) delete w;  // the child is gone; its exit fails the calls
}

uint64_t PluginProcess::call(std::string_view method, std::string_view params_json,
                             uint64_t timeout_ms, CallObserver* observer) {
  uint64_t id = next_id_++;
  if (state_ == State::Gone) {
    if (observer) observer->onFailure(CallFailure::NotRunning, "the plugin is not running");
    return id;
  }
  Call c;
  c.observer = observer;
  c.timer = dispatcher_.createTimer([this, id] {
    auto it = calls_.find(id);
    if (it == calls_.end()) return;
    // A call past its deadline: the plugin is stuck (a Python thread cannot
    // be interrupted), so the process is replaced. The caller hears first.
    CallObserver* o = it->second.observer;
    // This runs inside the timer's callback: the timer goes later.
    retire(std::move(it->second.timer));
    calls_.erase(it);
    auto alive = alive_;
    if (o) o->onFailure(CallFailure::Timeout, "the plugin did not answer in time");
    if (*alive) kill(CallFailure::Timeout, "a call passed its deadline");
  });
  c.timer->enable(timeout_ms);
  calls_.emplace(id, std::move(c));
  std::string line;
  line.reserve(params_json.size() + method.size() + 64);
  line += R"({"jsonrpc":"2.0","id":)";
  line += std::to_string(id);
  line += R"(,"method":")";
  line += method;
  line += R"(","params":)";
  line += params_json;
  line += "}\n";
  if (state_ == State::Starting) {
    queued_.push_back(std::move(line));
  } else {
    write(std::move(line));
  }
  return id;
}

void PluginProcess::cancel(uint64_t id) {
  auto it = calls_.find(id);
  if (it == calls_.end()) return;
  calls_.erase(it);
  if (state_ == State::Ready) {
    write(R"({"jsonrpc":"2.0","method":"cancel","params":{"id":)" + std::to_string(id) + "}}\n");
  }
}

void PluginProcess::onProtocolBytes(std::string_view bytes) {
  auto alive = alive_;
  bool ok = protocol_.feed(bytes, [this, &alive](std::string_view line) {
    return onLine(line) && *alive && state_ != State::Gone;
  });
  if (!*alive || state_ == State::Gone) return;
  if (!ok) {
    protocolError("a message longer than plugins.max_message_bytes (" +
                  std::to_string(max_message_bytes_) + ")");
  }
}

bool PluginProcess::onLine(std::string_view line) {
  if (line.empty()) return true;
  RpcMessage msg;
  std::string why;
  if (!parseMessage(line, &msg, &why)) {
    protocolError(why);
    return false;
  }
  if (msg.kind == RpcMessage::Kind::Notification) {
    if (msg.method == "chunk" && msg.params) {
      auto id = msg.params->FindMember("id");
      if (id == msg.params->MemberEnd() || !id->value.IsUint64()) {
        protocolError("a chunk without the id of its call");
        return false;
      }
      auto it = calls_.find(id->value.GetUint64());
      // A chunk of a call nobody waits for (cancelled) is dropped.
      if (it != calls_.end() && it->second.observer) it->second.observer->onChunk(*msg.params);
    }
    return true;  // other notifications are for later versions
  }
  auto it = calls_.find(msg.id);
  if (it == calls_.end()) return true;  // cancelled, or answered after its deadline
  CallObserver* observer = it->second.observer;
  calls_.erase(it);
  if (msg.id == configure_id_) {
    if (!msg.ok && msg.error_code == kBadParams && !configured_with_defaults_) {
      // The plugin loaded but refuses the stored valves (stored before its
      // schema was known, or the schema changed): it runs on its defaults,
      // and the operator sees why in its status.
      configured_with_defaults_ = true;
      auto alive = alive_;
      owner_.onValvesRefused(*this, msg.error_message);
      if (!*alive || state_ == State::Gone) return false;
      configure_id_ = next_id_++;
      Call c;
      c.timer = dispatcher_.createTimer(
          [this] { kill(CallFailure::Timeout, "the plugin did not load in time"); });
      c.timer->enable(configure_timeout_ms_);
      calls_.emplace(configure_id_, std::move(c));
      write(R"({"jsonrpc":"2.0","id":)" + std::to_string(configure_id_) +
            R"(,"method":"configure","params":{"valves":{}}})" + "\n");
      return true;
    }
    if (!msg.ok) {
      kill(CallFailure::NotRunning, "the plugin could not be loaded: " + msg.error_message);
      return false;
    }
    if (!msg.result->IsObject()) {
      protocolError("configure answered something other than an object");
      return false;
    }
    state_ = State::Ready;
    auto alive = alive_;
    owner_.onReady(*this, *msg.result);
    if (!*alive || state_ == State::Gone) return false;
    std::vector<std::string> queued;
    queued.swap(queued_);
    for (auto& l : queued) write(std::move(l));
    return true;
  }
  if (observer) observer->onReply(msg);
  return true;
}

void PluginProcess::onOutputBytes(std::string_view bytes) {
  while (!bytes.empty()) {
    size_t nl = bytes.find('\n');
    std::string_view piece = bytes.substr(0, nl);
    if (output_partial_.size() < kMaxOutputLine) {
      output_partial_.append(piece.substr(0, kMaxOutputLine - output_partial_.size()));
    }
    if (nl == std::string_view::npos) return;
    bytes.remove_prefix(nl + 1);
    uint64_t now = dispatcher_.nowMs();
    if (now - output_window_ms_ >= 1000) {
      if (output_dropped_) {
        owner_.onOutput(*this, "(" + std::to_string(output_dropped_) +
                                   " lines of plugin output not logged: over " +
                                   std::to_string(kOutputLinesPerSecond) + " per second)");
      }
      output_window_ms_ = now;
      output_lines_ = 0;
      output_dropped_ = 0;
    }
    if (output_lines_ < kOutputLinesPerSecond) {
      ++output_lines_;
      auto alive = alive_;
      owner_.onOutput(*this, output_partial_);
      if (!*alive) return;
    } else {
      ++output_dropped_;
    }
    output_partial_.clear();
  }
}

void PluginProcess::protocolError(const std::string& why) {
  kill(CallFailure::BadMessage, "the plugin broke the protocol: " + why);
}

void PluginProcess::retire(TimerPtr timer) {
  if (!timer) return;
  // A timer may be the one whose callback is running (a deadline that
  // kills the process): destroyed on the next loop turn, not under it.
  timer->disable();
  dispatcher_.post([t = std::shared_ptr<Timer>(std::move(timer))] {});
}

void PluginProcess::failAll(CallFailure failure, const std::string& why) {
  std::vector<CallObserver*> waiting;
  for (auto& [id, call] : calls_) {
    if (call.observer) waiting.push_back(call.observer);
    retire(std::move(call.timer));
  }
  calls_.clear();
  queued_.clear();
  auto alive = alive_;
  for (CallObserver* o : waiting) {
    o->onFailure(failure, why);
    if (!*alive) return;
  }
}

void PluginProcess::kill(CallFailure failure, const std::string& why) {
  if (state_ == State::Gone) return;
  state_ = State::Gone;
  if (kill_reason_.empty()) kill_reason_ = why;
  if (handles_) handles_->killGroup();
  failAll(failure, why);
  // onGone follows from the exit callback, once the child is reaped.
}

void PluginProcess::drain() {
  if (!handles_ || handles_->exited) return;
  auto* in = reinterpret_cast<uv_handle_t*>(&handles_->in);
  if (!uv_is_closing(in)) uv_close(in, Handles::onClosed);
}

void PluginProcess::onExit(int64_t status, int signal) {
  handles_ = nullptr;  // closing themselves
  state_ = State::Gone;
  std::string why = kill_reason_;
  if (why.empty()) {
    why = signal ? std::string("the plugin process was killed by signal ") + strsignal(signal)
                 : "the plugin process exited with status " + std::to_string(status);
  }
  auto alive = alive_;
  failAll(CallFailure::Crashed, why);
  if (!*alive) return;
  owner_.onGone(*this, why);
}

}  // namespace eldric::filters::plugins
