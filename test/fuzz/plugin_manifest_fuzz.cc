// A plugin's manifest.json (controlplane/core/plugin_dir.h,
// readPluginManifest): the first byte picks the plugin's type, the rest is
// the manifest's text. Operator input, but read by both daemons at start
// and on every reload, so no text may crash either. Checked on success:
// the bounds the data plane relies on (processes 0-16; an action's or
// widget's entry, icon and styles are relative paths inside the folder, no
// "..", no dot-file, with their extensions; a widget's slot is one of
// three; a label has no control character).

#include <cstdint>
#include <string>
#include <string_view>

#include "controlplane/core/plugin_dir.h"
#include "test/fuzz/fuzz_util.h"

namespace eldric::fuzz {
namespace {

bool insideFolder(const std::string& path) {
  if (path.empty() || path.front() == '/') return false;
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    std::string_view part(path.data() + start, end - start);
    if (part.empty() || part.front() == '.') return false;
    start = end + 1;
  }
  return true;
}

bool endsWith(const std::string& s, std::string_view tail) {
  return s.size() > tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

void fuzzOne(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static const char* const kTypes[] = {"filter", "pipe", "tool", "action", "widget"};
  const std::string type = kTypes[data[0] % 5];
  std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  edge::v1::RunnablePlugin p;
  if (!controlplane::readPluginManifest(text, type, &p).empty()) return;
  if (p.processes() > 16) abort();
  if (type != "action" && type != "widget") {
    if (p.has_ui()) abort();
    return;
  }
  const auto& ui = p.ui();
  if (!insideFolder(ui.entry()) || !(endsWith(ui.entry(), ".js") || endsWith(ui.entry(), ".mjs")))
    abort();
  if (!ui.icon().empty() &&
      (!insideFolder(ui.icon()) || !(endsWith(ui.icon(), ".svg") || endsWith(ui.icon(), ".png"))))
    abort();
  for (const auto& s : ui.styles()) {
    if (!insideFolder(s) || !endsWith(s, ".css")) abort();
  }
  for (char c : ui.label()) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) abort();
  }
  if (type == "widget" && ui.slot() != "side" && ui.slot() != "prompt" && ui.slot() != "header")
    abort();
  if (type == "action" && !ui.slot().empty()) abort();
}

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { eldric::fuzz::fuzzOne(data, size); });
  return 0;
}
