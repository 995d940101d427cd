#pragma once

// The process: a main loop (signals, reloads, health checks, drain, the
// farm client) and N workers (worker.h). It compiles each snapshot into a
// RuntimeConfig and hands it to every worker.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "common/config/farm_plan.h"
#include "common/config/loader.h"
#include "controlplane/core/acme/manager.h"
#include "controlplane/core/acme/ocsp.h"
#include "controlplane/core/snapshot_builder.h"
#include "controlplane/core/store.h"
#include "dataplane/config/runtime_config.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/server/admin_api.h"
#include "dataplane/server/control_plane_child.h"
#include "dataplane/server/farm.h"
#include "dataplane/server/worker.h"
#include "dataplane/upstream/health_checker.h"
#include "filters/auth/auth_filter.h"
#include "filters/auth/session.h"
#include "filters/plugins/runtime.h"
#include "filters/ratelimit/limiter.h"
#include "filters/ratelimit/ratelimit_filter.h"
#include "filters/tunnel/tunnel.h"

namespace eldric::server {

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
  // The seed's farm (--peers, no --control-plane): plans who the primary
  // is, derives the members' token, points the farm client at the
  // primary's farm port and, on the primary, starts the control plane.
  bool prepareSupervisedFarm(const std::string& data_dir, std::string* error);
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
  // Farm mode: relays of tunnel forwards to the member that holds the
  // tunnel, and the tunnel directory from the control plane.
  void startTunnelRelay(const config::RuntimeConfig& cfg);
  std::string nodeId(const config::RuntimeConfig& cfg) const;
  // Standalone, tls.mode "acme": the in-process orderer (in a farm the
  // control plane orders). Started once the listeners are bound.
  bool startAcme(const config::AcmeSettings& settings, std::string* error);
  void stopAcme();
  // GET /api/v1/certificates and POST /api/v1/certificates/renew.
  Reply certificatesReply(const std::string& method, const std::string& path);

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
  // While build() compiles: the keys, rate limits and counters the
  // filters get (one copy of each per config, shared by its filters).
  filters::auth::AuthConfigSharedPtr compiling_auth_;
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
  // Standalone: the session ticket keys and the timer that rotates them.
  controlplane::TicketKeyRing tickets_;
  TimerPtr ticket_timer_;
  bool dns_rebuild_pending_ = false;  // an address changed; its rebuild failed
  int access_log_fd_ = -1;
  std::string access_log_path_;
  // Writes plugins' code, probes the sandbox, keeps their status.
  filters::plugins::Runtime plugin_runtime_;
  // The NAT tunnels (every worker thread's streams meet here).
  std::shared_ptr<filters::tunnel::TunnelService> tunnel_ =
      std::make_shared<filters::tunnel::TunnelService>();
  TimerPtr tunnel_timer_;
  static constexpr uint64_t kTunnelReapMs = 5000;
  void appendTunnelMetrics(std::string& out);
  std::unique_ptr<controlplane::Store> store_;
  edge::v1::Snapshot base_snapshot_;  // from the file and flags
  std::string plugins_dir_;           // standalone: scanned at start and SIGHUP
  std::string session_key_;           // signs web chat session cookies
  config::FarmOptions farm_options_;
  edge::v1::Snapshot local_snapshot_;  // as this process was started
  std::unique_ptr<FarmClient> farm_;
  config::FarmPlan farm_plan_;                        // a supervised farm's
  std::unique_ptr<ControlPlaneChild> control_plane_;  // on its primary
  std::string farm_snapshot_path_;
  std::unique_ptr<controlplane::acme::Manager> acme_;
  // Standalone: fetches OCSP answers for the certificates served.
  std::unique_ptr<controlplane::acme::OcspStapler> stapler_;
  config::AcmeSettings acme_settings_;  // acme_'s (disabled when none)
  // Its self-check's transport (runs on the main loop; see stopAcme).
  std::shared_ptr<controlplane::acme::Transport> acme_checker_;
};

}  // namespace eldric::server
