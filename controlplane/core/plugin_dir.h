#pragma once

// Where plugins come from: a plugins directory in the seed's layout,
//   plugins/<id>/manifest.json   {"name", "version", "type", "entry", ...}
//   plugins/<id>/valves.json     the plugin's settings (optional)
// scanned at start and on reload (SIGHUP) by whoever owns the store: the
// standalone Edge (`plugins_dir` / --plugins-dir) or, in a farm, the
// control plane (the `plugins_dir` of its config file). Each plugin found
// is upserted into the store's plugins table: a new one starts with the
// manifest's "enabled" (default false) and its valves.json; one already
// known keeps the enabled state and valves an admin set, and only its name
// and type follow the manifest. A plugin whose directory is removed stays
// in the store (so its valves survive a reinstall).
//
// Valves may hold secrets: no message here quotes a valves.json.

#include <string>
#include <string_view>
#include <vector>

#include "controlplane/core/store.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane {

// The plugin types of the seed.
bool isPluginType(const std::string& type);
// An action or a widget: files for the web chat, nothing run here.
bool isUiPluginType(const std::string& type);

// Reads every subdirectory of `dir` that holds a manifest.json. A plugin
// that cannot be read (bad manifest, bad valves.json) is skipped with a
// warning; false with `*error` set only when `dir` itself cannot be read.
bool scanPluginDir(const std::string& dir, std::vector<PluginRecord>* out,
                   std::vector<std::string>* warnings, std::string* error);

// scanPluginDir + Store::upsertPlugin for each. `*found` counts the
// plugins now in the store from this directory.
bool syncPluginDir(const std::string& dir, Store& store, std::vector<std::string>* warnings,
                   size_t* found, std::string* error);

// syncPluginDir for a daemon: each warning and the count go to the log
// (both daemons read their plugins directory this way).
bool syncPluginDirLogged(const std::string& dir, Store& store, std::string* error);

// The enabled plugins the data plane runs (types filter and pipe) from
// `plugins` (the store's records) whose folders are in `dir`, appended to
// `out` with their code (every regular file of the folder but
// valves.json, dot-files and __pycache__; at most kMaxPluginFiles files,
// kMaxPluginFileBytes each, kMaxPluginCodeBytes in all) and the runtime
// settings of their manifest:
//   "on_error": "fail_open" | "fail_closed" (default),
//   "processes": 1-16 per worker,
//   "timeouts": {"inlet_ms", "outlet_ms", "stream_ms", "pipe_ms"},
//   "network": true (otherwise none in the sandbox),
//   "models": ["model id", ...],
//   "limits": {"memory_mb", "cpu_seconds", "open_files", "processes"}.
// A plugin whose folder or manifest cannot be used is left out, with a
// warning that names the file and the reason (never a valve).
inline constexpr size_t kMaxPluginFiles = 256;
inline constexpr size_t kMaxPluginFileBytes = 1u << 20;
inline constexpr size_t kMaxPluginCodeBytes = 8u << 20;
// All plugins' code together (a snapshot crosses the farm in one message).
inline constexpr size_t kMaxAllPluginsCodeBytes = 32u << 20;
void addRunnablePlugins(const std::string& dir, const std::vector<PluginRecord>& plugins,
                        edge::v1::Plugins* out, std::vector<std::string>* warnings);

// One manifest.json's text read for a plugin of `type` into `p`: the
// runtime settings addRunnablePlugins lists and, for an action or
// widget, its "ui" fields (README "Actions and widgets"). Empty on
// success, else why (never quoting the text). Fuzzed: test/fuzz/plugin_manifest_fuzz.
std::string readPluginManifest(std::string_view text, const std::string& type,
                               edge::v1::RunnablePlugin* p);

}  // namespace eldric::controlplane
