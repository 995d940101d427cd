#include "filters/plugins/runtime.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <tuple>

#include "common/crypto.h"
#include "common/json.h"
#include "common/log.h"
#include "dataplane/stats/stats.h"
#include "rapidjson/stringbuffer.h"
#include "rapidjson/writer.h"

namespace eldric::filters::plugins {

namespace {

constexpr const char* kDefaultPython = "/usr/bin/python3";
constexpr const char* kDefaultRuntimeDir = "/tmp/eldric-edge-plugins";
constexpr const char* kBwrap = "/usr/bin/bwrap";
constexpr uint64_t kConfigureTimeoutMs = 30000;
constexpr uint64_t kDefaultMemoryBytes = 1ull << 30;
constexpr uint32_t kDefaultOpenFiles = 256;
constexpr uint32_t kDefaultProcesses = 512;
// Restart backoff: doubling from the first, at most the last, with +-50%
// jitter; a process that ran this long before dying starts the count over.
constexpr uint64_t kRestartFirstMs = 200;
constexpr uint64_t kRestartMaxMs = 30000;
constexpr uint64_t kHealthyRunMs = 30000;

uint64_t durationMs(const google::protobuf::Duration& d, uint64_t fallback) {
  uint64_t ms =
      static_cast<uint64_t>(d.seconds()) * 1000 + static_cast<uint64_t>(d.nanos()) / 1000000;
  return ms ? ms : fallback;
}

std::string errnoText(const std::string& what, int err) { return what + ": " + strerror(err); }

// Creates `path` (mode `mode`) if missing and checks that it is a real
// directory of ours that nobody else may write: the code under it runs.
bool ownDirectory(const std::string& path, mode_t mode, std::string* error) {
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST) {
    *error = errnoText("plugins: cannot create " + path, errno);
    return false;
  }
  struct stat st;
  if (lstat(path.c_str(), &st) != 0) {
    *error = errnoText("plugins: " + path, errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 022)) {
    *error = "plugins: " + path +
             " must be a directory owned by the Edge's user and writable by nobody else";
    return false;
  }
  chmod(path.c_str(), mode);
  return true;
}

bool writeFileAtomically(const std::string& path, const std::string& content, mode_t mode,
                         std::string* error) {
  std::string tmp = path + ".tmp-" + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
  if (fd < 0) {
    *error = errnoText("plugins: cannot write " + tmp, errno);
    return false;
  }
  size_t off = 0;
  while (off < content.size()) {
    ssize_t n = ::write(fd, content.data() + off, content.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *error = errnoText("plugins: cannot write " + tmp, errno);
      close(fd);
      unlink(tmp.c_str());
      return false;
    }
    off += static_cast<size_t>(n);
  }
  fchmod(fd, mode);
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    *error = errnoText("plugins: cannot write " + path, errno);
    unlink(tmp.c_str());
    return false;
  }
  return true;
}

// A plugin file's path: relative, plain segments only.
bool safeRelativePath(const std::string& p) {
  if (p.empty() || p.size() > 255 || p[0] == '/') return false;
  size_t start = 0;
  while (start <= p.size()) {
    size_t end = p.find('/', start);
    if (end == std::string::npos) end = p.size();
    std::string_view seg(p.data() + start, end - start);
    if (seg.empty() || seg == "." || seg == ".." || seg[0] == '.') return false;
    for (char c : seg) {
      if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
        return false;
    }
    start = end + 1;
  }
  return true;
}

