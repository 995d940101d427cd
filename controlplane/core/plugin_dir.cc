#include "controlplane/core/plugin_dir.h"

#include <dirent.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/crypto.h"
#include "common/hex.h"
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

bool isUiPluginType(const std::string& type) { return type == "action" || type == "widget"; }

bool isPluginType(const std::string& type) {
  return type == "tool" || type == "filter" || type == "pipe" || isUiPluginType(type);
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

namespace eldric::controlplane {
namespace {

// What the data plane accepts as a file's path (see filters/plugins).
bool plainName(const std::string& name) {
  if (name.empty() || name[0] == '.' || name.size() > 128) return false;
  for (char c : name) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.')) return false;
  }
  return true;
}

struct CodeWalk {
  std::vector<std::pair<std::string, std::string>> files;  // relative path, content
  size_t bytes = 0;
  std::string error;
};

bool walk(const std::string& root, const std::string& rel, int depth, CodeWalk* w) {
  std::string path = rel.empty() ? root : root + "/" + rel;
  DIR* d = opendir(path.c_str());
  if (!d) {
    w->error = path + ": " + strerror(errno);
    return false;
  }
  std::vector<std::string> names;
  while (dirent* e = readdir(d)) names.emplace_back(e->d_name);
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const auto& name : names) {
    if (name == "." || name == ".." || name[0] == '.' || name == "__pycache__") continue;
    if (rel.empty() && name == "valves.json") continue;  // settings come from the store
    std::string child_rel = rel.empty() ? name : rel + "/" + name;
    std::string child = root + "/" + child_rel;
    struct stat st;
    if (lstat(child.c_str(), &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) continue;  // never followed out of the folder
    if (!plainName(name)) {
      w->error = child + ": a name other than letters, digits, '.', '_' and '-'";
      return false;
    }
    if (S_ISDIR(st.st_mode)) {
      if (depth >= 8) {
        w->error = child + ": nested too deep";
        return false;
      }
      if (!walk(root, child_rel, depth + 1, w)) return false;
      continue;
    }
    if (!S_ISREG(st.st_mode)) continue;
    if (static_cast<size_t>(st.st_size) > kMaxPluginFileBytes) {
      w->error = child + ": larger than " + std::to_string(kMaxPluginFileBytes) + " bytes";
      return false;
    }
    if (w->files.size() >= kMaxPluginFiles) {
      w->error = root + ": more than " + std::to_string(kMaxPluginFiles) + " files";
      return false;
    }
    std::ifstream in(child, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    if (!in && !in.eof()) {
      w->error = child + ": cannot be read";
      return false;
    }
    std::string content = ss.str();
    w->bytes += content.size();
    if (w->bytes > kMaxPluginCodeBytes) {
      w->error = root + ": more than " + std::to_string(kMaxPluginCodeBytes) + " bytes of code";
      return false;
    }
    w->files.emplace_back(child_rel, std::move(content));
  }
  return true;
}

uint64_t uintMember(const rapidjson::Value& obj, const char* key, uint64_t max, std::string* bad) {
  auto it = obj.FindMember(key);
  if (it == obj.MemberEnd()) return 0;
  if (!it->value.IsUint64() || it->value.GetUint64() > max) {
    *bad = std::string("\"") + key + "\" must be a whole number up to " + std::to_string(max);
    return 0;
  }
  return it->value.GetUint64();
}

void setMs(google::protobuf::Duration* d, uint64_t ms) {
  if (!ms) return;
  d->set_seconds(static_cast<int64_t>(ms / 1000));
  d->set_nanos(static_cast<int32_t>((ms % 1000) * 1000000));
}

// A path the manifest names: a relative file path of plain names.
bool manifestPath(const std::string& path) {
  if (path.empty() || path.size() > 256 || path.front() == '/') return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string part = path.substr(start, end - start);
    if (part.empty() || part[0] == '.' || !plainName(part)) return false;
    start = end + 1;
  }
  return true;
}

// An action's or widget's manifest fields (README "Actions and widgets").
// Empty on success, else why.
std::string readUiManifest(const rapidjson::Value& m, const std::string& type,
                           edge::v1::PluginUi* ui) {
  auto str = [&m](const char* key, std::string* out, size_t max) -> bool {
    auto it = m.FindMember(key);
    if (it == m.MemberEnd()) return true;
    if (!it->value.IsString() || it->value.GetStringLength() > max) return false;
    out->assign(it->value.GetString(), it->value.GetStringLength());
    return true;
  };
  std::string entry, label, icon, slot;
  if (!str("entry", &entry, 256) || !manifestPath(entry) ||
      !(entry.size() > 3 &&
        (entry.compare(entry.size() - 3, 3, ".js") == 0 ||
         (entry.size() > 4 && entry.compare(entry.size() - 4, 4, ".mjs") == 0))))
    return "\"entry\" must name the plugin's JavaScript module (a .js or .mjs file in its folder)";
  if (!str("label", &label, 64)) return "\"label\" must be text of at most 64 characters";
  for (char c : label) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f)
      return "\"label\" holds a control character";
  }
  if (!str("icon", &icon, 256) || (!icon.empty() && !manifestPath(icon)))
    return "\"icon\" must name an SVG or PNG file in the plugin's folder";
  if (!icon.empty() && !(icon.size() > 4 && (icon.compare(icon.size() - 4, 4, ".svg") == 0 ||
                                             icon.compare(icon.size() - 4, 4, ".png") == 0)))
    return "\"icon\" must name an SVG or PNG file in the plugin's folder";
  if (!str("slot", &slot, 16)) return "\"slot\" must be \"side\", \"prompt\" or \"header\"";
  if (type == "widget") {
    if (slot.empty()) slot = "side";
    if (slot != "side" && slot != "prompt" && slot != "header")
      return "\"slot\" must be \"side\", \"prompt\" or \"header\"";
  } else if (!slot.empty()) {
    return "\"slot\" is for widgets";
  }
  ui->set_entry(entry);
  ui->set_label(label);
  ui->set_icon(icon);
  ui->set_slot(slot);
  auto on_user = m.FindMember("on_user_messages");
  if (on_user != m.MemberEnd()) {
    if (!on_user->value.IsBool()) return "\"on_user_messages\" must be true or false";
    ui->set_on_user_messages(on_user->value.GetBool());
  }
  for (const char* key : {"public_valves", "styles"}) {
    auto it = m.FindMember(key);
    if (it == m.MemberEnd()) continue;
    if (!it->value.IsArray() || it->value.Size() > 32)
      return std::string("\"") + key + "\" must be a list of at most 32 names";
    for (const auto& v : it->value.GetArray()) {
      if (!v.IsString() || v.GetStringLength() == 0 || v.GetStringLength() > 128)
        return std::string("\"") + key + "\" must be a list of names";
      std::string s(v.GetString(), v.GetStringLength());
      if (std::string_view(key) == "styles") {
        if (!manifestPath(s) || s.size() < 5 || s.compare(s.size() - 4, 4, ".css") != 0)
          return "\"styles\" must name .css files in the plugin's folder";
        ui->add_styles(s);
      } else {
        ui->add_public_valves(s);
      }
    }
  }
  return "";
}

