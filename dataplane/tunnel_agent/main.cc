// eldric-tunnel: makes an OpenAI-compatible server behind NAT a worker of
// the cluster through an Edge's tunnel (see agent.h). Outbound only.

#include <signal.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "common/core_dumps.h"
#include "common/log.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/tunnel_agent/agent.h"

namespace {

constexpr const char* kUsage = R"(usage: eldric-tunnel --edge URL --local URL [options]

Runs beside an OpenAI-compatible server (Ollama, vLLM, llama.cpp) behind
NAT and serves it to the cluster through an Edge's tunnel: it only makes
outbound connections, keeps polls parked at the Edge, runs each request
against the local server and streams the answer back.

  --edge URL              the Edge, https://edge.example.com[:port]
  --local URL             the local server, http://127.0.0.1:11434
  --key-file PATH         a file holding the worker-scope API key
                          (or the environment variable ELDRIC_TUNNEL_KEY)
  --ca-file PATH          trust for the Edge's certificate (default: the
                          system bundle)
  --local-key-file PATH   a Bearer token for the local server (or
                          ELDRIC_TUNNEL_LOCAL_KEY)
  --worker-id ID          how the cluster names this worker (default: the
                          host name)
  --models A,B            the models served (default: the local server's
                          /v1/models, asked on every (re)connect)
  --max-concurrent N      requests served at once, one parked poll each (4;
                          the Edge may grant fewer: tunnel.max_concurrent)
  --paths P1,P2           the path prefixes served (/v1/); other requests
                          are answered 403 without reaching the local server
  --local-timeout-ms MS   the local server silent that long fails the
                          request (600000)
  --connect-timeout-ms MS (10000)
  --drain-timeout-ms MS   on SIGTERM, how long answers in flight may take
                          to finish before the tunnel closes (30000)
  --log-level LEVEL       debug, info, warn, error (info)
  --help
)";

bool readSecret(const std::string& path, std::string* out, std::string* error) {
  std::ifstream f(path);
  if (!f) {
    *error = "cannot read " + path;
    return false;
  }
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  *out = s;
  return true;
}

bool parseNumber(const std::string& flag, const char* text, uint64_t min, uint64_t max,
                 uint64_t* out, std::string* error) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (*text == '\0' || *end != '\0' || errno != 0 || text[0] == '-' || v < min || v > max) {
    *error =
        flag + " must be a whole number from " + std::to_string(min) + " to " + std::to_string(max);
    return false;
  }
  *out = v;
  return true;
}

// A header value (a key) must not carry line breaks or control bytes.
bool printable(const std::string& s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x21 || c == 0x7f) return false;
  }
  return !s.empty();
}