void removeTree(const std::string& path) {
  // Only trees this code wrote (plain files and directories).
  std::string cmd;
  pid_t pid = fork();
  if (pid == 0) {
    execl("/bin/rm", "rm", "-rf", "--", path.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  if (pid > 0) waitpid(pid, nullptr, 0);
}

// Writes the plugin's files into `<root>/code/<id>-<hash>` unless that is
// already there (a reload, another Edge on this host).
bool materialize(const std::string& root, const edge::v1::RunnablePlugin& p, std::string* dir,
                 std::string* error) {
  if (p.code_sha256().size() < 16) {
    *error = "plugin " + p.id() + ": no code hash";
    return false;
  }
  *dir = root + "/code/" + p.id() + "-" + p.code_sha256().substr(0, 16);
  struct stat st;
  if (stat((*dir + "/.complete").c_str(), &st) == 0) return true;
  std::string tmp = *dir + ".tmp-" + std::to_string(getpid());
  removeTree(tmp);
  if (mkdir(tmp.c_str(), 0755) != 0) {
    *error = errnoText("plugins: cannot create " + tmp, errno);
    return false;
  }
  bool has_main = false;
  for (const auto& f : p.files()) {
    if (!safeRelativePath(f.path())) {
      *error = "plugin " + p.id() + ": a file path that is not a plain relative path";
      removeTree(tmp);
      return false;
    }
    unsigned char digest[32];
    crypto::sha256(f.content().data(), f.content().size(), digest);
    if (f.sha256().size() != 32 || memcmp(digest, f.sha256().data(), 32) != 0) {
      *error = "plugin " + p.id() + ": " + f.path() + " does not match its SHA-256";
      removeTree(tmp);
      return false;
    }
    if (f.path() == "main.py") has_main = true;
    // Parent directories of nested files.
    for (size_t slash = f.path().find('/'); slash != std::string::npos;
         slash = f.path().find('/', slash + 1)) {
      mkdir((tmp + "/" + f.path().substr(0, slash)).c_str(), 0755);
    }
    if (!writeFileAtomically(tmp + "/" + f.path(), f.content(), 0644, error)) {
      removeTree(tmp);
      return false;
    }
  }
  if (!has_main) {
    *error = "plugin " + p.id() + " has no main.py";
    removeTree(tmp);
    return false;
  }
  if (!writeFileAtomically(tmp + "/.complete", "", 0644, error)) {
    removeTree(tmp);
    return false;
  }
  if (rename(tmp.c_str(), dir->c_str()) != 0) {
    // Another Edge on this host wrote the same code first.
    removeTree(tmp);
    if (stat((*dir + "/.complete").c_str(), &st) != 0) {
      *error = errnoText("plugins: cannot write " + *dir, errno);
      return false;
    }
  }
  return true;
}

}  // namespace

std::string userJson(const http::ClientIdentity* identity) {
  std::string out = "{\"id\":";
  if (!identity) {
    out += R"("anonymous","name":"anonymous","role":"user","scopes":[]})";
    return out;
  }
  log::appendJsonString(out, identity->client_id);
  out += ",\"name\":";
  log::appendJsonString(out, identity->client_name);
  out += ",\"role\":";
  out += identity->hasScope(2) ? "\"admin\"" : "\"user\"";
  out += ",\"scopes\":[";
  bool first = true;
  for (std::string_view name : identity->scopeNames()) {
    if (!first) out += ',';
    first = false;
    log::appendJsonString(out, name);
  }
  out += "]}";
  return out;
}

const char* uiContentType(std::string_view path) {
  auto ends = [path](std::string_view ext) {
    return path.size() > ext.size() && path.substr(path.size() - ext.size()) == ext;
  };
  if (ends(".js") || ends(".mjs")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".png")) return "image/png";
  if (ends(".json")) return "application/json";
  if (ends(".txt") || ends(".md")) return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

namespace {

UiPluginSharedPtr compileUi(const edge::v1::RunnablePlugin& p) {
  auto u = std::make_shared<UiPlugin>();
  u->id = p.id();
  u->name = p.name().empty() ? p.id() : p.name();
  u->type = p.type();
  u->version = p.code_sha256().substr(0, 16);
  u->ui = p.ui();
  for (const auto& f : p.files()) {
    UiFile file;
    file.content = f.content();
    file.etag = "\"" + crypto::sha256Hex(f.content()) + "\"";
    file.content_type = uiContentType(f.path());
    u->files.emplace(f.path(), std::move(file));
  }
  // Public valves only: the rest are the server's.
  rapidjson::Document valves;
  std::string why;
  if (!p.ui().public_valves().empty() && json::parse(valves, p.valves_json(), &why) &&
      valves.IsObject()) {
    rapidjson::StringBuffer sb;
    rapidjson::Writer<rapidjson::StringBuffer> w(sb);
    w.StartObject();
    for (const auto& m : valves.GetObject()) {
      std::string_view k(m.name.GetString(), m.name.GetStringLength());
      bool pub = false;
      for (const auto& name : p.ui().public_valves()) pub = pub || name == k;
      if (!pub) continue;
      w.Key(m.name.GetString(), m.name.GetStringLength());
      m.value.Accept(w);
    }
    w.EndObject();
    u->public_valves_json.assign(sb.GetString(), sb.GetSize());
  }
  return u;
}

}  // namespace

const char* hookName(Hook h) {
  switch (h) {
    case Hook::Inlet:
      return "inlet";
    case Hook::Outlet:
      return "outlet";
    case Hook::Stream:
      return "stream";
    case Hook::Pipe:
      return "pipe";
    case Hook::Tool:
      return "tool";
    default:
      return "unknown";
  }
}

const char* outcomeName(Outcome o) {
  switch (o) {
    case Outcome::Ok:
      return "ok";
    case Outcome::Refused:
      return "refused";
    case Outcome::Failed:
      return "failed";
    case Outcome::Timeout:
      return "timeout";
    default:
      return "unknown";
  }
}

int PluginStatus::bucketOf(uint64_t us) {
  int b = 0;
  while (b < kBuckets - 1 && us > kLatencyBucketsUs[b]) ++b;
  return b;
}

void PluginStatus::observe(Hook h, uint64_t us) {
  latency[static_cast<int>(h)][bucketOf(us)].fetch_add(1, std::memory_order_relaxed);
  latency_sum_us[static_cast<int>(h)].fetch_add(us, std::memory_order_relaxed);
}

void PluginStatus::countTool(const std::string& function, Outcome o, uint64_t us) {
  count(Hook::Tool, o);
  observe(Hook::Tool, us);
  std::shared_ptr<ToolCounters> c;
  {
    std::lock_guard<std::mutex> lock(mutex);
    auto it = tools.find(function);
    if (it != tools.end()) {
      c = it->second;
    } else if (tools.size() < kMaxToolMethods) {
      c = std::make_shared<ToolCounters>();
      tools.emplace(function, c);
    }
  }
  if (!c) return;
  c->calls[static_cast<int>(o)].fetch_add(1, std::memory_order_relaxed);
  c->latency[bucketOf(us)].fetch_add(1, std::memory_order_relaxed);
  c->latency_sum_us.fetch_add(us, std::memory_order_relaxed);
}

std::shared_ptr<PluginStatus> StatusTable::get(const std::string& id) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& s = plugins_[id];
  if (!s) s = std::make_shared<PluginStatus>();
  return s;
}

