// The floor under row 8 (issue 17): what one plugin-protocol round trip
// over pipes costs on this machine when calls come at a model's token pace,
// for any process answering it. Starts COMMAND with the protocol's
// descriptors (requests on its fd 0, answers on its fd 3, as the Edge does),
// sends `configure`, 50 untimed `stream` calls back to back, then N
// `stream` calls GAP ms apart, one at a time, and times each from its write
// to its answer's newline. The same event as the Edge sends in row 8.
//
//   pipe_rtt [--n 300] [--gap-ms 20] -- COMMAND [ARGS...]
//
// Run against the plugin host with test/bench/plugins/noop-stream, and
// against test/bench/python_echo.py (the least a Python process can do per
// call) or another echo, the difference is what the host's own code costs.
// One JSON line on stdout: the round trip's percentiles and the command's
// CPU per timed call (all its threads, /proc/PID/task/*/schedstat), in µs.

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

int64_t nowNs() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

// On-CPU time of every thread of `pid`, in ns.
int64_t cpuNs(pid_t pid) {
  std::string dir = "/proc/" + std::to_string(pid) + "/task";
  int64_t total = 0;
  DIR* d = opendir(dir.c_str());
  if (!d) return 0;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string f = dir + "/" + e->d_name + "/schedstat";
    if (FILE* x = fopen(f.c_str(), "r")) {
      long long v = 0;
      if (fscanf(x, "%lld", &v) == 1) total += v;
      fclose(x);
    }
  }
  closedir(d);
  return total;
}

struct Peer {
  int in = -1;   // its fd 0
  int out = -1;  // its fd 3
  std::string pending;

  // Writes `line` and waits for one answer line.
  bool call(const std::string& line) {
    size_t off = 0;
    while (off < line.size()) {
      ssize_t n = write(in, line.data() + off, line.size() - off);
      if (n <= 0) return false;
      off += static_cast<size_t>(n);
    }
    char buf[65536];
    for (;;) {
      size_t nl = pending.find('\n');
      if (nl != std::string::npos) {
        pending.erase(0, nl + 1);
        return true;
      }
      ssize_t n = read(out, buf, sizeof buf);
      if (n <= 0) return false;
      pending.append(buf, static_cast<size_t>(n));
    }
  }
};

std::string streamCall(int id) {
  return R"({"jsonrpc":"2.0","id":)" + std::to_string(id) +
         R"(,"method":"stream","params":{"event":{"id":"chatcmpl-1","object":)"
         R"("chat.completion.chunk","created":1,"model":"llama3.2:3b","choices":[{"index":0,)"
         R"("delta":{"content":"tok "},"finish_reason":null}]}}})"
         "\n";
}

int64_t at(const std::vector<int64_t>& sorted, double q) {
  return sorted[std::min(sorted.size() - 1, static_cast<size_t>(q * sorted.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  int n = 300;
  double gap_ms = 20;
  int cmd = -1;
  for (int i = 1; i < argc; ++i) {
    if (!strcmp(argv[i], "--")) {
      cmd = i + 1;
      break;
    }
    if (i + 1 >= argc) break;
    if (!strcmp(argv[i], "--n")) {
      n = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--gap-ms")) {
      gap_ms = atof(argv[++i]);
    } else {
      break;
    }
  }
  if (cmd < 0 || cmd >= argc || n < 1 || gap_ms < 0) {
    fprintf(stderr, "usage: pipe_rtt [--n 300] [--gap-ms 20] -- COMMAND [ARGS...]\n");
    return 2;
  }
  int req[2], ans[2];
  if (pipe(req) != 0 || pipe(ans) != 0) return 1;
  pid_t pid = fork();
  if (pid == 0) {
    // fd 3 may be one of the pipes' own descriptors: move out of the way first.
    int a = dup(ans[1]);
    dup2(req[0], 0);
    dup2(a, 3);
    execvp(argv[cmd], argv + cmd);
    _exit(127);
  }
  close(req[0]);
  close(ans[1]);
  Peer peer{req[1], ans[0], {}};
  if (!peer.call(R"({"jsonrpc":"2.0","id":1,"method":"configure","params":{"valves":{}}})"
                 "\n")) {
    fprintf(stderr, "pipe_rtt: %s did not answer configure\n", argv[cmd]);
    return 1;
  }
  for (int i = 0; i < 50; ++i) {
    if (!peer.call(streamCall(10 + i))) return 1;
  }
  std::vector<int64_t> rtt;
  rtt.reserve(static_cast<size_t>(n));
  int64_t cpu0 = cpuNs(pid);
  for (int i = 0; i < n; ++i) {
    if (gap_ms > 0) {
      timespec s{static_cast<time_t>(gap_ms / 1000),
                 static_cast<long>(static_cast<int64_t>(gap_ms * 1e6) % 1000000000)};
      nanosleep(&s, nullptr);
    }
    std::string line = streamCall(1000 + i);
    int64_t t = nowNs();
    if (!peer.call(line)) {
      fprintf(stderr, "pipe_rtt: %s stopped answering\n", argv[cmd]);
      return 1;
    }
    rtt.push_back(nowNs() - t);
  }
  int64_t cpu1 = cpuNs(pid);
  close(peer.in);
  close(peer.out);
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  std::sort(rtt.begin(), rtt.end());
  printf(R"({"calls":%d,"gap_ms":%g,"rtt_us":{"p50":%.1f,"p90":%.1f,"p99":%.1f},)"
         R"("cpu_us_per_call":%.1f})"
         "\n",
         n, gap_ms, at(rtt, 0.5) / 1e3, at(rtt, 0.9) / 1e3, at(rtt, 0.99) / 1e3,
         static_cast<double>(cpu1 - cpu0) / n / 1e3);
  return 0;
}
