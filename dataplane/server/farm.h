#pragma once

// Farm mode: this data plane's side of the discovery stream to
// eldric-controlplane. On the main loop: says hello, applies each pushed
// Snapshot (ACK) or refuses it (NACK, the last good one stays in force),
// reports its window counts every sync interval and takes the farm's counts
// back for farm-wide rate limits. Losing the control plane changes nothing
// for traffic: the last good snapshot serves on, and the stream reconnects
// with jittered exponential backoff.

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "common/config/loader.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/grpc/channel.h"
#include "eldric/edge/v1/discovery.pb.h"
#include "filters/ratelimit/limiter.h"

namespace eldric::server {

class Server;

// What /health and /metrics show about the control plane.
struct FarmView {
  bool connected = false;
  std::string target;
  std::string acked_version;
  std::string last_nack;
  uint64_t snapshots_applied = 0;
  uint64_t snapshots_rejected = 0;
  uint64_t reconnects = 0;
  uint32_t members = 1;
  std::string offline_policy;
  // A supervised farm (--peers): the primary's name, whether this member
  // is it, and its control plane child (pid 0: not running).
  bool supervised = false;
  std::string primary;
  bool is_primary = false;
  int64_t control_plane_pid = 0;
  uint64_t control_plane_starts = 0;
  // Another member's farm port where a control plane of this farm
  // answers (a second primary); empty when none.
  std::string other_primary;
};

class FarmClient : public grpc::StreamCallbacks {
 public:
  // `apply` compiles and applies a snapshot; returns false with an error
  // to NACK it.
  using ApplyFn = std::function<bool(const edge::v1::Snapshot&, std::string* error)>;
  // Fills a periodic report: the usage from the current counters, and
  // what else rides with it (this member's session logouts).
  using ReportFn = std::function<void(edge::v1::DiscoveryRequest*)>;

  FarmClient(Dispatcher& main, const config::FarmOptions& options, std::string node_id,
             std::vector<std::string> listen_addresses, ApplyFn apply, ReportFn report);
  ~FarmClient() override;
  // Before start(): who this member says it is in its hello (the bound
  // ports are known only once the listeners are bound).
  void setIdentity(std::string node_id, const std::vector<std::string>& listen_addresses);
  void start();
  // Admin REST carried to the control plane; `done` runs on the main loop.
  // `credential`: the admin's key, checked again by the control plane.
  void handleRest(const std::string& method, const std::string& path, const std::string& body,
                  const std::string& caller, const std::string& credential,
                  std::function<void(int status, std::string body, std::string code)> done);
  // Thread-safe copy for /health and /metrics.
  FarmView view() const;
  // The rate-limit state that farm usage is written into.
  void setRateLimitState(filters::ratelimit::StateSharedPtr state);
  // Before start(): where the last known member count is kept.
  void setMembersFile(std::string path);
  // Before start(): where the other members relay tunnel forwards to this
  // one (Node.relay_url), and who takes the farm's tunnel directory from
  // each FarmUsage (called on the main loop).
  using TunnelDirectoryFn =
      std::function<void(const google::protobuf::RepeatedPtrField<edge::v1::TunnelView>&)>;
  void setTunnelRelay(std::string relay_url, TunnelDirectoryFn on_directory);
  // On a supervised farm's primary, before start(): every `period_ms`
  // (first after `first_ms`), asks the other members' farm ports whether a
  // control plane holding this farm's key answers there too: a second
  // primary (members marked differently) splits the farm. Found: logged as
  // an error and shown in view().other_primary until it is gone.
  void watchForOtherPrimaries(std::vector<std::string> other_targets, uint64_t first_ms,
                              uint64_t period_ms);

  // grpc::StreamCallbacks
  void onMessage(std::string message) override;
  void onClose(int grpc_status, std::string message) override;

 private:
  grpc::ChannelOptions channelOptions(std::vector<std::string> targets) const;
  void checkOtherPrimaries();
  void connect();
  void scheduleReconnect();
  void sendReport();
  void applyFarmUsage(const edge::v1::FarmUsage& usage);
  void applyCeilings(const edge::v1::FarmUsage& usage);
  void setOffline(bool offline, const char* why);
  // Admin answers waiting for the snapshot that holds their change.
  void releaseWaiting(bool all);

  Dispatcher& main_;
  config::FarmOptions options_;
  edge::v1::Node node_;
  ApplyFn apply_;
  ReportFn report_;
  TunnelDirectoryFn on_directory_;
  std::unique_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::Stream> stream_;
  // watchForOtherPrimaries: one channel per other member's farm port.
  std::vector<std::pair<std::string, std::unique_ptr<grpc::Channel>>> primary_probes_;
  TimerPtr primary_timer_;
  uint64_t primary_period_ms_ = 0;
  std::string other_primary_;
  TimerPtr reconnect_timer_;
  TimerPtr report_timer_;
  TimerPtr offline_timer_;
  uint64_t backoff_ms_ = 100;
  std::string applied_version_;
  struct WaitingAnswer {
    uint64_t store_version;  // of the snapshot that holds the change
    uint64_t deadline_ms;
    std::function<void()> answer;
  };
  std::vector<WaitingAnswer> waiting_;
  TimerPtr waiting_timer_;
  filters::ratelimit::StateSharedPtr state_;
  mutable std::mutex view_mutex_;
  FarmView view_;
  // Entries with a remote count set, so that the next report can clear
  // those no longer listed.
  std::vector<std::string> remote_ips_, remote_keys_, remote_token_keys_;
  // Keys with an explicit ceiling, and the FarmUsage that set them (kept
  // to re-apply to a new rate-limit state after a window change).
  std::vector<std::string> ceiling_ips_, ceiling_keys_;
  edge::v1::FarmUsage last_usage_;
  uint64_t applied_usage_seq_ = 0;
  std::string applied_usage_instance_;
  // The farm's member count as last heard, kept across restarts (a member
  // that starts applies its offline share with it until it hears again).
  uint32_t usage_members_ = 1;
  std::string members_file_;
};

}  // namespace eldric::server
