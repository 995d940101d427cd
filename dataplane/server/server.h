#pragma once

// The process: a main loop (signals, reloads, health checks, drain) and N
// worker threads, each with its own loop, SO_REUSEPORT listeners and
// upstream pools. Workers share only the immutable config and atomics.

#include <atomic>
#include <list>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/config/loader.h"
#include "controlplane/core/store.h"
#include "dataplane/config/runtime_config.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/conn_manager.h"
#include "dataplane/router/router.h"
#include "dataplane/server/admin_api.h"
#include "dataplane/server/farm.h"
#include "dataplane/stats/stats.h"
#include "dataplane/upstream/health_checker.h"
#include "dataplane/upstream/http1_upstream.h"
#include "filters/auth/session.h"
#include "filters/ratelimit/limiter.h"
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
  http::FilterState worker_locals_;  // the router context, for its factory
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

class Server : public AdminBackend {
 public:
  explicit Server(config::CommandLine cli);
  // Runs until drained. Returns the process exit code.
  int run();

  ServerState& state() { return state_; }
  config::RuntimeConfigSharedPtr config() const;
  upstream::HealthChecker* healthChecker() { return health_.get(); }
  // Called by workers (any thread) when they finished draining.
  void workerDrained();
  int accessLogFd() const { return access_log_fd_; }
  AdminBackend& admin() { return *this; }

  // AdminBackend (standalone: the embedded store, on the main loop).
  void handle(const std::string& method, const std::string& path, std::string body,
              const std::string& caller, const std::string& credential, Dispatcher& worker,
              std::function<void(Reply)> done) override;

 private:
  // Binds each listener once per worker (SO_REUSEPORT) and records the
  // ports as bound.
  bool bindListeners(const config::RuntimeConfig& cfg, size_t workers, std::string* error);
  // Sets `snapshot`'s listeners to the addresses and ports bound at start:
  // listeners are not re-bound on reload, and a port the kernel picked is
  // the one every later config reports.
  void pinListeners(edge::v1::Snapshot* snapshot) const;
  // The filters and terminal handlers config::compile builds chains from.
  void registerFilters();
  void reload();
  void startDrain();
  // Builds the runtime config from the file's snapshot plus the store's
  // clients, with each route's filter chain from filters_.
  config::RuntimeConfigSharedPtr build(const edge::v1::Snapshot& base, std::string* error);
  bool prepareFarm(const std::string& data_dir, std::string* error);
  bool applyFarmSnapshot(const edge::v1::Snapshot& snapshot, std::string* error);
  void fillUsage(edge::v1::UsageReport* report);
  // Sessions logged out here that the running snapshot does not list yet.
  std::vector<filters::auth::LoggedOutSession> unlistedLogouts(size_t max);
  // Farm: sends them to the control plane with a report.
  void fillLogouts(edge::v1::DiscoveryRequest* req);
  // Standalone: keeps them in the embedded store, so a restart refuses them
  // too; with `list_now`, rebuilds the config so that it lists them.
  void persistLogouts(bool list_now);
  // Swaps every worker to `cfg`; `done` runs on the main loop once all have.
  void applyConfig(config::RuntimeConfigSharedPtr cfg, std::function<void()> done = nullptr);
  // Builds base_snapshot_ again (after an admin change or an upstream
  // address change) and applies it with the listeners as bound. False, with
  // `*error`, if it does not compile: the running config stays.
  bool rebuild(std::string* error, std::function<void()> done = nullptr);
  // Resolves the upstream host names again; rebuilds if an address changed.
  void refreshDns();
  Reply executeAdmin(const std::string& method, const std::string& path, const std::string& body,
                     const std::string& caller, bool* changed);
  // "address:port" of each bound listener, and this instance's node id
  // (--node-id, else hostname:first port).
  std::vector<std::string> listenAddresses(const config::RuntimeConfig& cfg) const;
  std::string nodeId(const config::RuntimeConfig& cfg) const;

  config::CommandLine cli_;
  Dispatcher main_;
  upstream::DnsCache dns_{main_};
  ServerState state_;
  upstream::HostRegistry hosts_;
  mutable std::mutex config_mutex_;
  config::RuntimeConfigSharedPtr config_;
  std::vector<std::unique_ptr<Worker>> workers_;
  // Per worker: (fd, listener name).
  std::vector<std::vector<std::pair<int, std::string>>> worker_fds_;
  struct BoundListener {
    std::string name;
    std::string address;
    uint32_t port;
  };
  std::vector<BoundListener> bound_listeners_;
  config::FilterRegistry filters_;
  // While build() compiles: the rate limits and counters the filters get.
  filters::ratelimit::RateLimitConfigSharedPtr compiling_limits_;
  filters::ratelimit::StateSharedPtr compiling_state_;
  std::unique_ptr<upstream::HealthChecker> health_;
  std::atomic<uint32_t> workers_drained_{0};
  TimerPtr drain_timer_;
  // Drops rate-limit entries (IPs, clients) idle for a whole window.
  TimerPtr sweep_timer_;
  TimerPtr overload_timer_;  // resident memory against limits.max_rss_mb
  void checkMemory();
  TimerPtr dns_timer_;
  bool dns_rebuild_pending_ = false;  // an address changed; its rebuild failed
  int access_log_fd_ = -1;
  std::string access_log_path_;
  std::unique_ptr<controlplane::Store> store_;
  edge::v1::Snapshot base_snapshot_;  // from the file and flags
  std::string plugins_dir_;           // standalone: scanned at start and SIGHUP
  std::string session_key_;           // signs web chat session cookies
  config::FarmOptions farm_options_;
  edge::v1::Snapshot local_snapshot_;  // as this process was started
  std::unique_ptr<FarmClient> farm_;
  std::string farm_snapshot_path_;
};

}  // namespace eldric::server
