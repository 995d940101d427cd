#pragma once

// One plugin process and the JSON-RPC calls in flight to it (PROTOCOL.md),
// on one worker's loop. Requests go down the child's stdin, answers come
// up its fd 3, and whatever the plugin prints (fd 1 and 2) is logged one
// line at a time, tagged and rate limited. The process is configured
// first (`configure`: import, valves, its description); calls made before
// that are queued. Everything the child sends is untrusted: a broken line,
// an oversized one or a message that is not JSON-RPC kills it, and every
// call in flight fails with the reason. Deadlines are per call; a call
// past its deadline means the plugin is stuck, and the process goes too.
// The owner (the plugin's instance) restarts it.

#include <rapidjson/document.h>
#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "filters/plugins/rpc.h"

namespace eldric::filters::plugins {

// Why a call got no answer from the plugin.
enum class CallFailure {
  NotRunning,  // the plugin is not running (crashed, starting too long, disabled)
  Timeout,     // past its deadline
  Crashed,     // the process died (or was killed) with the call in flight
  BadMessage,  // the process sent something the protocol does not allow
  Overloaded,  // the process does not read what it is sent
};
const char* failureName(CallFailure f);

class CallObserver {
 public:
  virtual ~CallObserver() = default;
  // A `chunk` notification for this call (a streaming pipe).
  virtual void onChunk(const rapidjson::Value& params) { (void)params; }
  // The answer: a result, or the plugin's own error (it raised).
  virtual void onReply(RpcMessage& reply) = 0;
  // No answer will come. Called at most once, and never after cancel().
  virtual void onFailure(CallFailure failure, const std::string& why) = 0;
};

// How to start the process.
struct LaunchSpec {
  std::vector<std::string> argv;  // argv[0] is the program's path
  std::vector<std::string> env;   // "NAME=value"
  std::string cwd;
  int uid = -1;  // >= 0: run as this user (and gid) instead of the Edge's
  int gid = -1;
};

class PluginProcess : public DeferredDeletable {
 public:
  class Owner {
   public:
    virtual ~Owner() = default;
    // `configure` answered: `description` is its result (PROTOCOL.md).
    virtual void onReady(PluginProcess& process, const rapidjson::Value& description) = 0;
    // The process is gone (exited, killed, or failed to load). `why` names
    // the reason in words safe for the log (never valve values).
    virtual void onGone(PluginProcess& process, const std::string& why) = 0;
    // One line the plugin printed.
    virtual void onOutput(PluginProcess& process, std::string_view line) = 0;
    // The plugin refused the stored valves at configure (`why` names the
    // field, never a value); it is configured again on its defaults.
    virtual void onValvesRefused(PluginProcess& process, const std::string& why) = 0;
  };

  PluginProcess(Dispatcher& dispatcher, Owner& owner, size_t max_message_bytes);
  // Kills the child if it is still running; calls in flight fail.
  ~PluginProcess() override;
  PluginProcess(const PluginProcess&) = delete;
  PluginProcess& operator=(const PluginProcess&) = delete;

  // Starts the child and sends `configure` with `configure_params` (a JSON
  // object). False with `*error` if it could not be started at all.
  bool start(const LaunchSpec& spec, std::string configure_params, uint64_t configure_timeout_ms,
             std::string* error);

  // Sends a call; `params_json` is a JSON object. The observer (may be
  // null: nobody waits) hears exactly one of onReply/onFailure unless the
  // call is cancelled first. Returns the call's id.
  uint64_t call(std::string_view method, std::string_view params_json, uint64_t timeout_ms,
                CallObserver* observer);
  // The caller no longer waits: the plugin is told, the observer forgotten.
  void cancel(uint64_t id);

  // Ends the child now (SIGKILL to its process group); calls fail with
  // `failure`. The owner hears onGone once the child is reaped.
  void kill(CallFailure failure, const std::string& why);
  // Asks the child to finish what it has and exit (EOF on its stdin).
  void drain();

  // At a worker's teardown, after its processes were destroyed (killed,
  // their children not yet reaped): reaps them here (at most `timeout_ms`
  // in all) and closes their handles, whose close callbacks free them in
  // the loop's last turn; otherwise the loop's teardown would close them
  // without a callback and leak them. Once the loop's thread has ended.
  static void awaitExits(uv_loop_t* loop, uint64_t timeout_ms);
  struct Handles;  // the libuv handles; they outlive this object until closed

  bool ready() const { return state_ == State::Ready; }
  bool gone() const { return state_ == State::Gone; }
  size_t inFlight() const { return calls_.size(); }
  int pid() const { return pid_; }

 private:
  enum class State { Starting, Ready, Gone };
  struct Call {
    CallObserver* observer = nullptr;
    TimerPtr timer;
  };

  void write(std::string line);
  void onProtocolBytes(std::string_view bytes);
  bool onLine(std::string_view line);
  void onOutputBytes(std::string_view bytes);
  void onExit(int64_t status, int signal);
  void failAll(CallFailure failure, const std::string& why);
  void retire(TimerPtr timer);
  void protocolError(const std::string& why);

  Dispatcher& dispatcher_;
  Owner& owner_;
  size_t max_message_bytes_;
  State state_ = State::Starting;
  Handles* handles_ = nullptr;
  int pid_ = 0;
  uint64_t next_id_ = 1;
  uint64_t configure_id_ = 0;
  uint64_t configure_timeout_ms_ = 0;
  bool configured_with_defaults_ = false;
  static constexpr int kBadParams = -32602;
  std::unordered_map<uint64_t, Call> calls_;
  std::vector<std::string> queued_;  // lines waiting for `configure` to finish
  LineSplitter protocol_;
  std::string output_partial_;
  // Why the child is being killed, for onGone (the exit status says less).
  std::string kill_reason_;
  // Output rate limit: lines per second, then a count of what was dropped.
  uint64_t output_window_ms_ = 0;
  uint32_t output_lines_ = 0;
  uint64_t output_dropped_ = 0;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace eldric::filters::plugins
