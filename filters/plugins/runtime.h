#pragma once

// The plugin runtime: what a config says about plugins, compiled once
// (PluginsConfig, on the main thread: the code written to disk, the
// sandbox chosen), the per-worker PluginHost that owns the processes, and
// the process-wide status that the admin API, /health and /metrics read.
//
// Each worker runs its own processes (`processes` per plugin per worker):
// a request's calls stay on its worker's loop, with no hop to another
// thread, and a busy plugin gets one Python interpreter per core.

#include <rapidjson/document.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "eldric/edge/v1/snapshot.pb.h"
#include "filters/plugins/process.h"

namespace eldric::filters::plugins {

// Outcomes counted per plugin and hook.
enum class Hook { Inlet, Outlet, Stream, Pipe, Tool, kCount };
enum class Outcome { Ok, Refused, Failed, Timeout, kCount };
const char* hookName(Hook h);
const char* outcomeName(Outcome o);

// Live state of one plugin across all workers (what the operator sees).
struct PluginStatus {
  std::atomic<uint64_t> calls[static_cast<int>(Hook::kCount)][static_cast<int>(Outcome::kCount)]{};
  // Latency histogram of answered calls, by hook: bucket upper bounds in
  // kLatencyBucketsUs, plus one for larger.
  static constexpr uint64_t kLatencyBucketsUs[] = {100,   250,   500,   1000,   2500,   5000,
                                                   10000, 25000, 50000, 100000, 250000, 1000000};
  static constexpr int kBuckets = sizeof(kLatencyBucketsUs) / sizeof(uint64_t) + 1;
  std::atomic<uint64_t> latency[static_cast<int>(Hook::kCount)][kBuckets]{};
  std::atomic<uint64_t> latency_sum_us[static_cast<int>(Hook::kCount)]{};
  std::atomic<uint64_t> restarts{0};
  std::atomic<int64_t> in_flight{0};
  std::atomic<uint32_t> running{0};  // processes ready, all workers

  void count(Hook h, Outcome o) {
    calls[static_cast<int>(h)][static_cast<int>(o)].fetch_add(1, std::memory_order_relaxed);
  }
  void observe(Hook h, uint64_t us);
  // The latency bucket of `us`.
  static int bucketOf(uint64_t us);

  // A tool plugin's calls by function (the name the model called it by).
  struct ToolCounters {
    std::atomic<uint64_t> calls[static_cast<int>(Outcome::kCount)]{};
    std::atomic<uint64_t> latency[kBuckets]{};
    std::atomic<uint64_t> latency_sum_us{0};
  };
  // Counts one call of `function` (hook "tool" too): made on first use, at
  // most kMaxToolMethods per plugin (the rest go uncounted by name).
  void countTool(const std::string& function, Outcome o, uint64_t us);
  static constexpr size_t kMaxToolMethods = 256;

  // Under the mutex: what the last process to change said.
  mutable std::mutex mutex;
  std::string state = "starting";  // running | starting | crashed | disabled | failed
  std::string last_error;          // never valve values
  std::string description_json;    // configure's result without the valves
  std::string valves_schema_json = "{}";
  std::vector<std::pair<std::string, std::string>> pipe_models;  // model id, display name
  std::map<std::string, std::shared_ptr<ToolCounters>> tools;    // by function name
};

// The status of every plugin ever started in this process, by id.
class StatusTable {
 public:
  std::shared_ptr<PluginStatus> get(const std::string& id);
  std::shared_ptr<PluginStatus> find(const std::string& id) const;
  std::vector<std::pair<std::string, std::shared_ptr<PluginStatus>>> all() const;
  // Plugins no longer configured are shown as disabled.
  void markDisabledExcept(const std::vector<std::string>& ids);