bool parseArgs(int argc, char** argv, eldric::tunnel_agent::AgentOptions* o, bool* help,
               std::string* error) {
  std::string edge, local, key_file, local_key_file;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      *help = true;
      return true;
    }
    std::string value;
    if (size_t eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
      value = a.substr(eq + 1);
      a.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      *error = a + " needs a value (see --help)";
      return false;
    }
    uint64_t n = 0;
    if (a == "--edge") {
      edge = value;
    } else if (a == "--local") {
      local = value;
    } else if (a == "--key-file") {
      key_file = value;
    } else if (a == "--ca-file") {
      o->ca_file = value;
    } else if (a == "--local-key-file") {
      local_key_file = value;
    } else if (a == "--worker-id") {
      o->worker_id = value;
    } else if (a == "--models") {
      o->models.clear();
      std::stringstream ss(value);
      for (std::string m; std::getline(ss, m, ',');) {
        if (!m.empty()) o->models.push_back(m);
      }
    } else if (a == "--paths") {
      o->paths.clear();
      std::stringstream ss(value);
      for (std::string p; std::getline(ss, p, ',');) {
        if (p.empty() || p[0] != '/') {
          *error = "--paths takes path prefixes that start with /";
          return false;
        }
        o->paths.push_back(p);
      }
      if (o->paths.empty()) {
        *error = "--paths needs at least one prefix";
        return false;
      }
    } else if (a == "--max-concurrent") {
      if (!parseNumber(a, value.c_str(), 1, 256, &n, error)) return false;
      o->max_concurrent = static_cast<uint32_t>(n);
    } else if (a == "--local-timeout-ms") {
      if (!parseNumber(a, value.c_str(), 100, 86400000, &o->local_timeout_ms, error)) return false;
    } else if (a == "--connect-timeout-ms") {
      if (!parseNumber(a, value.c_str(), 10, 600000, &o->connect_timeout_ms, error)) return false;
    } else if (a == "--drain-timeout-ms") {
      if (!parseNumber(a, value.c_str(), 0, 3600000, &o->drain_timeout_ms, error)) return false;
    } else if (a == "--log-level") {
      eldric::log::Level level;
      if (!eldric::log::parseLevel(value, &level)) {
        *error = "--log-level must be debug, info, warn or error";
        return false;
      }
      eldric::log::setLevel(level);
    } else {
      *error = "unknown flag " + a + " (see --help)";
      return false;
    }
  }
  std::string why;
  if (edge.empty() || !eldric::network::parseUrl(edge, &o->edge, &why)) {
    *error = edge.empty() ? "--edge is required" : "--edge \"" + edge + "\" " + why;
    return false;
  }
  if (local.empty() || !eldric::network::parseUrl(local, &o->local, &why)) {
    *error = local.empty() ? "--local is required" : "--local \"" + local + "\" " + why;
    return false;
  }
  if (!key_file.empty()) {
    if (!readSecret(key_file, &o->key, error)) return false;
  } else if (const char* env = getenv("ELDRIC_TUNNEL_KEY")) {
    o->key = env;
  }
  if (!printable(o->key)) {
    *error = "a worker key is required: --key-file, or ELDRIC_TUNNEL_KEY";
    return false;
  }
  if (!local_key_file.empty()) {
    if (!readSecret(local_key_file, &o->local_key, error)) return false;
  } else if (const char* env = getenv("ELDRIC_TUNNEL_LOCAL_KEY")) {
    o->local_key = env;
  }
  if (!o->local_key.empty() && !printable(o->local_key)) {
    *error = "the local server's key has bytes a header cannot carry";
    return false;
  }
  if (o->worker_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    o->worker_id = host;
  }
  if (o->worker_id.empty() || o->worker_id.size() > 128) {
    *error = "--worker-id must be 1 to 128 characters";
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  eldric::tunnel_agent::AgentOptions options;
  bool help = false;
  std::string error;
  if (!parseArgs(argc, argv, &options, &help, &error)) {
    fprintf(stderr, "eldric-tunnel: %s\n", error.c_str());
    return 2;
  }
  if (help) {
    fputs(kUsage, stdout);
    return 0;
  }
  eldric::forbidCoreDumps();  // the key is in memory
  signal(SIGPIPE, SIG_IGN);
  eldric::Dispatcher dispatcher;
  eldric::tunnel_agent::Agent agent(dispatcher, std::move(options));
  if (!agent.init(&error)) {
    fprintf(stderr, "eldric-tunnel: %s\n", error.c_str());
    return 1;
  }
  struct Stop {
    eldric::tunnel_agent::Agent* agent;
    eldric::Dispatcher* dispatcher;
    int signals = 0;
  } stop{&agent, &dispatcher};
  uv_signal_t term, intr;
  for (uv_signal_t* s : {&term, &intr}) {
    uv_signal_init(dispatcher.loop(), s);
    s->data = &stop;
  }
  auto onSignal = [](uv_signal_t* s, int) {
    auto* st = static_cast<Stop*>(s->data);
    if (++st->signals > 1) _exit(1);  // a second signal: now
    eldric::log::info("stopping: answers in flight finish, then the tunnel closes");
    st->agent->stop([st] { st->dispatcher->exit(); });
  };
  uv_signal_start(&term, onSignal, SIGTERM);
  uv_signal_start(&intr, onSignal, SIGINT);
  agent.start();
  dispatcher.run();
  uv_close(reinterpret_cast<uv_handle_t*>(&term), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&intr), nullptr);
  return 0;
}
