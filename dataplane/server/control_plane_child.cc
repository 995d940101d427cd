#include "dataplane/server/control_plane_child.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/log.h"

extern char** environ;

namespace eldric::server {

namespace {
constexpr uint64_t kFirstBackoffMs = 500;
constexpr uint64_t kMaxBackoffMs = 30000;
// A child that ran this long failed for a new reason: start over quickly.
constexpr uint64_t kHealthyRunMs = 60000;
constexpr char kBinaryName[] = "eldric-controlplane";

bool executable(const std::string& path) {
  return !path.empty() && access(path.c_str(), X_OK) == 0;
}
}  // namespace

std::string findControlPlaneBinary(const std::string& configured, std::string* error) {
  if (!configured.empty()) {
    if (executable(configured)) return configured;
    *error = "farm.controlplane_path " + configured + ": not an executable file";
    return "";
  }
  std::vector<std::string> tried;
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    std::string dir(self, static_cast<size_t>(n));
    dir.resize(dir.rfind('/'));
    // Installed side by side (/usr/bin), or Bazel's tree
    // (bazel-bin/dataplane/ and bazel-bin/controlplane/).
    for (const std::string& p :
         {dir + "/" + kBinaryName, dir + "/../controlplane/" + std::string(kBinaryName)}) {
      if (executable(p)) return p;
      tried.push_back(p);
    }
  }
  const char* path = getenv("PATH");
  std::string rest = path ? path : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= rest.size()) {
    size_t end = rest.find(':', start);
    if (end == std::string::npos) end = rest.size();
    std::string dir = rest.substr(start, end - start);
    if (!dir.empty() && executable(dir + "/" + kBinaryName)) return dir + "/" + kBinaryName;
    start = end + 1;
  }
  tried.push_back("PATH");
  std::string list;
  for (const auto& t : tried) list += (list.empty() ? "" : ", ") + t;
  *error = std::string("this farm's primary runs ") + kBinaryName + ", which is not installed (" +
           list + "): install it beside eldric-edge or set farm.controlplane_path";
  return "";
}

struct ControlPlaneChild::Process {
  uv_process_t handle;
  ControlPlaneChild* owner;
};

ControlPlaneChild::ControlPlaneChild(Dispatcher& main, Spec spec)
    : main_(main), spec_(std::move(spec)) {
  restart_timer_ = main_.createTimer([this] { spawn(); });
}

ControlPlaneChild::~ControlPlaneChild() { stop(); }

void ControlPlaneChild::start() { spawn(); }

void ControlPlaneChild::reload() {
  if (running_) kill(pid_, SIGHUP);
}

void ControlPlaneChild::noMoreRestarts() {
  stopping_ = true;
  restart_timer_->disable();
}

