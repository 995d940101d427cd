#pragma once

// Serves the embedded web chat: /chat, /login and /chat/assets/*, from
// bytes compiled into the binary. Strict CSP (no inline script), ETags and
// 304s, gzip when the client takes it. With API keys required, /chat
// without a session goes to /login. Also the chat's JavaScript plugins
// (actions and widgets, issue 21): GET /api/v1/plugins/ui lists them, and
// /chat/plugins/<id>/<version>/ serves their files and the sandboxed frame
// each runs in (README "Actions and widgets").

#include <functional>
#include <string>
#include <string_view>

#include "dataplane/config/runtime_config.h"
#include "dataplane/http/filter.h"

namespace eldric::filters::plugins {
struct PluginsConfig;
}

namespace eldric::server {

class WebchatFilter : public http::StreamDecoderFilter {
 public:
  explicit WebchatFilter(const config::RuntimeConfig& config) : config_(config) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool) override {
    data.clear();
    return http::FilterDataStatus::StopIterationNoBuffer;
  }

 private:
  void redirect(const char* location);
  const filters::plugins::PluginsConfig* plugins() const;
  void listUiPlugins();
  void servePluginFile(const http::RequestHeaders& req, std::string_view rest);
  void reply(int status, std::string_view content_type, std::string body,
             const std::function<void(http::ResponseHeaders&)>& extra);
  const config::RuntimeConfig& config_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

}  // namespace eldric::server
