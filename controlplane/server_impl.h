#pragma once

// ControlPlane::Impl, declared for the files that implement it (private
// to this directory; see server.cc for the threads and the lock order):
//   server.cc           start, reload, shutdown; the farm-usage timer
//   snapshot_source.cc  building, versioning and publishing the snapshot
//   farm_members.cc     the stream callbacks, usage reports, the farm-usage push
//   admin_service.cc    the Admin service's handlers

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "common/config/loader.h"
#include "controlplane/core/acme/manager.h"
#include "controlplane/core/acme/ocsp.h"
#include "controlplane/core/admin_rest.h"
#include "controlplane/core/farm_limits.h"
#include "controlplane/core/snapshot_builder.h"
#include "controlplane/core/store.h"
#include "controlplane/discovery_stream.h"
#include "controlplane/farm_members.h"
#include "controlplane/farm_usage.h"
#include "controlplane/server.h"
#include "eldric/edge/v1/admin.grpc.pb.h"
#include "eldric/edge/v1/discovery.grpc.pb.h"

namespace eldric::controlplane {

// The sync interval when neither --sync-interval-ms nor the file sets one.
constexpr int64_t kDefaultSyncIntervalMs = 5000;
// A report older than this many sync intervals no longer counts.
constexpr int64_t kFreshIntervals = 3;
// The most tunnels a member's report may list (UsageReport.tunnels).
constexpr int kMaxTunnelsPerMember = 4096;
// ... and the models each lists in the directory (the first ones).
constexpr int kMaxModelsPerTunnel = 16;

class ControlPlane::Impl : public DiscoveryStreamHandler {
 public:
  explicit Impl(Options options) : options_(std::move(options)) {}
  ~Impl() { shutdown(); }

  bool start(std::string* error);
  bool reload(std::string* error);
  void shutdown();
  int port() const { return port_; }
  std::string currentVersion() {
    std::lock_guard<std::mutex> l(streams_mu_);
    return current_ ? current_->version : "";
  }

  // DiscoveryStream callbacks.
  grpc::Status admit(const grpc::CallbackServerContext& ctx) override { return checkMember(ctx); }
  void onHello(DiscoveryStream* s, const edge::v1::DiscoveryRequest& req) override;
  void onRequest(DiscoveryStream* s, const edge::v1::DiscoveryRequest& req) override;
  void onDone(DiscoveryStream* s) override;
  // Sessions a member logged out: kept in the store and listed in the
  // snapshot, so that every member refuses them.
  void onLogouts(DiscoveryStream* s, const edge::v1::DiscoveryRequest& req);

  // Admin. Every Admin RPC first passes authorizeAdmin: the call's
  // `authorization: Bearer <key>` metadata must name an admin key this
  // control plane serves. A data plane's certificate alone (it may
  // subscribe) is not enough. Fills `caller` with the key's client name.
  grpc::Status authorizeAdmin(const grpc::ServerContext& ctx, std::string* caller);
  // With a member token (a farm's primary started this daemon), every call
  // must carry it as "eldric-farm-token" metadata; compared in constant
  // time. OK when there is none.
  grpc::Status checkMember(const grpc::ServerContextBase& ctx) const;
  grpc::Status handleRest(const edge::v1::RestRequest& req, const std::string& caller,
                          edge::v1::RestReply* reply);
  grpc::Status registerClient(const edge::v1::RegisterClientRequest& req,
                              edge::v1::ClientWithKey* out);
  grpc::Status listClients(edge::v1::ClientList* out);
  grpc::Status getClient(const std::string& id, edge::v1::Client* out);
  grpc::Status revokeClient(const std::string& id, edge::v1::Client* out);
  grpc::Status rotateKey(const edge::v1::RotateKeyRequest& req, edge::v1::ClientWithKey* out);
  grpc::Status listPlugins(edge::v1::PluginList* out);
  grpc::Status setPluginEnabled(const edge::v1::SetPluginEnabledRequest& req,
                                edge::v1::Plugin* out);
  grpc::Status getValves(const std::string& id, edge::v1::Valves* out);
  grpc::Status setValves(const edge::v1::SetValvesRequest& req, edge::v1::Valves* out);
  grpc::Status farmStatus(edge::v1::FarmStatus* out);

  std::string newNonce() { return nonce_prefix_ + std::to_string(++nonce_counter_); }

