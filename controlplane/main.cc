// eldric-controlplane: the farm's control plane. See server.h and README.md.

#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/synchronization/mutex.h"
#include "common/core_dumps.h"
#include "common/fd_table.h"
#include "common/log.h"
#include "controlplane/server.h"

int main(int argc, char** argv) {
  eldric::controlplane::Options options;
  std::string error;
  if (!eldric::controlplane::parseCommandLine(argc, argv, &options, &error)) {
    fprintf(stderr, "eldric-controlplane: %s\n", error.c_str());
    return 2;
  }
  if (options.help) {
    fputs(eldric::controlplane::usage(), stdout);
    return 0;
  }
  if (options.version) {
    puts("eldric-controlplane 0.1.0");
    return 0;
  }
  if (options.parent_pid > 0) {
    // A farm's primary Edge runs this daemon: when it goes, even by
    // SIGKILL, so does this one (SIGTERM, handled below like any other),
    // and the restarted Edge finds the farm port free.
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != options.parent_pid) {
      fprintf(stderr, "eldric-controlplane: the Edge that started this one is gone\n");
      return 2;
    }
  }

  // A farm's streams each hold a descriptor: the limit raised and the
  // table grown before gRPC's threads start (see fd_table.h).
  eldric::forbidCoreDumps();
  eldric::raiseDescriptorLimit();
  eldric::presizeDescriptorTable();

  // Debian builds abseil without NDEBUG, so every absl::Mutex (gRPC's, on
  // each call and stream) kept a lock-order graph for deadlock detection:
  // 4-5% of the control plane's CPU under a farm's streams (perf,
  // GraphCycles::GetId/InsertEdge). A debugging aid; off, as in release
  // builds of abseil.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);

  // Signals are taken by this thread with sigwait; every thread started
  // from here on (gRPC's included) inherits the blocked mask.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  eldric::controlplane::ControlPlane cp(options);
  if (!cp.start(&error)) {
    eldric::log::error("cannot start", {{"error", eldric::log::str(error)}});
    fprintf(stderr, "eldric-controlplane: %s\n", error.c_str());
    return 2;
  }
  while (true) {
    int sig = 0;
    if (sigwait(&signals, &sig) != 0) continue;
    if (sig == SIGHUP) {
      cp.reload(&error);  // logs its own outcome
      continue;
    }
    eldric::log::info("stopping",
                      {{"signal", eldric::log::str(sig == SIGTERM ? "SIGTERM" : "SIGINT")}});
    break;
  }
  cp.shutdown();
  return 0;
}
