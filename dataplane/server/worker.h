#pragma once

// A worker thread: its own libuv loop, SO_REUSEPORT listeners, connection
// managers and upstream pools. Workers share only the immutable config and
// atomics (ServerState, the hosts).

#include <atomic>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/config/runtime_config.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/conn_manager.h"
#include "dataplane/router/router.h"
#include "dataplane/server/farm.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/http1_upstream.h"
#include "filters/plugins/runtime.h"
#include "filters/ratelimit/ratelimit_filter.h"

namespace eldric::server {

class Server;

// State that built-in handlers report.
struct ServerState {
  uint64_t start_ms = 0;  // wall clock
  std::string mode = "single";
  std::atomic<uint64_t> reloads_ok{0};
  std::atomic<uint64_t> reloads_failed{0};
  std::atomic<bool> draining{false};
  // Client connections open across all workers (limits.max_connections).
  std::atomic<uint32_t> connections{0};
  // The overload manager: requests in progress (every worker), resident
  // memory over limits.max_rss_mb (set by the main loop's check), and what
  // it refused.
  std::atomic<int64_t> active_requests{0};
  std::atomic<bool> memory_pressure{false};
  std::atomic<uint64_t> rss_bytes{0};
  std::atomic<uint64_t> overload_refused{0};
  std::atomic<uint64_t> overload_shed_idle{0};
  // Farm mode only: the control plane as this member sees it.
  std::function<FarmView()> farm_view;
  // The plugins' state for /health ({"id": "running", ...}) and their
  // series for /metrics. Thread-safe.
  std::function<std::string()> plugins_health;
  std::function<void(std::string& out)> plugins_metrics;
  // Read with std::atomic_load: a reload that changes the window swaps it.
  filters::ratelimit::StateSharedPtr rate_limit_state;
  filters::ratelimit::StateSharedPtr rateLimitState() const {
    return std::atomic_load(&rate_limit_state);
  }
};

class Worker : public http::ConnectionManagerContext {
 public:
  Worker(Server& server, uint32_t index, config::RuntimeConfigSharedPtr config);
  ~Worker() override;
  // Adopts listening sockets (already bound by the main thread).
  void start(const std::vector<std::pair<int, std::string>>& listen_fds);
  void join();
  // Thread-safe. `applied` runs on this worker's thread once it switched.
  void setConfig(config::RuntimeConfigSharedPtr config, std::function<void()> applied = nullptr);
  void drain();
  void stop();
  // Thread-safe: closes this worker's idle keep-alive connections.
  void shedIdle();

  // http::ConnectionManagerContext
  Dispatcher& dispatcher() override { return dispatcher_; }
  const http::RouteConfig& currentConfig() override { return *config_; }
  http::RouteConfigSharedPtr holdCurrentConfig() override { return config_; }
  stats::WorkerStats& stats() override { return *stats_; }
  const http::FilterState& workerLocals() override { return worker_locals_; }
  void logAccess(const http::RequestHeaders* request, const http::StreamInfo& info,
                 std::string_view route_name) override;
  bool draining() override { return draining_; }
  const char* overloaded() override;
  void countActiveRequest(int delta) override;

 private:
  struct ListenerHandle;
  static void onConnection(uv_stream_t* server, int status);
  void accept(ListenerHandle* l);
  void flushAccessLog();
  void maybeFinishDrain();
  // Starts and stops this worker's plugin processes as `config` says.
  void applyPlugins(const config::RuntimeConfigSharedPtr& config);

  Server& server_;
  uint32_t index_;
  Dispatcher dispatcher_;
  std::thread thread_;
  config::RuntimeConfigSharedPtr config_;
  std::unique_ptr<stats::WorkerStats> stats_;
  std::vector<std::unique_ptr<ListenerHandle>> listeners_;
  std::list<http::ConnectionManager*> connections_;
  std::unique_ptr<upstream::Http1UpstreamFactory> http1_upstreams_;
  router::RouterContext router_context_;
  std::unique_ptr<filters::plugins::PluginHost> plugin_host_;
  http::FilterState worker_locals_;  // the router context and plugin host, for their factories
  bool draining_ = false;
  // Set when this worker told the server it drained: it tells it once, though
  // maybeFinishDrain() runs again on every close (and from drain() itself,
  // after closing idle connections reported it already).
  bool drained_ = false;
  std::string access_log_buffer_;
  TimerPtr access_log_timer_;
  int access_log_fd_ = -1;
  bool owns_access_log_fd_ = false;
};

}  // namespace eldric::server