std::shared_ptr<PluginStatus> StatusTable::find(const std::string& id) const {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = plugins_.find(id);
  return it == plugins_.end() ? nullptr : it->second;
}

std::vector<std::pair<std::string, std::shared_ptr<PluginStatus>>> StatusTable::all() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return {plugins_.begin(), plugins_.end()};
}

void StatusTable::markDisabledExcept(const std::vector<std::string>& ids) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& [id, s] : plugins_) {
    if (std::find(ids.begin(), ids.end(), id) != ids.end()) continue;
    std::lock_guard<std::mutex> l(s->mutex);
    s->state = "disabled";
    s->pipe_models.clear();
  }
}

// ---------------------------------------------------------------------------
// Runtime

Runtime::Runtime(std::string host_script) : host_script_(std::move(host_script)) {
  if (geteuid() == 0) {
    // Root runs plugins as nobody: a plugin gets no more than any user.
    struct passwd* pw = getpwnam("nobody");
    run_uid_ = pw ? static_cast<int>(pw->pw_uid) : 65534;
    run_gid_ = pw ? static_cast<int>(pw->pw_gid) : 65534;
  }
}

bool Runtime::prepareRuntimeDir(const std::string& dir, std::string* error) {
  if (dir == runtime_dir_) return true;
  if (!ownDirectory(dir, 0711, error) || !ownDirectory(dir + "/code", 0711, error) ||
      !ownDirectory(dir + "/data", 0711, error) || !ownDirectory(dir + "/host", 0711, error)) {
    return false;
  }
  std::string script =
      dir + "/host/eldric_plugin_host-" + crypto::sha256Hex(host_script_).substr(0, 16) + ".py";
  if (!writeFileAtomically(script, host_script_, 0644, error)) return false;
  runtime_dir_ = dir;
  return true;
}

bool Runtime::sandboxAvailable(std::string* why) {
  if (probed_ >= 0) {
    *why = probe_why_;
    return probed_ == 1;
  }
  probed_ = 0;
  if (access(kBwrap, X_OK) != 0) {
    probe_why_ = std::string(kBwrap) + " is missing (Debian package bubblewrap)";
  } else {
    // What every plugin will need: new namespaces, as the plugins' user.
    pid_t pid = fork();
    if (pid == 0) {
      int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
      }
      if (run_uid_ >= 0 &&
          (setgroups(0, nullptr) != 0 || setgid(run_gid_) != 0 || setuid(run_uid_) != 0)) {
        _exit(126);
      }
      execl(kBwrap, "bwrap", "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
            "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink",
            "usr/lib64", "/lib64", "--proc", "/proc", "--dev", "/dev", "/usr/bin/true",
            static_cast<char*>(nullptr));
      _exit(127);
    }
    int status = 0;
    if (pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) &&
        WEXITSTATUS(status) == 0) {
      probed_ = 1;
    } else {
      probe_why_ = "bubblewrap cannot create namespaces here (user namespaces disabled?)";
    }
  }
  *why = probe_why_;
  return probed_ == 1;
}

