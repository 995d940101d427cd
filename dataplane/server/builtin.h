#pragma once

// Built-in handlers answered inside the data plane: /health, /metrics
// (Prometheus text) and /api/v1/upstreams.

#include "dataplane/http/filter.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::server {

struct ServerState;

class BuiltinFilter : public http::StreamDecoderFilter {
 public:
  BuiltinFilter(ServerState& state, edge::v1::BuiltinHandler handler) : state_(state), handler_(handler) {}
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
  edge::v1::BuiltinHandler handler_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

}  // namespace eldric::server