 private:
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<PluginStatus>> plugins_;
};

// One plugin as a config has it, its code on disk.
struct PluginSpec {
  std::string id;
  std::string name;
  std::string type;         // "filter", "pipe" or "tool"
  std::string valves_json;  // secret
  std::string code_sha256;
  std::string code_dir;  // holds main.py
  std::string data_dir;  // writable by the plugin
  bool fail_open = false;
  uint32_t processes = 1;
  uint64_t inlet_ms = 2000, outlet_ms = 2000, stream_ms = 200, pipe_ms = 300000, tool_ms = 30000;
  bool network = false;
  std::vector<std::string> models;  // empty: all
  LaunchSpec launch;                // how each process starts
  std::shared_ptr<PluginStatus> status;
};
using PluginSpecSharedPtr = std::shared_ptr<const PluginSpec>;

// An action or widget (issue 21): files the web chat serves to the
// browser, which runs them in a sandboxed frame; nothing runs here.
struct UiFile {
  std::string content;
  std::string etag;  // "\"<sha256 hex>\""
  const char* content_type = "application/octet-stream";
};
struct UiPlugin {
  std::string id;
  std::string name;
  std::string type;     // "action" or "widget"
  std::string version;  // 16 hex of the code's SHA-256: in every file's URL
  edge::v1::PluginUi ui;
  std::string public_valves_json = "{}";  // only the valves marked public
  std::map<std::string, UiFile> files;    // by path in the plugin's folder
};
using UiPluginSharedPtr = std::shared_ptr<const UiPlugin>;

// The content type a plugin file is served with, by its extension: what a
// browser may run or show from a plugin's folder (anything else is bytes).
const char* uiContentType(std::string_view path);

struct PluginsConfig {
  std::vector<PluginSpecSharedPtr> plugins;  // by id
  std::vector<UiPluginSharedPtr> ui;         // actions and widgets, by id
  size_t max_message_bytes = 8u << 20;
  bool sandboxed = false;
  uint32_t max_tool_rounds = 5;
  bool stream_tool_events = false;
  size_t max_tool_result_bytes = 1u << 20;
  size_t max_tool_answer_bytes = 8u << 20;
};
using PluginsConfigSharedPtr = std::shared_ptr<const PluginsConfig>;

// Process-wide: the sandbox probe's answer, where code goes, the status.
class Runtime {
 public:
  // `host_script` is the Python host's source (embedded in the binary).
  explicit Runtime(std::string host_script);
  // Compiles the plugins part of a snapshot: writes each plugin's code
  // under the runtime directory (by content hash, so an unchanged plugin
  // is not touched), prepares its data folder, and builds the command
  // line. False with `*error` refuses the config (require_sandbox without
  // a sandbox, a runtime directory that cannot be written).
  bool compile(const edge::v1::Plugins& plugins, std::shared_ptr<PluginsConfig>* out,
               std::string* error);
  StatusTable& status() { return status_; }
  // What the admin API shows of a running plugin, a JSON object
  // ({"status", "restarts", "last_error", "processes_running",
  // "in_flight", "models"}, plus "valves_schema" and "description" when
  // `detailed`), or "" for a plugin never started here.
  std::string statusJson(const std::string& id, bool detailed);
  // The schema its valves are checked against ("" if unknown).
  std::string valvesSchema(const std::string& id);
  // Prometheus text for every plugin (calls, latency, restarts, in flight).
  void appendMetrics(std::string& out);
  // {"<id>": "running" | "starting" | "crashed" | ...}, for /health.
  std::string healthJson();

 private:
  bool prepareRuntimeDir(const std::string& dir, std::string* error);
  bool sandboxAvailable(std::string* why);

  std::string host_script_;
  std::string runtime_dir_;  // prepared, with the host script written
  StatusTable status_;
  int probed_ = -1;  // -1 unknown, 0 no sandbox, 1 bubblewrap works
  std::string probe_why_;
  int run_uid_ = -1, run_gid_ = -1;  // the plugins' user when the Edge is root
};

// A method of a tool plugin's Tools class, as the model is offered it.
struct ToolFunction {
  std::string method;  // what the `tool` call names
  // {"name", "description", "parameters"} as the host described it
  // (PROTOCOL.md); the Edge renames it when it offers it.
  std::string description;
  std::string parameters_json;  // a JSON schema object
};

// A pipe model a plugin answers.
struct PipeModel {
  std::string model;    // "<plugin_id>.<pipe_id>", or the plugin id for a lone pipe
  std::string pipe_id;  // what `pipe` gets
  std::string name;
};

class PluginHost;

// One plugin on one worker: its processes and what its last configure
// said.
class Instance : public PluginProcess::Owner {
 public:
  Instance(PluginHost& host, PluginSpecSharedPtr spec);
  ~Instance() override;