void ControlPlaneChild::spawn() {
  if (stopping_ || running_) return;
  // The token through a pipe: written whole before the child starts (it is
  // far below the pipe's buffer), read by the child from descriptor 3.
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    log::error("farm: cannot start the control plane", {{"error", log::str(strerror(errno))}});
    scheduleRestart();
    return;
  }
  std::string line = spec_.token + "\n";
  bool written = write(fds[1], line.data(), line.size()) == static_cast<ssize_t>(line.size());
  close(fds[1]);
  if (!written) {
    close(fds[0]);
    log::error("farm: cannot pass the control plane its token");
    scheduleRestart();
    return;
  }

  std::vector<std::string> env_strings;
  for (char** e = environ; e && *e; ++e) {
    if (strncmp(*e, "ELDRIC_API_KEY=", 15) != 0) env_strings.emplace_back(*e);
  }
  if (!spec_.api_key.empty()) env_strings.push_back("ELDRIC_API_KEY=" + spec_.api_key);
  std::vector<char*> env;
  for (auto& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  std::vector<std::string> argv_strings = {spec_.binary};
  argv_strings.insert(argv_strings.end(), spec_.args.begin(), spec_.args.end());
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);

  uv_stdio_container_t stdio[4];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = 1;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  stdio[3].flags = UV_INHERIT_FD;
  stdio[3].data.fd = fds[0];

  auto* p = new Process();
  p->owner = this;
  p->handle.data = p;
  uv_process_options_t options{};
  options.file = argv[0];
  options.args = argv.data();
  options.env = env.data();
  options.stdio = stdio;
  options.stdio_count = 4;
  // Its own session: a terminal's Ctrl-C reaches the Edge, which stops it.
  options.flags = UV_PROCESS_DETACHED;
  options.exit_cb = [](uv_process_t* h, int64_t status, int signal) {
    auto* proc = static_cast<Process*>(h->data);
    ControlPlaneChild* owner = proc->owner;
    uv_close(reinterpret_cast<uv_handle_t*>(h),
             [](uv_handle_t* hh) { delete static_cast<Process*>(hh->data); });
    if (owner) {
      owner->process_ = nullptr;
      owner->onExit(status, signal);
    }
  };
  int rc = uv_spawn(main_.loop(), &p->handle, &options);
  for (auto& e : env_strings) std::fill(e.begin(), e.end(), '\0');
  close(fds[0]);
  if (rc != 0) {
    // A failed spawn still initialized the handle.
    uv_close(reinterpret_cast<uv_handle_t*>(&p->handle),
             [](uv_handle_t* hh) { delete static_cast<Process*>(hh->data); });
    log::error("farm: cannot start the control plane",
               {{"binary", log::str(spec_.binary)}, {"error", log::str(uv_strerror(rc))}});
    scheduleRestart();
    return;
  }
  process_ = p;
  pid_ = p->handle.pid;
  running_ = true;
  live_pid_ = pid_;
  ++starts_;
  started_ms_ = main_.nowMs();
  log::info("farm: this member is the primary; control plane started",
            {{"pid", log::num(static_cast<long long>(pid_))},
             {"listen", log::str(spec_.listen)},
             {"start", log::num(static_cast<long long>(starts_.load()))}});
}

void ControlPlaneChild::onExit(int64_t status, int signal) {
  running_ = false;
  live_pid_ = 0;
  if (stopping_) return;
  uint64_t ran = main_.nowMs() - started_ms_;
  if (ran >= kHealthyRunMs) backoff_ms_ = 0;
  log::error("farm: the control plane exited; restarting it",
             {{"status", log::num(static_cast<long long>(status))},
              {"signal", log::num(signal)},
              {"ran_ms", log::num(static_cast<long long>(ran))}});
  scheduleRestart();
}

void ControlPlaneChild::scheduleRestart() {
  if (stopping_) return;
  backoff_ms_ = backoff_ms_ == 0 ? kFirstBackoffMs : std::min(backoff_ms_ * 2, kMaxBackoffMs);
  restart_timer_->enable(backoff_ms_);
}

void ControlPlaneChild::stop(uint64_t grace_ms) {
  stopping_ = true;
  if (restart_timer_) restart_timer_->disable();
  if (!running_) return;
  running_ = false;
  live_pid_ = 0;
  // The loop no longer runs: reaped here, not by libuv's SIGCHLD handling.
  kill(pid_, SIGTERM);
  int status = 0;
  bool gone = false;
  for (uint64_t waited = 0; waited < grace_ms; waited += 20) {
    pid_t r = waitpid(pid_, &status, WNOHANG);
    if (r == pid_ || (r < 0 && errno == ECHILD)) {
      gone = true;
      break;
    }
    usleep(20 * 1000);
  }
  if (!gone) {
    log::warn("farm: the control plane did not stop in time; killing it",
              {{"pid", log::num(static_cast<long long>(pid_))}});
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  if (process_) {
    process_->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&process_->handle),
             [](uv_handle_t* hh) { delete static_cast<Process*>(hh->data); });
    process_ = nullptr;
  }
  log::info("farm: control plane stopped");
}

}  // namespace eldric::server
