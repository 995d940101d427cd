#include "controlplane/core/plugin_dir.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/json.h"
#include "common/log.h"
#include "rapidjson/document.h"

namespace eldric::controlplane {
namespace {

constexpr size_t kMaxFileBytes = 256 * 1024;

// 0: read; ENOENT: absent; another errno, or EFBIG when too large.
int readSmallFile(const std::string& path, std::string* out) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return errno;
  if (!S_ISREG(st.st_mode)) return EINVAL;
  if (static_cast<size_t>(st.st_size) > kMaxFileBytes) return EFBIG;
  std::ifstream in(path, std::ios::binary);
  if (!in) return errno ? errno : EIO;
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return EIO;
  *out = ss.str();
  return 0;
}

}  // namespace

bool isPluginType(const std::string& type) {
  return type == "tool" || type == "filter" || type == "pipe" || type == "action" ||
         type == "widget";
}

bool scanPluginDir(const std::string& dir, std::vector<PluginRecord>* out,
                   std::vector<std::string>* warnings, std::string* error) {
  DIR* d = opendir(dir.c_str());
  if (!d) {
    *error = "plugins_dir " + dir + ": " + strerror(errno);
    return false;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.') continue;
    struct stat st;
    if (stat((dir + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());

  for (const auto& name : names) {
    const std::string pdir = dir + "/" + name;
    const std::string manifest_path = pdir + "/manifest.json";
    std::string text;
    int rc = readSmallFile(manifest_path, &text);
    if (rc == ENOENT) continue;  // not a plugin
    if (rc != 0) {
      warnings->push_back("plugin skipped: " + manifest_path + ": " + strerror(rc));
      continue;
    }
    rapidjson::Document m;
    std::string jerr;
    bool parsed = json::parse(m, text, &jerr);
    if (!parsed || !m.IsObject()) {
      warnings->push_back("plugin skipped: " + manifest_path + ": " +
                          (!parsed ? jerr : "not a JSON object"));
      continue;
    }
    auto str = [&m](const char* key, std::string* v) {
      if (!m.HasMember(key)) return true;
      if (!m[key].IsString()) return false;
      v->assign(m[key].GetString(), m[key].GetStringLength());
      return true;
    };
    PluginRecord p;
    p.id = name;
    std::string bad;
    if (!str("id", &p.id)) bad = "\"id\" must be a string";
    if (!str("name", &p.name)) bad = "\"name\" must be a string";
    if (!str("type", &p.type)) bad = "\"type\" must be a string";
    if (m.HasMember("enabled")) {
      if (m["enabled"].IsBool()) {
        p.enabled = m["enabled"].GetBool();
      } else {
        bad = "\"enabled\" must be true or false";
      }
    }
    if (bad.empty() && !isPluginType(p.type)) {
      bad = "\"type\" must be one of tool, filter, pipe, action, widget";
    }
    if (!bad.empty()) {
      warnings->push_back("plugin skipped: " + manifest_path + ": " + bad);
      continue;
    }
    // Initial settings. Only the JSON error and its offset are named:
    // valves may hold secrets.
    const std::string valves_path = pdir + "/valves.json";
    std::string valves;
    rc = readSmallFile(valves_path, &valves);
    if (rc == 0) {
      rapidjson::Document v;
      std::string jerr;
      bool parsed = json::parse(v, valves, &jerr);
      if (!parsed || !v.IsObject()) {
        warnings->push_back("plugin skipped: " + valves_path + ": " +
                            (!parsed ? jerr : "not a JSON object"));
        continue;
      }
      p.valves_json = std::move(valves);
    } else if (rc != ENOENT) {
      warnings->push_back("plugin skipped: " + valves_path + ": " + strerror(rc));
      continue;
    }
    out->push_back(std::move(p));
  }
  return true;
}

bool syncPluginDir(const std::string& dir, Store& store, std::vector<std::string>* warnings,
                   size_t* found, std::string* error) {
  std::vector<PluginRecord> plugins;
  if (!scanPluginDir(dir, &plugins, warnings, error)) return false;
  *found = 0;
  for (const auto& p : plugins) {
    std::string err;
    if (!store.upsertPlugin(p, &err)) {
      if (err.rfind("database error", 0) == 0) {
        *error = err;
        return false;
      }
      // The store's checks (id characters, lengths) name no valves.
      warnings->push_back("plugin skipped: " + dir + "/" + p.id + ": " + err);
      continue;
    }
    ++*found;
  }
  return true;
}

bool syncPluginDirLogged(const std::string& dir, Store& store, std::string* error) {
  std::vector<std::string> warnings;
  size_t found = 0;
  bool ok = syncPluginDir(dir, store, &warnings, &found, error);
  for (const auto& w : warnings) log::warn(w);
  if (ok) {
    log::info("plugins directory read", {{"plugins_dir", log::str(dir)},
                                         {"plugins", log::num(static_cast<long long>(found))}});
  }
  return ok;
}

}  // namespace eldric::controlplane
