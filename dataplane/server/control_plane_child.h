#pragma once

// A farm's primary runs eldric-controlplane as its child (the seed's farm:
// `--mode farm --peers ...`, see common/config/farm_plan.h). This keeps it
// running: started on the main loop, restarted when it dies (backoff from
// half a second, doubling to 30 s, back to the start once it has run a
// minute), SIGHUP passed on, stopped with the Edge. The child exits by
// itself when the Edge dies, even by SIGKILL (--parent-pid: the kernel's
// parent-death signal), so a restarted Edge finds the farm port free.
//
// The members' token reaches it through a pipe on descriptor 3, the API
// key (if --api-key gave one) in its environment: neither on a command
// line every local user can read.

#include <sys/types.h>
#include <uv.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"

namespace eldric::server {

// eldric-controlplane's path: `configured` (farm.controlplane_path) if set;
// else beside this executable, then in the Bazel output tree beside it
// (../controlplane/), then on PATH. Empty with `*error` set if none runs.
std::string findControlPlaneBinary(const std::string& configured, std::string* error);

class ControlPlaneChild {
 public:
  struct Spec {
    std::string binary;
    std::vector<std::string> args;  // after argv[0]
    std::string token;              // written to descriptor 3
    std::string api_key;            // ELDRIC_API_KEY; empty: none
    std::string listen;             // for the logs
  };
  ControlPlaneChild(Dispatcher& main, Spec spec);
  // Stops the child (see stop()).
  ~ControlPlaneChild();
  ControlPlaneChild(const ControlPlaneChild&) = delete;
  ControlPlaneChild& operator=(const ControlPlaneChild&) = delete;

  void start();
  // SIGHUP to the child: it re-reads the config.
  void reload();
  // The Edge drains: a child that exits now (systemd signals the whole
  // unit) is not started again.
  void noMoreRestarts();
  // No more restarts; SIGTERM, then SIGKILL if it is still there after
  // `grace_ms`; returns once it is reaped. For the Edge's exit, with its
  // loop no longer running.
  void stop(uint64_t grace_ms = 5000);

  // The running child's pid (0: none) and how often it was started; any
  // thread may ask (/health).
  pid_t pid() const { return live_pid_.load(); }
  uint64_t starts() const { return starts_.load(); }

 private:
  struct Process;
  void spawn();
  void onExit(int64_t status, int signal);
  void scheduleRestart();

  Dispatcher& main_;
  Spec spec_;
  Process* process_ = nullptr;  // owned by its close callback once closing
  pid_t pid_ = 0;
  bool running_ = false;
  bool stopping_ = false;
  std::atomic<pid_t> live_pid_{0};
  std::atomic<uint64_t> starts_{0};
  uint64_t started_ms_ = 0;
  uint64_t backoff_ms_ = 0;
  TimerPtr restart_timer_;
};

}  // namespace eldric::server