bool Runtime::compile(const edge::v1::Plugins& plugins, std::shared_ptr<PluginsConfig>* out,
                      std::string* error) {
  auto cfg = std::make_shared<PluginsConfig>();
  if (plugins.max_message_bytes()) cfg->max_message_bytes = plugins.max_message_bytes();
  if (plugins.max_tool_rounds()) cfg->max_tool_rounds = plugins.max_tool_rounds();
  cfg->stream_tool_events = plugins.stream_tool_events();
  if (plugins.max_tool_result_bytes()) cfg->max_tool_result_bytes = plugins.max_tool_result_bytes();
  if (plugins.max_tool_answer_bytes()) cfg->max_tool_answer_bytes = plugins.max_tool_answer_bytes();
  std::vector<std::string> ids;
  for (const auto& p : plugins.plugins()) ids.push_back(p.id());
  status_.markDisabledExcept(ids);
  if (plugins.plugins_size() == 0) {
    *out = cfg;
    return true;
  }
  std::string root = plugins.runtime_dir().empty() ? kDefaultRuntimeDir : plugins.runtime_dir();
  if (!prepareRuntimeDir(root, error)) return false;
  std::string why;
  cfg->sandboxed = sandboxAvailable(&why);
  if (!cfg->sandboxed) {
    if (plugins.require_sandbox()) {
      *error = "plugins.require_sandbox is set but the sandbox is unavailable: " + why;
      return false;
    }
    static std::once_flag warned;
    std::call_once(warned, [&why] {
      log::warn("plugins run without a sandbox (rlimits and their own user only)",
                {{"reason", log::str(why)}});
    });
  }
  std::string python = plugins.python().empty() ? kDefaultPython : plugins.python();
  std::string script = runtime_dir_ + "/host/eldric_plugin_host-" +
                       crypto::sha256Hex(host_script_).substr(0, 16) + ".py";

  for (const auto& p : plugins.plugins()) {
    // The id names folders here: whatever sent the snapshot, it must be a
    // plain name.
    if (p.id().size() > 64 || !safeRelativePath(p.id()) || p.id().find('/') != std::string::npos) {
      *error = "a plugin id must be 1-64 letters, digits, '.', '_' or '-' (not starting with '.')";
      return false;
    }
    if (p.type() == "action" || p.type() == "widget") {
      cfg->ui.push_back(compileUi(p));
      continue;
    }
    if (p.type() != "filter" && p.type() != "pipe" && p.type() != "tool") {
      *error = "plugin " + p.id() + ": the data plane runs filters, pipes and tools, not \"" +
               p.type().substr(0, 32) + "\"";
      return false;
    }
    auto spec = std::make_shared<PluginSpec>();
    spec->id = p.id();
    spec->name = p.name().empty() ? p.id() : p.name();
    spec->type = p.type();
    spec->valves_json = p.valves_json().empty() ? "{}" : p.valves_json();
    spec->code_sha256 = p.code_sha256();
    spec->fail_open = p.on_error() == edge::v1::PLUGIN_ERROR_POLICY_FAIL_OPEN;
    spec->processes = std::clamp<uint32_t>(p.processes(), 1, 16);
    spec->inlet_ms = durationMs(p.inlet_timeout(), 2000);
    spec->outlet_ms = durationMs(p.outlet_timeout(), 2000);
    spec->stream_ms = durationMs(p.stream_timeout(), 200);
    spec->pipe_ms = durationMs(p.pipe_timeout(), 300000);
    spec->tool_ms = durationMs(p.tool_timeout(), 30000);
    spec->network = p.network();
    spec->models.assign(p.models().begin(), p.models().end());
    if (!materialize(root, p, &spec->code_dir, error)) return false;
    spec->data_dir = root + "/data/" + p.id();
    if (mkdir(spec->data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
      *error = errnoText("plugins: cannot create " + spec->data_dir, errno);
      return false;
    }
    if (run_uid_ >= 0 && chown(spec->data_dir.c_str(), run_uid_, run_gid_) != 0) {
      *error = errnoText("plugins: cannot hand " + spec->data_dir + " to the plugins' user", errno);
      return false;
    }

    const auto& lim = p.limits();
    std::vector<std::string> host_args = {
        "--id",
        p.id(),
        "--threads",
        "8",
        "--rlimit-as",
        std::to_string(lim.memory_bytes() ? lim.memory_bytes() : kDefaultMemoryBytes),
        "--rlimit-nofile",
        std::to_string(lim.open_files() ? lim.open_files() : kDefaultOpenFiles),
        "--rlimit-nproc",
        std::to_string(lim.processes() ? lim.processes() : kDefaultProcesses)};
    if (lim.cpu_seconds()) {
      host_args.push_back("--rlimit-cpu");
      host_args.push_back(std::to_string(lim.cpu_seconds()));
    }
    LaunchSpec& l = spec->launch;
    l.uid = run_uid_;
    l.gid = run_gid_;
    l.env = {"PATH=/usr/bin:/bin", "LANG=C.UTF-8", "MALLOC_ARENA_MAX=2",
             "PYTHONDONTWRITEBYTECODE=1"};
    if (cfg->sandboxed) {
      l.argv = {kBwrap, "--die-with-parent", "--new-session", "--unshare-all"};
      if (spec->network) l.argv.push_back("--share-net");
      for (const char* a : {"--ro-bind", "/usr",      "/usr",   "--symlink", "usr/bin", "/bin",
                            "--symlink", "usr/sbin",  "/sbin",  "--symlink", "usr/lib", "/lib",
                            "--symlink", "usr/lib64", "/lib64", "--ro-bind", "/etc",    "/etc",
                            "--proc",    "/proc",     "--dev",  "/dev"}) {
        l.argv.push_back(a);
      }
      // The sandbox's /tmp is memory: bounded like the process.
      l.argv.insert(
          l.argv.end(),
          {"--size", std::to_string(lim.memory_bytes() ? lim.memory_bytes() : kDefaultMemoryBytes),
           "--tmpfs", "/tmp"});
      l.argv.insert(l.argv.end(), {"--ro-bind",
                                   spec->code_dir,
                                   "/plugin",
                                   "--ro-bind",
                                   script,
                                   "/run/eldric/host.py",
                                   "--bind",
                                   spec->data_dir,
                                   "/data",
                                   "--chdir",
                                   "/data",
                                   "--setenv",
                                   "HOME",
                                   "/data",
                                   "--",
                                   python,
                                   "-I",
                                   "-B",
                                   "/run/eldric/host.py",
                                   "--dir",
                                   "/plugin"});
      l.cwd = spec->data_dir;
    } else {
      l.argv = {python, "-I", "-B", script, "--dir", spec->code_dir};
      l.env.push_back("HOME=" + spec->data_dir);
      l.cwd = spec->data_dir;
    }
    l.argv.insert(l.argv.end(), host_args.begin(), host_args.end());
    spec->status = status_.get(p.id());
    cfg->plugins.push_back(std::move(spec));
  }
  std::sort(
      cfg->plugins.begin(), cfg->plugins.end(),
      [](const PluginSpecSharedPtr& a, const PluginSpecSharedPtr& b) { return a->id < b->id; });
  *out = cfg;
  return true;
}

std::string Runtime::statusJson(const std::string& id, bool detailed) {
  auto st = status_.find(id);
  if (!st) return {};
  std::string out = "{\"status\":";
  std::lock_guard<std::mutex> lock(st->mutex);
  log::appendJsonString(out, st->state);
  out += ",\"restarts\":" + std::to_string(st->restarts.load(std::memory_order_relaxed));
  out += ",\"last_error\":";
  if (st->last_error.empty()) {
    out += "null";
  } else {
    log::appendJsonString(out, st->last_error);
  }
  out += ",\"processes_running\":" + std::to_string(st->running.load(std::memory_order_relaxed));
  out += ",\"in_flight\":" + std::to_string(st->in_flight.load(std::memory_order_relaxed));
  out += ",\"models\":[";
  for (size_t i = 0; i < st->pipe_models.size(); ++i) {
    if (i) out += ',';
    log::appendJsonString(out, st->pipe_models[i].first);
  }
  out += "]";
  if (detailed) {
    out += ",\"valves_schema\":" + st->valves_schema_json;
    out += ",\"description\":" +
           (st->description_json.empty() ? std::string("null") : st->description_json);
  }
  out += "}";
  return out;
}

std::string Runtime::valvesSchema(const std::string& id) {
  auto st = status_.find(id);
  if (!st) return {};
  std::lock_guard<std::mutex> lock(st->mutex);
  return st->valves_schema_json;
}

std::string Runtime::healthJson() {
  std::string out = "{";
  bool first = true;
  for (const auto& [id, st] : status_.all()) {
    std::lock_guard<std::mutex> lock(st->mutex);
    if (st->state == "disabled") continue;
    if (!first) out += ',';
    first = false;
    log::appendJsonString(out, id);
    out += ':';
    log::appendJsonString(out, st->state);
  }
  out += "}";
  return out;
}

void Runtime::appendMetrics(std::string& out) {
  auto all = status_.all();
  if (all.empty()) return;
  auto label = [](const std::string& id) {
    std::string q;
    for (char c : id) {
      if (c == '"' || c == '\\') q += '\\';
      q += c;
    }
    return q;
  };
  out += "# HELP eldric_edge_plugin_calls_total Calls to plugins, by hook and outcome.\n";
  out += "# TYPE eldric_edge_plugin_calls_total counter\n";
  for (const auto& [id, st] : all) {
    for (int h = 0; h < static_cast<int>(Hook::kCount); ++h) {
      for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
        uint64_t n = st->calls[h][o].load(std::memory_order_relaxed);
        if (!n) continue;
        out += "eldric_edge_plugin_calls_total{plugin=\"" + label(id) + "\",hook=\"" +
               hookName(static_cast<Hook>(h)) + "\",outcome=\"" +
               outcomeName(static_cast<Outcome>(o)) + "\"} " + std::to_string(n) + "\n";
      }
    }
  }
  // One histogram's lines (none while it has counted nothing).
  static const auto kBoundsS = [] {
    std::array<double, PluginStatus::kBuckets - 1> b{};
    for (size_t i = 0; i < b.size(); ++i) b[i] = PluginStatus::kLatencyBucketsUs[i] / 1e6;
    return b;
  }();
  auto histogram = [&out](const char* name, const std::string& labels,
                          const std::atomic<uint64_t>* buckets,
                          const std::atomic<uint64_t>& sum_us) {
    uint64_t counts[PluginStatus::kBuckets];
    for (int b = 0; b < PluginStatus::kBuckets; ++b) {
      counts[b] = buckets[b].load(std::memory_order_relaxed);
    }
    stats::appendPrometheusHistogram(
        out, name, labels, kBoundsS.data(), counts, kBoundsS.size(),
        static_cast<double>(sum_us.load(std::memory_order_relaxed)) / 1e6);
  };
  out += "# HELP eldric_edge_plugin_call_duration_seconds Time from a call to its answer.\n";
  out += "# TYPE eldric_edge_plugin_call_duration_seconds histogram\n";
  for (const auto& [id, st] : all) {
    for (int h = 0; h < static_cast<int>(Hook::kCount); ++h) {
      histogram("eldric_edge_plugin_call_duration_seconds",
                "plugin=\"" + label(id) + "\",hook=\"" + hookName(static_cast<Hook>(h)) + "\"",
                st->latency[h], st->latency_sum_us[h]);
    }
  }
  // Tool plugins, by function: what the model called, how it went.
  std::vector<std::tuple<std::string, std::string, std::shared_ptr<PluginStatus::ToolCounters>>>
      tools;
  for (const auto& [id, st] : all) {
    std::lock_guard<std::mutex> lock(st->mutex);
    for (const auto& [function, c] : st->tools) tools.emplace_back(id, function, c);
  }
  if (!tools.empty()) {
    out += "# HELP eldric_edge_tool_calls_total Calls of tool plugins' functions, by outcome.\n";
    out += "# TYPE eldric_edge_tool_calls_total counter\n";
    for (const auto& [id, function, c] : tools) {
      for (int o = 0; o < static_cast<int>(Outcome::kCount); ++o) {
        uint64_t n = c->calls[o].load(std::memory_order_relaxed);
        if (!n) continue;
        out += "eldric_edge_tool_calls_total{plugin=\"" + label(id) + "\",tool=\"" +
               label(function) + "\",outcome=\"" + outcomeName(static_cast<Outcome>(o)) + "\"} " +
               std::to_string(n) + "\n";
      }
    }
    out += "# HELP eldric_edge_tool_call_duration_seconds Time from a tool call to its answer.\n";
    out += "# TYPE eldric_edge_tool_call_duration_seconds histogram\n";
    for (const auto& [id, function, c] : tools) {
      histogram("eldric_edge_tool_call_duration_seconds",
                "plugin=\"" + label(id) + "\",tool=\"" + label(function) + "\"", c->latency,
                c->latency_sum_us);
    }
  }
  out += "# HELP eldric_edge_plugin_restarts_total Plugin processes restarted after a crash.\n";
  out += "# TYPE eldric_edge_plugin_restarts_total counter\n";
  for (const auto& [id, st] : all) {
    out += "eldric_edge_plugin_restarts_total{plugin=\"" + label(id) + "\"} " +
           std::to_string(st->restarts.load(std::memory_order_relaxed)) + "\n";
  }
  out += "# HELP eldric_edge_plugin_in_flight Calls waiting for a plugin's answer.\n";
  out += "# TYPE eldric_edge_plugin_in_flight gauge\n";
  for (const auto& [id, st] : all) {
    out += "eldric_edge_plugin_in_flight{plugin=\"" + label(id) + "\"} " +
           std::to_string(st->in_flight.load(std::memory_order_relaxed)) + "\n";
  }
  out += "# HELP eldric_edge_plugin_processes Plugin processes ready to take calls.\n";
  out += "# TYPE eldric_edge_plugin_processes gauge\n";
  for (const auto& [id, st] : all) {
    out += "eldric_edge_plugin_processes{plugin=\"" + label(id) + "\"} " +
           std::to_string(st->running.load(std::memory_order_relaxed)) + "\n";
  }
}