// The manifest's runtime settings into `p`. Empty on success, else why.
std::string readManifest(const rapidjson::Value& m, edge::v1::RunnablePlugin* p) {
  std::string bad;
  auto on_error = m.FindMember("on_error");
  if (on_error != m.MemberEnd()) {
    std::string v = on_error->value.IsString() ? on_error->value.GetString() : "";
    if (v == "fail_open") {
      p->set_on_error(edge::v1::PLUGIN_ERROR_POLICY_FAIL_OPEN);
    } else if (v == "fail_closed") {
      p->set_on_error(edge::v1::PLUGIN_ERROR_POLICY_FAIL_CLOSED);
    } else {
      return "\"on_error\" must be \"fail_open\" or \"fail_closed\"";
    }
  }
  p->set_processes(static_cast<uint32_t>(uintMember(m, "processes", 16, &bad)));
  auto network = m.FindMember("network");
  if (network != m.MemberEnd()) {
    if (!network->value.IsBool()) return "\"network\" must be true or false";
    p->set_network(network->value.GetBool());
  }
  auto models = m.FindMember("models");
  if (models != m.MemberEnd()) {
    if (!models->value.IsArray()) return "\"models\" must be a list of model ids";
    for (const auto& v : models->value.GetArray()) {
      if (!v.IsString()) return "\"models\" must be a list of model ids";
      p->add_models(v.GetString(), v.GetStringLength());
    }
  }
  auto timeouts = m.FindMember("timeouts");
  if (timeouts != m.MemberEnd()) {
    if (!timeouts->value.IsObject()) return "\"timeouts\" must be an object";
    const auto& t = timeouts->value;
    constexpr uint64_t kDay = 86400000;
    setMs(p->mutable_inlet_timeout(), uintMember(t, "inlet_ms", kDay, &bad));
    setMs(p->mutable_outlet_timeout(), uintMember(t, "outlet_ms", kDay, &bad));
    setMs(p->mutable_stream_timeout(), uintMember(t, "stream_ms", kDay, &bad));
    setMs(p->mutable_pipe_timeout(), uintMember(t, "pipe_ms", kDay, &bad));
    setMs(p->mutable_tool_timeout(), uintMember(t, "tool_ms", kDay, &bad));
  }
  auto limits = m.FindMember("limits");
  if (limits != m.MemberEnd()) {
    if (!limits->value.IsObject()) return "\"limits\" must be an object";
    const auto& l = limits->value;
    auto* out = p->mutable_limits();
    out->set_memory_bytes(uintMember(l, "memory_mb", 1u << 20, &bad) << 20);
    out->set_cpu_seconds(static_cast<uint32_t>(uintMember(l, "cpu_seconds", 1u << 30, &bad)));
    out->set_open_files(static_cast<uint32_t>(uintMember(l, "open_files", 1u << 20, &bad)));
    out->set_processes(static_cast<uint32_t>(uintMember(l, "processes", 1u << 20, &bad)));
  }
  return bad;
}

}  // namespace