 private:
  bool loadConfig(config::LoadResult* out, int64_t* file_interval, std::string* error);
  // Builds the snapshot from config + store + session key; when its
  // version differs from the one served, publishes it to every stream.
  // Requires store_mu_.
  bool rebuildLocked(const char* reason, std::string* error);
  void rebuildAfterChangeLocked(const char* reason);
  void publish(OutboundPtr msg, FarmLimits limits);
  AdminContext adminContextLocked();
  // tls.mode "acme": (re)starts the orderer when the settings differ from
  // the running one's, stops it when ACME is off. Not under store_mu_ (the
  // old manager's thread may be waiting for it).
  bool applyAcme(const config::AcmeSettings& settings, std::string* error);
  // ACME's served hook: every connected member acked a snapshot that
  // holds these challenges.
  bool challengesServed(const std::vector<std::pair<std::string, std::string>>& challenges,
                        std::string* why);
  std::string usageJson(const std::string& client_id);
  void timerLoop();
  // A usage report arrived: have it reach the other members soon.
  void noteReport();
  // Keeps a member's report (and what it says about its ceilings).
  // Requires streams_mu_.
  void recordReportLocked(const std::string& id, NodeState& n, const edge::v1::UsageReport& usage);
  void pushFarmUsage();
  // Under streams_mu_: the other members' tunnels (fresh reports only),
  // with their member and relay URL, into the FarmUsage for member `to`.
  // Under streams_mu_: tunnel ids two fresh members report (left out).
  std::unordered_set<std::string> contestedTunnelsLocked(
      const std::function<bool(const NodeState&)>& fresh);
  void addTunnelDirectory(const std::string& to, const std::function<bool(const NodeState&)>& fresh,
                          const std::unordered_set<std::string>& contested,
                          edge::v1::FarmUsage* fu);

  Options options_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Service> discovery_service_;
  std::unique_ptr<grpc::Service> admin_service_;
  int port_ = 0;
  std::string nonce_prefix_;
  std::atomic<uint64_t> nonce_counter_{0};
  std::atomic<int64_t> sync_interval_ms_{kDefaultSyncIntervalMs};

  // Guarded by store_mu_.
  std::mutex store_mu_;
  std::unique_ptr<Store> store_;
  config::LoadResult base_;
  std::string session_key_;
  std::string built_version_;
  // Every key of the served snapshot, by raw SHA-256, for authorizeAdmin.
  struct KnownKey {
    std::string client_name;
    bool admin = false;
    int64_t expires_at = 0;  // unix seconds; 0: never
  };
  std::unordered_map<std::string, KnownKey> known_keys_;
  // The ACME orderer (tls.mode "acme"), and the snapshot versions built
  // while it had challenges out, with their tokens (the last few).
  std::unique_ptr<acme::Manager> acme_;
  // OCSP answers for the certificates the snapshot serves.
  std::unique_ptr<acme::OcspStapler> stapler_;
  config::AcmeSettings acme_settings_;
  std::vector<std::pair<std::string, std::vector<std::string>>> challenge_versions_;
  // TLS session ticket keys, rotated by the timer (next_ticket_rotation_s_:
  // when, Unix seconds; 0: never).
  TicketKeyRing tickets_;
  std::atomic<int64_t> next_ticket_rotation_s_{0};
  // The first key expiry in the served snapshot; 0: none. Written under
  // store_mu_, read by the timer without it.
  std::atomic<int64_t> next_expiry_s_{0};

  // Guarded by streams_mu_.
  std::mutex streams_mu_;
  OutboundPtr current_;
  FarmLimits current_limits_;
  std::map<DiscoveryStream*, std::shared_ptr<DiscoveryStream>> streams_;
  std::map<std::string, NodeState> nodes_;
  // Farm-wide request limits shared out as per-member ceilings.
  FarmCeilings ceilings_;
  // FarmUsage.seq, counted per process (see instance_).
  uint64_t usage_seq_ = 0;
  // This process, in every FarmUsage (random per start).
  std::string instance_;

  std::mutex timer_mu_;
  std::condition_variable timer_cv_;
  bool stopping_ = false;
  bool report_pending_ = false;  // a usage report arrived since the last push
  // Session logouts were stored since the last snapshot build.
  std::atomic<bool> logouts_pending_{false};
  std::thread timer_;
  bool started_ = false;
  bool stopped_ = false;
};

}  // namespace eldric::controlplane