// ---------------------------------------------------------------------------
// Instance

Instance::Instance(PluginHost& host, PluginSpecSharedPtr spec)
    : host_(host), spec_(std::move(spec)) {
  valves_observer_.instance = this;
  // Until a process describes the plugin, a filter is assumed to have
  // every hook: requests wait for it rather than pass unfiltered.
  has_inlet_ = has_outlet_ = has_stream_ = spec_->type == "filter";
  if (spec_->type == "pipe") pipes_.push_back(PipeModel{spec_->id, spec_->id, spec_->name});
  size_t n = spec_->processes;
  processes_.resize(n);
  restart_timers_.resize(n);
  failures_.assign(n, 0);
  started_ms_.assign(n, 0);
  counted_.assign(n, false);
  for (size_t i = 0; i < n; ++i) startProcess(i);
}

Instance::~Instance() {
  for (size_t i = 0; i < counted_.size(); ++i) {
    if (counted_[i]) status().running.fetch_sub(1, std::memory_order_relaxed);
  }
  processes_.clear();
  draining_.clear();
}

void Instance::startProcess(size_t slot) {
  auto p = std::make_unique<PluginProcess>(
      host_.dispatcher(), *this, host_.config() ? host_.config()->max_message_bytes : (8u << 20));
  std::string params = "{\"valves\":" + spec_->valves_json + "}";
  std::string error;
  started_ms_[slot] = host_.dispatcher().nowMs();
  PluginProcess* raw = p.get();
  processes_[slot] = std::move(p);
  if (!raw->start(spec_->launch, params, kConfigureTimeoutMs, &error)) {
    last_error_ = error;
    log::error("plugin not started", {{"plugin", log::str(spec_->id)}, {"error", log::str(error)}});
    host_.dispatcher().deferredDelete(std::move(processes_[slot]));
    publishState();
    scheduleRestart(slot);
  }
}

