#include "dataplane/server/webchat_handler.h"

#include <cstring>
#include <unordered_map>

#include "common/log.h"
#include "dataplane/config/runtime_config.h"
#include "filters/plugins/runtime.h"
#include "webchat/assets.h"

namespace eldric::server {
namespace {

constexpr const char* kCsp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src "
    "'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

void securityHeaders(http::ResponseHeaders& h) {
  h.headers.add("content-security-policy", kCsp);
  h.headers.add("x-content-type-options", "nosniff");
  h.headers.add("referrer-policy", "no-referrer");
  h.headers.add("x-frame-options", "DENY");
}

// The asset's bytes in a slab of this worker's, made on first use and
// shared by reference by every response after it: a client that pipelines
// hundreds of requests for an asset holds references, not copies. Slabs
// are counted without atomics, so each worker thread has its own.
void addAsset(Buffer& out, std::string_view body) {
  if (body.empty()) return;
  thread_local std::unordered_map<const char*, SlabRef> slabs;
  SlabRef& slab = slabs[body.data()];
  if (!slab) {
    slab = SlabRef(Slab::create(body.size()));
    memcpy(slab->data(), body.data(), body.size());
  }
  out.addSlice(slab, 0, static_cast<uint32_t>(body.size()));
}

constexpr std::string_view kPluginsPrefix = "/chat/plugins/";

// The origin the browser reached the Edge at ("https://edge.example"), for
// a plugin frame's CSP (a sandboxed frame's 'self' matches nothing). Empty
// when the request names no host.
std::string requestOrigin(const http::RequestHeaders& req, std::string_view scheme) {
  std::string_view host = req.headers.get("host").value_or("");
  for (char c : host) {
    // A host[:port] or [v6]:port, nothing a CSP could read as more.
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
    if (!ok) return "";
  }
  if (host.empty()) return "";
  return std::string(scheme) + "://" + std::string(host);
}

}  // namespace

const filters::plugins::PluginsConfig* WebchatFilter::plugins() const {
  return config_.worker_settings.get(filters::plugins::kPluginsConfigKey);
}

void WebchatFilter::reply(int status, std::string_view content_type, std::string body,
                          const std::function<void(http::ResponseHeaders&)>& extra) {
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = status;
  h->headers.add("content-type", content_type);
  h->headers.add("content-length", std::to_string(body.size()));
  if (extra) extra(*h);
  Buffer data;
  data.add(body);
  callbacks_->encodeHeaders(std::move(h), body.empty());
  if (!body.empty()) callbacks_->encodeData(data, true);
}

// GET /api/v1/plugins/ui: the enabled actions and widgets, for the chat.
void WebchatFilter::listUiPlugins() {
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  if (const auto* cfg = plugins()) {
    for (const auto& u : cfg->ui) {
      std::string base = std::string(kPluginsPrefix) + u->id + "/" + u->version + "/";
      if (!first) out += ',';
      first = false;
      out += "{\"id\":";
      log::appendJsonString(out, u->id);
      out += ",\"type\":";
      log::appendJsonString(out, u->type);
      out += ",\"name\":";
      log::appendJsonString(out, u->name);
      out += ",\"label\":";
      log::appendJsonString(out, u->ui.label().empty() ? u->name : u->ui.label());
      out += ",\"icon\":";
      if (u->ui.icon().empty()) {
        out += "null";
      } else {
        log::appendJsonString(out, base + u->ui.icon());
      }
      out += ",\"slot\":";
      if (u->ui.slot().empty()) {
        out += "null";
      } else {
        log::appendJsonString(out, u->ui.slot());
      }
      out += ",\"on_user_messages\":";
      out += u->ui.on_user_messages() ? "true" : "false";
      out += ",\"frame\":";
      log::appendJsonString(out, base + "frame.html");
      out += ",\"valves\":";
      out += u->public_valves_json;
      out += '}';
    }
  }
  out += "]}";
  reply(200, "application/json", std::move(out), [](http::ResponseHeaders& h) {
    h.headers.add("cache-control", "no-store");
    securityHeaders(h);
  });
}

// GET /chat/plugins/<id>/<version>/<path>: a plugin's file, or its frame
// (frame.html, __boot.js: made here). Files are looked up by name among
// the plugin's own: nothing outside them can be named. Every answer is
// sandboxed by its CSP, so a file opened as a page never runs with the
// chat's origin.
void WebchatFilter::servePluginFile(const http::RequestHeaders& req, std::string_view rest) {
  auto notFound = [this] {
    callbacks_->sendLocalReply(
        http::ErrorReply{404, "no such plugin file", "invalid_request_error", "not_found"});
  };
  size_t a = rest.find('/');
  size_t b = a == std::string_view::npos ? a : rest.find('/', a + 1);
  if (b == std::string_view::npos) return notFound();
  std::string_view id = rest.substr(0, a), version = rest.substr(a + 1, b - a - 1);
  std::string_view path = rest.substr(b + 1);
  const filters::plugins::UiPlugin* plugin = nullptr;
  if (const auto* cfg = plugins()) {
    for (const auto& u : cfg->ui) {
      if (u->id == id) plugin = u.get();
    }
  }
  // An old version's URL is gone with it: the chat asks for the list again.
  if (!plugin || plugin->version != version) return notFound();
  std::string origin = requestOrigin(req, callbacks_->scheme());
  std::string base = std::string(kPluginsPrefix) + plugin->id + "/" + plugin->version + "/";
  std::string own = origin.empty() ? "'self'" : origin + base;

  std::string body;
  const char* type = nullptr;
  std::string etag;
  std::string csp = "default-src 'none'; sandbox";
  if (path == "frame.html") {
    // The frame: its plugin's styles, then its boot module.
    body =
        "<!doctype html>\n<html><head><meta charset=\"utf-8\">\n<meta name=\"color-scheme\" "
        "content=\"dark\">\n";
    for (const auto& s : plugin->ui.styles())
      body += "<link rel=\"stylesheet\" href=\"" + s + "\">\n";
    body += "<script type=\"module\" src=\"__boot.js\"></script>\n";
    body += "</head><body><div id=\"root\"></div></body></html>\n";
    type = "text/html; charset=utf-8";
    std::string sdk = origin.empty() ? "'self'" : origin + "/chat/assets/plugin-frame.js";
    csp = "default-src 'none'; script-src " + own + " " + sdk + "; style-src " + own +
          " 'unsafe-inline'; img-src " + own + " data: blob:; font-src " + own +
          "; connect-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors " +
          (origin.empty() ? "'self'" : origin) + "; sandbox allow-scripts";
  } else if (path == "__boot.js") {
    body = "import * as plugin from './" + plugin->ui.entry() +
           "';\nimport { start } from '/chat/assets/plugin-frame.js';\nstart(plugin);\n";
    type = "text/javascript; charset=utf-8";
  } else {
    auto it = plugin->files.find(std::string(path));
    if (it == plugin->files.end()) return notFound();
    body = it->second.content;
    type = it->second.content_type;
    etag = it->second.etag;
  }
  bool not_modified = !etag.empty() && req.headers.get("if-none-match").value_or("") == etag;
  auto headers = [&](http::ResponseHeaders& h) {
    if (!etag.empty()) h.headers.add("etag", etag);
    // The version is in the URL: a file there never changes.
    h.headers.add("cache-control", "public, max-age=31536000, immutable");
    h.headers.add("content-security-policy", csp);
    h.headers.add("x-content-type-options", "nosniff");
    h.headers.add("referrer-policy", "no-referrer");
    // Loaded by a sandboxed frame, whose origin is opaque: a module script
    // from here is a cross-origin (CORS) load. No credentials go with it.
    h.headers.add("access-control-allow-origin", "*");
  };
  if (not_modified) {
    auto h = std::make_unique<http::ResponseHeaders>();
    h->status = 304;
    headers(*h);
    callbacks_->encodeHeaders(std::move(h), true);
    return;
  }
  reply(200, type, std::move(body), headers);
}

void WebchatFilter::redirect(const char* location) {
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = 302;
  h->headers.add("location", location);
  h->headers.add("cache-control", "no-store");
  h->headers.add("content-length", "0");
  securityHeaders(*h);
  callbacks_->encodeHeaders(std::move(h), true);
}

http::FilterHeadersStatus WebchatFilter::decodeHeaders(http::RequestHeaders& req, bool end_stream) {
  std::string_view path = req.pathOnly();
  if (path == "/api/v1/plugins/ui") {
    listUiPlugins();
    return http::FilterHeadersStatus::StopIteration;
  }
  if (path.substr(0, kPluginsPrefix.size()) == kPluginsPrefix) {
    servePluginFile(req, path.substr(kPluginsPrefix.size()));
    return http::FilterHeadersStatus::StopIteration;
  }
  if (path == "/") {
    redirect("/chat");
    return http::FilterHeadersStatus::StopIteration;
  }
  if (path == "/chat" && config_.snapshot.auth().require_api_key() &&
      !callbacks_->streamInfo().identity) {
    redirect("/login");
    return http::FilterHeadersStatus::StopIteration;
  }
  const webchat::Asset* asset = webchat::find(path);
  if (!asset) {
    callbacks_->sendLocalReply(http::ErrorReply{404, "no such file: " + std::string(path),
                                                "invalid_request_error", "not_found"});
    return http::FilterHeadersStatus::StopIteration;
  }
  auto h = std::make_unique<http::ResponseHeaders>();
  h->headers.add("content-type", asset->content_type);
  h->headers.add("etag", asset->etag);
  // Pages always revalidate (they name the current assets); content-hashed
  // assets never change, so they may be kept for a year.
  h->headers.add("cache-control",
                 asset->immutable ? "public, max-age=31536000, immutable" : "no-cache");
  h->headers.add("vary", "accept-encoding");
  securityHeaders(*h);
  // The plugin frames' runtime, loaded as a module by a sandboxed frame.
  if (path.substr(0, 26) == "/chat/assets/plugin-frame.")
    h->headers.add("access-control-allow-origin", "*");
  std::optional<std::string_view> inm = req.headers.get("if-none-match");
  if (inm && *inm == asset->etag) {
    h->status = 304;
    callbacks_->encodeHeaders(std::move(h), true);
    return http::FilterHeadersStatus::StopIteration;
  }
  std::optional<std::string_view> ae = req.headers.get("accept-encoding");
  bool gzip = !asset->gzip_body.empty() && ae && http::listHasToken(*ae, "gzip");
  std::string_view body = gzip ? asset->gzip_body : asset->body;
  if (gzip) h->headers.add("content-encoding", "gzip");
  h->headers.add("content-length", std::to_string(body.size()));
  h->status = 200;
  Buffer data;
  addAsset(data, body);
  callbacks_->encodeHeaders(std::move(h), false);
  callbacks_->encodeData(data, true);
  return http::FilterHeadersStatus::StopIteration;
}

}  // namespace eldric::server
