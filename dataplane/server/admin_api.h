#pragma once

// The admin REST API (/api/v1/clients..., /api/v1/plugins..., /api/v1/farm)
// and /api/v1/usage. Client
// changes run on the main loop, where the store lives: the store commits
// (fsync), a new snapshot is built and every worker has switched to it
// before the answer goes out, so a revoked key is refused on the very
// next request, on any worker.

#include <memory>
#include <string>

#include "dataplane/config/runtime_config.h"
#include "dataplane/http/filter.h"
#include "filters/ratelimit/limiter.h"

namespace eldric::server {

class Server;

// What the API needs from the process; standalone mode implements it over
// the embedded store (farm mode will forward to the control plane).
class AdminBackend {
 public:
  virtual ~AdminBackend() = default;
  struct Reply {
    int status = 200;
    std::string body;  // JSON
    std::string error_code;
  };
  // Runs `request` (method, path, body) off the worker, then calls `done`
  // back on `worker`'s thread. `caller` is the authenticated client's name,
  // for the audit log line of a change; `credential` the key it presented
  // (a farm member passes it on: the control plane checks it again).
  virtual void handle(const std::string& method, const std::string& path, std::string body,
                      const std::string& caller, const std::string& credential, Dispatcher& worker,
                      std::function<void(Reply)> done) = 0;
};

// The admin REST API (/api/v1/clients, /keys, /plugins, /farm, ...): the
// request goes to the AdminBackend off the worker thread.
class AdminApiFilter : public http::StreamDecoderFilter {
 public:
  explicit AdminApiFilter(AdminBackend& backend)
      : backend_(backend), alive_(std::make_shared<bool>(true)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override { *alive_ = false; }

 private:
  void dispatch(std::string body);
  AdminBackend& backend_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
  std::shared_ptr<bool> alive_;
};

// GET /api/v1/usage: the caller's own counters (or every client's, for an
// admin). Not to be confused with filters::usage::UsageFilter, which counts.
class UsageApiFilter : public http::StreamDecoderFilter {
 public:
  UsageApiFilter(const config::RuntimeConfig& config, filters::ratelimit::StateSharedPtr state)
      : config_(config), state_(std::move(state)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { callbacks_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool) override {
    data.clear();
    return http::FilterDataStatus::StopIterationNoBuffer;
  }

 private:
  const config::RuntimeConfig& config_;
  filters::ratelimit::StateSharedPtr state_;
  http::DecoderFilterCallbacks* callbacks_ = nullptr;
};

}  // namespace eldric::server
