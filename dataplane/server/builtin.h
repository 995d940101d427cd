#pragma once

// Built-in handlers answered inside the data plane: /health, /metrics
// (Prometheus text) and /api/v1/upstreams.

#include "dataplane/config/runtime_config.h"
#include "dataplane/http/filter.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::server {

struct ServerState;

class BuiltinFilter : public http::StreamDecoderFilter {
 public:
  // `config` is the one the filter's stream holds.
  BuiltinFilter(ServerState& state, const config::RuntimeConfig& config,
                edge::v1::BuiltinHandler handler)
      : state_(state), config_(config), handler_(handler) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;

 private:
  void respond();
  void reply(int status, const char* content_type, std::string body);
  std::string healthJson(int* status);
  std::string upstreamsJson();
  std::string metricsText();

  ServerState& state_;
  const config::RuntimeConfig& config_;
  edge::v1::BuiltinHandler handler_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

}  // namespace eldric::server