void Instance::scheduleRestart(size_t slot) {
  uint32_t f = failures_[slot]++;
  uint64_t delay = std::min<uint64_t>(kRestartMaxMs, kRestartFirstMs << std::min<uint32_t>(f, 10));
  thread_local std::minstd_rand rng(std::random_device{}());
  delay = delay / 2 + rng() % (delay + 1);
  restart_timers_[slot] = host_.dispatcher().createTimer([this, slot] {
    status().restarts.fetch_add(1, std::memory_order_relaxed);
    startProcess(slot);
  });
  restart_timers_[slot]->enable(delay);
}

PluginProcess* Instance::pick() {
  PluginProcess* best = nullptr;
  for (auto& p : processes_) {
    if (!p || p->gone()) continue;
    if (!best || (p->ready() && !best->ready()) ||
        (p->ready() == best->ready() && p->inFlight() < best->inFlight())) {
      best = p.get();
    }
  }
  return best;
}

bool Instance::appliesTo(std::string_view model) const {
  auto in = [model](const std::vector<std::string>& list) {
    return list.empty() || std::find(list.begin(), list.end(), model) != list.end();
  };
  return in(spec_->models) && in(valve_models_);
}

void Instance::describe(const rapidjson::Value& d) {
  auto flag = [](const rapidjson::Value& obj, const char* k) {
    auto it = obj.FindMember(k);
    return it != obj.MemberEnd() && it->value.IsBool() && it->value.GetBool();
  };
  has_inlet_ = has_outlet_ = has_stream_ = false;
  auto filter = d.FindMember("filter");
  if (spec_->type == "filter" && filter != d.MemberEnd() && filter->value.IsObject()) {
    has_inlet_ = flag(filter->value, "inlet");
    has_outlet_ = flag(filter->value, "outlet");
    has_stream_ = flag(filter->value, "stream");
  }
  auto prio = d.FindMember("priority");
  priority_ = prio != d.MemberEnd() && prio->value.IsNumber()
                  ? static_cast<int64_t>(prio->value.GetDouble())
                  : 0;
  valve_models_.clear();
  auto models = d.FindMember("models");
  if (models != d.MemberEnd() && models->value.IsArray()) {
    for (const auto& m : models->value.GetArray()) {
      if (m.IsString()) valve_models_.emplace_back(m.GetString(), m.GetStringLength());
    }
  }
  pipes_.clear();
  auto pipes = d.FindMember("pipes");
  if (spec_->type == "pipe" && pipes != d.MemberEnd() && pipes->value.IsArray()) {
    bool lone = pipes->value.Size() == 1 && pipes->value[0].IsObject() &&
                pipes->value[0].HasMember("id") && pipes->value[0]["id"].IsString() &&
                spec_->id == pipes->value[0]["id"].GetString();
    for (const auto& p : pipes->value.GetArray()) {
      if (!p.IsObject() || !p.HasMember("id") || !p["id"].IsString()) continue;
      PipeModel m;
      m.pipe_id.assign(p["id"].GetString(), p["id"].GetStringLength());
      if (m.pipe_id.empty() || m.pipe_id.size() > 128) continue;
      m.model = lone ? spec_->id : spec_->id + "." + m.pipe_id;
      m.name = p.HasMember("name") && p["name"].IsString()
                   ? std::string(p["name"].GetString(),
                                 std::min<size_t>(p["name"].GetStringLength(), 256))
                   : m.pipe_id;
      pipes_.push_back(std::move(m));
      if (pipes_.size() >= 256) break;
    }
  }
  tools_.clear();
  auto tools = d.FindMember("tools");
  if (spec_->type == "tool" && tools != d.MemberEnd() && tools->value.IsArray()) {
    // The host's words, checked as any plugin output is: a method name
    // the Edge can put in a function name, a schema that is an object.
    for (const auto& t : tools->value.GetArray()) {
      if (!t.IsObject()) continue;
      auto name = t.FindMember("name");
      if (name == t.MemberEnd() || !name->value.IsString()) continue;
      ToolFunction f;
      f.method.assign(name->value.GetString(), name->value.GetStringLength());
      if (f.method.empty() || f.method.size() > 64) continue;
      auto desc = t.FindMember("description");
      if (desc != t.MemberEnd() && desc->value.IsString())
        f.description.assign(desc->value.GetString(),
                             std::min<size_t>(desc->value.GetStringLength(), 4096));
      auto params = t.FindMember("parameters");
      if (params != t.MemberEnd() && params->value.IsObject()) {
        f.parameters_json = json::serialize(params->value);
      } else {
        f.parameters_json = R"({"type":"object","properties":{}})";
      }
      tools_.push_back(std::move(f));
      if (tools_.size() >= 128) break;
    }
  }
  // What the operator sees: the description without the valves' values.
  rapidjson::StringBuffer sb;
  rapidjson::Writer<rapidjson::StringBuffer> w(sb);
  w.StartObject();
  for (const auto& m : d.GetObject()) {
    std::string_view k(m.name.GetString(), m.name.GetStringLength());
    if (k == "valves" || k == "valves_schema") continue;
    w.Key(m.name.GetString(), m.name.GetStringLength());
    m.value.Accept(w);
  }
  w.EndObject();
  std::string schema = "{}";
  auto vs = d.FindMember("valves_schema");
  if (vs != d.MemberEnd() && vs->value.IsObject()) schema = json::serialize(vs->value);
  std::lock_guard<std::mutex> lock(status().mutex);
  status().description_json = sb.GetString();
  status().valves_schema_json = std::move(schema);
  status().pipe_models.clear();
  for (const auto& p : pipes_) status().pipe_models.emplace_back(p.model, p.name);
}

