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
#include <vector>

#include "controlplane/core/store.h"

namespace eldric::controlplane {

// The plugin types of the seed.
bool isPluginType(const std::string& type);

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

}  // namespace eldric::controlplane