std::string readPluginManifest(std::string_view text, const std::string& type,
                               edge::v1::RunnablePlugin* p) {
  rapidjson::Document m;
  std::string jerr;
  if (!json::parse(m, text, &jerr) || !m.IsObject()) {
    return jerr.empty() ? "not a JSON object" : jerr;
  }
  std::string bad = readManifest(m, p);
  if (bad.empty() && isUiPluginType(type)) {
    bad = readUiManifest(m, type, p->mutable_ui());
  }
  return bad;
}

void addRunnablePlugins(const std::string& dir, const std::vector<PluginRecord>& plugins,
                        edge::v1::Plugins* out, std::vector<std::string>* warnings) {
  size_t total = 0;
  for (const auto& rec : plugins) {
    if (!rec.enabled || !isPluginType(rec.type)) continue;
    bool ui = isUiPluginType(rec.type);
    const std::string pdir = dir + "/" + rec.id;
    std::string text;
    int rc = readSmallFile(pdir + "/manifest.json", &text);
    if (rc != 0) {
      // Enabled in the store but not installed here (removed, or another
      // member's folder): nothing to run.
      if (rc != ENOENT)
        warnings->push_back("plugin not run: " + pdir + "/manifest.json: " + strerror(rc));
      continue;
    }
    edge::v1::RunnablePlugin p;
    p.set_id(rec.id);
    p.set_name(rec.name.empty() ? rec.id : rec.name);
    p.set_type(rec.type);
    p.set_valves_json(rec.valves_json);
    std::string bad = readPluginManifest(text, rec.type, &p);
    if (!bad.empty()) {
      warnings->push_back("plugin not run: " + pdir + "/manifest.json: " + bad);
      continue;
    }
    CodeWalk w;
    if (!walk(pdir, "", 0, &w)) {
      warnings->push_back("plugin not run: " + w.error);
      continue;
    }
    if (total + w.bytes > kMaxAllPluginsCodeBytes) {
      warnings->push_back("plugin not run: " + pdir + ": the plugins' code passes " +
                          std::to_string(kMaxAllPluginsCodeBytes) + " bytes in all");
      continue;
    }
    total += w.bytes;
    std::string index;
    bool has_main = false;
    for (auto& [path, content] : w.files) {
      if (path == "main.py") has_main = true;
      auto* f = p.add_files();
      f->set_path(path);
      unsigned char digest[32];
      crypto::sha256(content.data(), content.size(), digest);
      f->set_sha256(digest, 32);
      index += path;
      index.push_back('\0');
      index += hexEncode(std::string_view(reinterpret_cast<const char*>(digest), 32));
      index.push_back('\n');
      f->set_content(std::move(content));
    }
    if (!ui && !has_main) {
      warnings->push_back("plugin not run: " + pdir + ": no main.py");
      continue;
    }
    if (ui) {
      // What the manifest names must be among the files.
      std::vector<std::string> named = {p.ui().entry()};
      if (!p.ui().icon().empty()) named.push_back(p.ui().icon());
      for (const auto& s : p.ui().styles()) named.push_back(s);
      std::string missing;
      for (const auto& n : named) {
        bool found = false;
        for (const auto& f : p.files()) found = found || f.path() == n;
        if (!found) missing = n;
      }
      if (!missing.empty()) {
        warnings->push_back("plugin not shown: " + pdir + ": the manifest names " + missing +
                            ", which is not in the folder");
        continue;
      }
    }
    p.set_code_sha256(crypto::sha256Hex(index));
    *out->add_plugins() = std::move(p);
  }
}

}  // namespace eldric::controlplane