void Instance::publishState() {
  uint32_t ready = 0;
  for (auto& p : processes_) {
    if (p && p->ready()) ++ready;
  }
  std::lock_guard<std::mutex> lock(status().mutex);
  if (ready) {
    status().state = "running";
  } else if (!last_error_.empty()) {
    status().state = "crashed";
  } else {
    status().state = "starting";
  }
  status().last_error = last_error_;
}

void Instance::onReady(PluginProcess& process, const rapidjson::Value& description) {
  describe(description);
  for (size_t i = 0; i < processes_.size(); ++i) {
    if (processes_[i].get() != &process) continue;
    restart_timers_[i].reset();
    if (!counted_[i]) {
      counted_[i] = true;
      status().running.fetch_add(1, std::memory_order_relaxed);
    }
  }
  log::info("plugin running", {{"plugin", log::str(spec_->id)},
                               {"pid", log::num(static_cast<long long>(process.pid()))}});
  publishState();
}

void Instance::onGone(PluginProcess& process, const std::string& why) {
  for (auto it = draining_.begin(); it != draining_.end(); ++it) {
    if (it->get() == &process) {
      host_.dispatcher().deferredDelete(std::move(*it));
      draining_.erase(it);
      return;
    }
  }
  for (size_t i = 0; i < processes_.size(); ++i) {
    if (processes_[i].get() != &process) continue;
    if (counted_[i]) {
      counted_[i] = false;
      status().running.fetch_sub(1, std::memory_order_relaxed);
    }
    if (host_.dispatcher().nowMs() - started_ms_[i] > kHealthyRunMs) failures_[i] = 0;
    last_error_ = why;
    log::warn("plugin process gone; restarting",
              {{"plugin", log::str(spec_->id)}, {"reason", log::str(why)}});
    host_.dispatcher().deferredDelete(std::move(processes_[i]));
    publishState();
    scheduleRestart(i);
    return;
  }
}

