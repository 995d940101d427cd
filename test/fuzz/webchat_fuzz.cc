// The web chat's handler (dataplane/server/webchat_handler.cc) on what a
// browser, or anyone without a key, sends it: any path under the chat
// (/chat, /login, /chat/assets/*, /chat/plugins/<id>/<version>/<file>,
// /api/v1/plugins/ui) with any Host and If-None-Match. Two UI plugins are
// installed, one with files in a subfolder.
//
// Input: [flags][path]\n[host]\n[if-none-match]
//   flags & 1: API keys required (no session: /chat goes to /login)
//   flags & 2: the path gets the "/chat/plugins/" prefix first
//
// Checked on every answer: one answer, a status the handler gives (200,
// 302, 304, 404), no CR, LF or NUL in any header; a plugin file is served
// only for the exact name it has in its plugin (no normalising: "a/../b",
// "./b", "%2e" never reach a file); a plugin's Content-Security-Policy
// names an origin only when the Host is a host[:port] or [v6]:port.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "dataplane/config/runtime_config.h"
#include "dataplane/server/webchat_handler.h"
#include "filters/plugins/runtime.h"
#include "test/fuzz/fuzz_util.h"
#include "test/unit/fake_stream.h"

namespace eldric::fuzz {
namespace {

using filters::plugins::PluginsConfig;
using filters::plugins::UiFile;
using filters::plugins::UiPlugin;

constexpr std::string_view kVersion = "0123456789abcdef";

std::shared_ptr<UiPlugin> uiPlugin(const std::string& id, const std::string& type,
                                   std::initializer_list<std::string> paths) {
  auto u = std::make_shared<UiPlugin>();
  u->id = id;
  u->name = id;
  u->type = type;
  u->version = std::string(kVersion);
  u->ui.set_entry("main.js");
  u->ui.add_styles("css/style.css");
  if (type == "widget") u->ui.set_slot("above_input");
  for (const auto& p : paths) {
    UiFile f;
    f.content = "content of " + id + "/" + p;
    f.etag = "\"" + id + "-" + p + "\"";
    f.content_type = "text/javascript; charset=utf-8";
    u->files.emplace(p, std::move(f));
  }
  return u;
}

config::RuntimeConfig& runtimeConfig(bool require_key) {
  static config::RuntimeConfig configs[2];
  static bool ready = false;
  if (!ready) {
    auto plugins = std::make_shared<PluginsConfig>();
    plugins->ui.push_back(uiPlugin("clock", "widget", {"main.js", "css/style.css", "img/a.png"}));
    plugins->ui.push_back(uiPlugin("summarise", "action", {"main.js", "css/style.css"}));
    for (int i = 0; i < 2; ++i) {
      configs[i].snapshot.mutable_auth()->set_require_api_key(i == 1);
      configs[i].worker_settings.set(filters::plugins::kPluginsConfigKey, plugins);
    }
    ready = true;
  }
  return configs[require_key ? 1 : 0];
}

bool cleanHeaderText(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

bool originChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == ':' || c == '[' || c == ']';
}

void fuzzOne(const uint8_t* data, size_t size) {
  InputReader in(data, size);
  uint8_t flags = in.byte();
  std::string_view rest = in.rest();
  auto field = [&rest]() {
    size_t nl = rest.find('\n');
    std::string_view f = rest.substr(0, nl);
    rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    return f;
  };
  std::string path(field());
  std::string_view host = field();
  std::string_view etag = rest;
  if (flags & 2) path = "/chat/plugins/" + path;
  // What the HTTP codec lets through: no CR, LF or NUL in a target or a
  // header value.
  if (!cleanHeaderText(path) || !cleanHeaderText(host) || !cleanHeaderText(etag)) return;

  test::FakeStream s;
  s.request.method = "GET";
  s.request.path = path;
  if (!host.empty()) s.request.headers.add("host", host);
  if (!etag.empty()) s.request.headers.add("if-none-match", etag);
  server::WebchatFilter filter(runtimeConfig(flags & 1));
  filter.setDecoderFilterCallbacks(s);
  filter.decodeHeaders(s.request, true);

  // Not the chat's: the request goes on down the chain, unanswered.
  if (!s.response_headers) {
    if (!s.local_replies.empty()) abort();
    return;
  }
  // One answer, whole.
  if (s.local_replies.size() > 1 || !s.response_complete) abort();
  int status = s.response_headers->status;
  if (status != 200 && status != 302 && status != 304 && status != 404) abort();
  for (const auto& h : s.response_headers->headers.entries()) {
    if (!cleanHeaderText(h.first) || !cleanHeaderText(h.second)) abort();
  }

  std::string_view target = s.request.pathOnly();
  constexpr std::string_view kPrefix = "/chat/plugins/";
  if (target.substr(0, kPrefix.size()) != kPrefix || status == 404) return;
  // A plugin's file: <id>/<version>/<name>, the name exactly one of its own
  // files (or the frame and its boot module, made here).
  std::string_view r = target.substr(kPrefix.size());
  size_t a = r.find('/');
  size_t b = a == std::string_view::npos ? a : r.find('/', a + 1);
  if (b == std::string_view::npos) abort();
  std::string id(r.substr(0, a));
  if (r.substr(a + 1, b - a - 1) != kVersion) abort();
  std::string name(r.substr(b + 1));
  const UiPlugin* plugin = nullptr;
  for (const auto& u :
       runtimeConfig(false).worker_settings.get(filters::plugins::kPluginsConfigKey)->ui) {
    if (u->id == id) plugin = u.get();
  }
  if (!plugin) abort();
  if (name != "frame.html" && name != "__boot.js") {
    auto it = plugin->files.find(name);
    if (it == plugin->files.end()) abort();
    if (status == 200 && s.response_body != it->second.content) abort();
    if (status == 304 && etag != it->second.etag) abort();
  } else if (status != 200) {
    abort();
  }
  auto csp = s.responseHeader("content-security-policy");
  if (!csp) abort();
  bool host_ok = !host.empty();
  for (char c : host) host_ok = host_ok && originChar(c);
  // A Host that is not a host[:port] never becomes part of a policy.
  if (!host_ok && csp->find("://") != std::string::npos) abort();
}

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::fuzzOne(data, size);
  return 0;
}