  const PluginSpec& spec() const { return *spec_; }
  const PluginSpecSharedPtr& specShared() const { return spec_; }
  PluginStatus& status() const { return *spec_->status; }
  // A process to call: the least busy ready one, else one still starting
  // (its calls wait for configure), else null.
  PluginProcess* pick();
  // Applies a new spec: valves only -> set_valves on the running
  // processes; code or launch changed -> new processes, the old drained.
  void update(PluginSpecSharedPtr spec);

  bool hasInlet() const { return has_inlet_; }
  bool hasOutlet() const { return has_outlet_; }
  bool hasStream() const { return has_stream_; }
  int64_t priority() const { return priority_; }
  // Whether it applies to `model` (manifest's and valves' lists).
  bool appliesTo(std::string_view model) const;
  const std::vector<PipeModel>& pipes() const { return pipes_; }
  // A tool plugin's functions (none until its process described them).
  const std::vector<ToolFunction>& tools() const { return tools_; }

  // PluginProcess::Owner
  void onReady(PluginProcess& process, const rapidjson::Value& description) override;
  void onGone(PluginProcess& process, const std::string& why) override;
  void onOutput(PluginProcess& process, std::string_view line) override;
  void onValvesRefused(PluginProcess& process, const std::string& why) override;

 private:
  void startProcess(size_t slot);
  void scheduleRestart(size_t slot);
  void describe(const rapidjson::Value& description);
  void publishState();

  // Hears set_valves answers (valves changed without a restart).
  struct ValvesObserver : CallObserver {
    Instance* instance = nullptr;
    void onReply(RpcMessage& reply) override;
    void onFailure(CallFailure failure, const std::string& why) override;
  };

  PluginHost& host_;
  PluginSpecSharedPtr spec_;
  ValvesObserver valves_observer_;
  std::vector<std::unique_ptr<PluginProcess>> processes_;
  std::vector<TimerPtr> restart_timers_;
  std::vector<uint32_t> failures_;  // consecutive, per slot, for the backoff
  std::vector<uint64_t> started_ms_;
  std::vector<bool> counted_;  // slot's process counted in status().running
  // Old processes finishing their calls after a code change.
  std::vector<std::unique_ptr<PluginProcess>> draining_;
  bool has_inlet_ = false, has_outlet_ = false, has_stream_ = false;
  int64_t priority_ = 0;
  std::vector<std::string> valve_models_;  // from the description; empty: all
  std::vector<PipeModel> pipes_;
  std::vector<ToolFunction> tools_;
  std::string last_error_;
};

// Per worker: the plugins of the current config, started and stopped as
// configs change.
class PluginHost {
 public:
  explicit PluginHost(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  ~PluginHost();
  Dispatcher& dispatcher() { return dispatcher_; }
  // On the worker's thread, with each new config.
  void apply(PluginsConfigSharedPtr config);
  const PluginsConfig* config() const { return config_.get(); }

  Instance* find(const std::string& id) const {
    auto it = instances_.find(id);
    return it == instances_.end() ? nullptr : it->second.get();
  }
  // Filters for a request to `model`, in order (priority, then id).
  std::vector<Instance*> filtersFor(std::string_view model) const;
  // The pipe that answers `model`, or null.
  Instance* pipeFor(std::string_view model, const PipeModel** pipe) const;
  // Tool plugins that apply to `model`, by id.
  std::vector<Instance*> toolsFor(std::string_view model) const;
  // Whether any tool plugin runs (a cheap look before reading a body).
  bool hasTools() const { return tools_ > 0; }
  // Every pipe model, for /v1/models.
  std::vector<std::pair<const PipeModel*, const Instance*>> pipeModels() const;
  bool empty() const { return instances_.empty(); }

 private:
  friend class Instance;
  Dispatcher& dispatcher_;
  PluginsConfigSharedPtr config_;
  std::map<std::string, std::unique_ptr<Instance>> instances_;
  size_t tools_ = 0;  // instances of type "tool"
};

// `__user__` as plugins get it (PROTOCOL.md): the client's id, name, role
// and scopes, never its key; "anonymous" without one.
std::string userJson(const http::ClientIdentity* identity);

// The slot of RuntimeConfig::worker_settings a compiled config keeps its
// plugins under (what each worker's host applies).
inline constexpr http::FilterStateKey<PluginsConfig> kPluginsConfigKey{"plugins.config"};

// The worker-local slot the filter finds its worker's host under.
inline constexpr http::FilterStateKey<PluginHost> kPluginHostKey{"plugins.host"};

}  // namespace eldric::filters::plugins