void Instance::onOutput(PluginProcess&, std::string_view line) {
  log::info("plugin output", {{"plugin", log::str(spec_->id)}, {"line", log::str(line)}});
}

void Instance::onValvesRefused(PluginProcess&, const std::string& why) {
  last_error_ = "stored valves refused, running on the plugin's defaults: " + why;
  log::warn("plugin refused its stored valves; running on its defaults",
            {{"plugin", log::str(spec_->id)}, {"reason", log::str(why)}});
}

void Instance::update(PluginSpecSharedPtr spec) {
  bool same_code = spec->code_sha256 == spec_->code_sha256 &&
                   spec->launch.argv == spec_->launch.argv && spec->processes == spec_->processes;
  bool same_valves = spec->valves_json == spec_->valves_json;
  spec_ = std::move(spec);
  if (same_code && same_valves) return;
  if (same_code) {
    // Valves only: applied to the running processes without a restart;
    // one still starting is restarted with the new values.
    std::string params = "{\"valves\":" + spec_->valves_json + "}";
    for (size_t i = 0; i < processes_.size(); ++i) {
      auto& p = processes_[i];
      if (!p) continue;
      if (p->ready()) {
        p->call("set_valves", params, kConfigureTimeoutMs, &valves_observer_);
      } else {
        p->kill(CallFailure::NotRunning, "restarted with new valves");
      }
    }
    return;
  }
  // New code: new processes take new requests; the old finish theirs.
  for (size_t i = 0; i < processes_.size(); ++i) {
    if (counted_[i]) status().running.fetch_sub(1, std::memory_order_relaxed);
    if (processes_[i]) {
      processes_[i]->drain();
      draining_.push_back(std::move(processes_[i]));
    }
  }
  size_t n = spec_->processes;
  processes_.clear();
  processes_.resize(n);
  restart_timers_.clear();
  restart_timers_.resize(n);
  failures_.assign(n, 0);
  started_ms_.assign(n, 0);
  counted_.assign(n, false);
  has_inlet_ = has_outlet_ = has_stream_ = spec_->type == "filter";
  for (size_t i = 0; i < n; ++i) startProcess(i);
}

void Instance::ValvesObserver::onReply(RpcMessage& reply) {
  if (reply.ok && reply.result && reply.result->IsObject()) {
    instance->describe(*reply.result);
    instance->last_error_.clear();
  } else if (!reply.ok) {
    instance->last_error_ = "valves not applied: " + reply.error_message;
  }
  instance->publishState();
}

void Instance::ValvesObserver::onFailure(CallFailure, const std::string& why) {
  instance->last_error_ = "valves not applied: " + why;
}

// ---------------------------------------------------------------------------
// PluginHost

PluginHost::~PluginHost() {
  instances_.clear();
  // The processes were killed; their handles close once each is reaped.
  PluginProcess::awaitExits(dispatcher_.loop(), 2000);
}

void PluginHost::apply(PluginsConfigSharedPtr config) {
  config_ = std::move(config);
  std::map<std::string, std::unique_ptr<Instance>> next;
  for (const auto& spec : config_->plugins) {
    auto it = instances_.find(spec->id);
    if (it != instances_.end()) {
      it->second->update(spec);
      next.emplace(spec->id, std::move(it->second));
      instances_.erase(it);
    } else {
      next.emplace(spec->id, std::make_unique<Instance>(*this, spec));
    }
  }
  // What is left was disabled or removed: its processes are stopped.
  instances_.swap(next);
  next.clear();
  tools_ = 0;
  for (const auto& [id, inst] : instances_) tools_ += inst->spec().type == "tool";
}

std::vector<Instance*> PluginHost::filtersFor(std::string_view model) const {
  std::vector<Instance*> out;
  for (const auto& [id, inst] : instances_) {
    if (inst->spec().type != "filter" || !inst->appliesTo(model)) continue;
    out.push_back(inst.get());
  }
  std::stable_sort(out.begin(), out.end(), [](const Instance* a, const Instance* b) {
    return a->priority() < b->priority();
  });
  return out;
}

Instance* PluginHost::pipeFor(std::string_view model, const PipeModel** pipe) const {
  for (const auto& [id, inst] : instances_) {
    if (inst->spec().type != "pipe") continue;
    for (const auto& p : inst->pipes()) {
      if (p.model == model) {
        *pipe = &p;
        return inst.get();
      }
    }
  }
  return nullptr;
}

std::vector<Instance*> PluginHost::toolsFor(std::string_view model) const {
  std::vector<Instance*> out;
  for (const auto& [id, inst] : instances_) {
    if (inst->spec().type == "tool" && !inst->tools().empty() && inst->appliesTo(model))
      out.push_back(inst.get());
  }
  return out;
}

std::vector<std::pair<const PipeModel*, const Instance*>> PluginHost::pipeModels() const {
  std::vector<std::pair<const PipeModel*, const Instance*>> out;
  for (const auto& [id, inst] : instances_) {
    if (inst->spec().type != "pipe") continue;
    for (const auto& p : inst->pipes()) out.emplace_back(&p, inst.get());
  }
  return out;
}

}  // namespace eldric::filters::plugins
