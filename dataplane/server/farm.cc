#include "dataplane/server/farm.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "common/config/farm_plan.h"
#include "common/config/loader.h"
#include "common/file.h"
#include "common/log.h"
#include "dataplane/common/random.h"
#include "eldric/edge/v1/admin.pb.h"

namespace eldric::server {
namespace {

constexpr const char* kStreamPath = "/eldric.edge.v1.SnapshotDiscovery/StreamSnapshots";
constexpr const char* kRestPath = "/eldric.edge.v1.Admin/HandleRest";
constexpr const char* kFarmStatusPath = "/eldric.edge.v1.Admin/GetFarmStatus";
// How long an admin answer waits for this member to run the snapshot that
// holds its change (the stream may be reconnecting after a control-plane
// restart); then it is answered anyway.
constexpr uint64_t kWaitForSnapshotMs = 5000;

// N of a control-plane snapshot version "cp-N-<hash>" (the store's
// version, which every change raises); 0 for anything else.
uint64_t storeVersion(const std::string& version) {
  if (version.rfind("cp-", 0) != 0) return 0;
  uint64_t n = 0;
  for (size_t i = 3; i < version.size() && version[i] != '-'; ++i) {
    if (version[i] < '0' || version[i] > '9' || n > (UINT64_MAX - 9) / 10) return 0;
    n = n * 10 + static_cast<uint64_t>(version[i] - '0');
  }
  return n;
}
constexpr uint64_t kMaxBackoffMs = 30000;

int64_t nowUnixMs() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

// Sets `set(entry, value)` for every listed key and `set(entry, -1)` for
// those listed last time but not now.
template <typename Set>
void applyKeyed(filters::ratelimit::KeyedTable& table, uint64_t now,
                const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& values,
                std::vector<std::string>* previous, Set&& set) {
  std::vector<std::string> now_set;
  now_set.reserve(values.size());
  for (const auto& c : values) {
    set(*table.get(c.key(), now), static_cast<int64_t>(c.count()));
    now_set.push_back(c.key());
  }
  std::sort(now_set.begin(), now_set.end());
  for (const auto& k : *previous) {
    if (!std::binary_search(now_set.begin(), now_set.end(), k)) set(*table.get(k, now), -1);
  }
  *previous = std::move(now_set);
}

}  // namespace

FarmClient::FarmClient(Dispatcher& main, const config::FarmOptions& options, std::string node_id,
                       std::vector<std::string> listen_addresses, ApplyFn apply, ReportFn report)
    : main_(main), options_(options), apply_(std::move(apply)), report_(std::move(report)) {
  node_.set_id(std::move(node_id));
  node_.set_build_version("eldric-edge 0.1.0");
  for (auto& a : listen_addresses) node_.add_listen_addresses(a);
  channel_ = std::make_unique<grpc::Channel>(main_, channelOptions(options_.control_planes));
  view_.offline_policy = options_.offline_policy;
  // A supervised farm knows its members before any usage arrives: the
  // offline share is limit / members from the first request, not the
  // whole limit on every member.
  if (options_.planned_members > 1) usage_members_ = view_.members = options_.planned_members;
}

grpc::ChannelOptions FarmClient::channelOptions(std::vector<std::string> targets) const {
  grpc::ChannelOptions co;
  co.targets = std::move(targets);
  co.tls = !options_.ca_file.empty() || !options_.cert_file.empty() ||
           (options_.supervised && !options_.tls_cert_file.empty());
  // A supervised farm's primary serves the members' own certificate: its
  // key is what identifies it, unless a CA was given.
  if (options_.supervised && options_.ca_file.empty())
    co.pin_certificate_file = options_.tls_cert_file;
  if (!options_.member_token.empty())
    co.metadata.emplace_back(config::kFarmTokenMetadata, options_.member_token);
  co.ca_file = options_.ca_file;
  co.cert_file = options_.cert_file;
  co.key_file = options_.key_file;
  return co;
}

void FarmClient::watchForOtherPrimaries(std::vector<std::string> other_targets, uint64_t first_ms,
                                        uint64_t period_ms) {
  for (auto& t : other_targets) {
    auto co = channelOptions({t});
    co.keepalive_ms = 0;
    primary_probes_.emplace_back(t, std::make_unique<grpc::Channel>(main_, co));
  }
  if (primary_probes_.empty()) return;
  primary_period_ms_ = period_ms;
  primary_timer_ = main_.createTimer([this] { checkOtherPrimaries(); });
  primary_timer_->enable(first_ms);
}

void FarmClient::checkOtherPrimaries() {
  // An Admin call without an admin key: a control plane of this farm (the
  // TLS key pinned, the token accepted) refuses it for the missing key;
  // nothing there (connection refused, or a server without this farm's
  // key or token) is UNAVAILABLE or UNAUTHENTICATED about the token.
  auto remaining = std::make_shared<size_t>(primary_probes_.size());
  auto found = std::make_shared<std::string>();
  for (auto& [target, channel] : primary_probes_) {
    channel->unary(
        kFarmStatusPath, "", 3000,
        [this, target = target, remaining, found](int status, std::string message, std::string) {
          bool ours = status == grpc::kPermissionDenied ||
                      (status == grpc::kUnauthenticated &&
                       message.find("not a member") == std::string::npos) ||
                      status == 0;
          if (ours && found->empty()) *found = target;
          if (--*remaining > 0) return;
          if (*found != other_primary_) {
            if (found->empty()) {
              log::info("farm: no other primary answers any more");
            } else {
              log::error(
                  "farm: another member runs a control plane of this farm too: the farm is split "
                  "(mark the primary alike on every member: --primary on one and farm.primary "
                  "naming it on the others, or on none)",
                  {{"other", log::str(*found)}});
            }
            other_primary_ = *found;
            std::lock_guard<std::mutex> lock(view_mutex_);
            view_.other_primary = other_primary_;
          }
          primary_timer_->enable(primary_period_ms_);
        });
  }
}

void FarmClient::setIdentity(std::string node_id,
                             const std::vector<std::string>& listen_addresses) {
  node_.set_id(std::move(node_id));
  node_.clear_listen_addresses();
  for (const auto& a : listen_addresses) node_.add_listen_addresses(a);
}

void FarmClient::setTunnelRelay(std::string relay_url, TunnelDirectoryFn on_directory) {
  node_.set_relay_url(std::move(relay_url));
  on_directory_ = std::move(on_directory);
}

FarmClient::~FarmClient() {
  if (stream_) stream_->cancel();
}

void FarmClient::setRateLimitState(filters::ratelimit::StateSharedPtr state) {
  bool offline = !state_ || state_->farm_offline.load();
  state_ = std::move(state);
  if (!state_) return;
  state_->offline_local_share.store(options_.offline_policy == "local_share");
  // A new state (a window change): the farm's view carries over.
  state_->farm_members.store(usage_members_);
  state_->farm_offline.store(offline);
  ceiling_ips_.clear();
  ceiling_keys_.clear();
  remote_ips_.clear();
  remote_keys_.clear();
  remote_token_keys_.clear();
  if (last_usage_.seq() != 0 && !offline) applyFarmUsage(last_usage_);
}

void FarmClient::setMembersFile(std::string path) {
  members_file_ = std::move(path);
  std::string text;
  std::string error;
  if (access(members_file_.c_str(), R_OK) == 0 &&
      config::readFile(members_file_, "farm members file", &text, &error)) {
    unsigned long n = strtoul(text.c_str(), nullptr, 10);
    if (n >= 1 && n <= 1000000) usage_members_ = static_cast<uint32_t>(n);
  }
  if (state_) state_->farm_members.store(usage_members_);
}

void FarmClient::start() {
  reconnect_timer_ = main_.createTimer([this] { connect(); });
  report_timer_ = main_.createTimer([this] {
    sendReport();
    report_timer_->enable(options_.sync_interval_ms);
  });
  // The farm's counts go stale when the control plane is out of reach for
  // a few intervals: then the offline policy applies. Until the first farm
  // usage arrives there are none: it applies from the start.
  offline_timer_ = main_.createTimer(
      [this] { setOffline(true, "control plane unreachable: farm counts are stale"); });
  // Quietly: this is every start, not a fault.
  if (state_) state_->farm_offline.store(true);
  log::info("farm rate limits: the offline policy applies until the first farm usage",
            {{"policy", log::str(options_.offline_policy)}, {"members", log::num(usage_members_)}});
  connect();
  report_timer_->enable(options_.sync_interval_ms);
}

void FarmClient::connect() {
  stream_ = channel_->startStream(kStreamPath, *this);
  edge::v1::DiscoveryRequest hello;
  *hello.mutable_node() = node_;
  hello.set_version_info(applied_version_);
  stream_->send(hello.SerializeAsString());
  log::info("control plane: subscribing", {{"node", log::str(node_.id())}});
}

void FarmClient::scheduleReconnect() {
  // Jittered exponential backoff: many members that lost the same control
  // plane do not come back in lockstep.
  uint64_t jitter = backoff_ms_ / 2 + random::next() % (backoff_ms_ / 2 + 1);
  reconnect_timer_->enable(jitter);
  backoff_ms_ = std::min(kMaxBackoffMs, backoff_ms_ * 2);
  std::lock_guard<std::mutex> lock(view_mutex_);
  view_.reconnects++;
}

void FarmClient::onMessage(std::string message) {
  edge::v1::DiscoveryResponse resp;
  if (!resp.ParseFromString(message)) {
    log::warn("control plane: unparsable message");
    return;
  }
  backoff_ms_ = 100;
  {
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.connected = true;
    view_.target = channel_->connectedTarget();
  }
  offline_timer_->enable(options_.sync_interval_ms * 3);
  if (resp.has_farm_usage()) applyFarmUsage(resp.farm_usage());
  if (!resp.has_snapshot()) return;
  edge::v1::DiscoveryRequest ack;
  ack.set_response_nonce(resp.nonce());
  std::string error;
  if (apply_(resp.snapshot(), &error)) {
    applied_version_ = resp.version_info();
    // The farm's sync interval is the control plane's to set.
    const auto& si = resp.snapshot().farm().sync_interval();
    uint64_t ms =
        static_cast<uint64_t>(si.seconds()) * 1000 + static_cast<uint64_t>(si.nanos()) / 1000000;
    if (ms > 0 && ms != options_.sync_interval_ms) {
      options_.sync_interval_ms = ms;
      report_timer_->enable(ms);
    }
    ack.set_version_info(applied_version_);
    releaseWaiting(false);
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.acked_version = applied_version_;
    view_.snapshots_applied++;
  } else {
    // The change will not apply here: keep no one waiting for it.
    releaseWaiting(true);
    // NACK: keep the last good snapshot; say which version is in force.
    ack.set_version_info(applied_version_);
    ack.set_error_detail(error);
    log::error("control plane: snapshot rejected; the last good one stays in force",
               {{"version", log::str(resp.version_info())}, {"error", log::str(error)}});
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.last_nack = resp.version_info() + ": " + error;
    view_.snapshots_rejected++;
  }
  if (stream_) stream_->send(ack.SerializeAsString());
}

void FarmClient::onClose(int grpc_status, std::string message) {
  stream_.reset();
  {
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.connected = false;
  }
  log::warn("control plane: stream closed; serving on with the last good snapshot",
            {{"grpc_status", log::num(grpc_status)}, {"message", log::str(message)}});
  scheduleReconnect();
}

void FarmClient::sendReport() {
  if (!stream_) return;
  edge::v1::DiscoveryRequest req;
  auto* usage = req.mutable_usage();
  usage->set_at_unix_ms(nowUnixMs());
  report_(&req);
  usage->set_applied_usage_seq(applied_usage_seq_);
  usage->set_applied_usage_instance(applied_usage_instance_);
  usage->set_farm_members(usage_members_);
  stream_->send(req.SerializeAsString());
}

void FarmClient::applyFarmUsage(const edge::v1::FarmUsage& usage) {
  if (on_directory_) on_directory_(usage.tunnels());
  if (!state_) return;
  uint64_t now = filters::ratelimit::nowSeconds();
  state_->remote_global.store(usage.global_requests(), std::memory_order_relaxed);
  // Absolute counts: set what was reported, zero what no longer is.
  auto requests = [](filters::ratelimit::Entry& e, int64_t v) {
    e.remote_requests.store(v < 0 ? 0 : v);
  };
  auto tokens = [](filters::ratelimit::Entry& e, int64_t v) {
    e.remote_tokens.store(v < 0 ? 0 : v);
  };
  applyKeyed(state_->ips, now, usage.ip_requests(), &remote_ips_, requests);
  applyKeyed(state_->keys, now, usage.key_requests(), &remote_keys_, requests);
  applyKeyed(state_->keys, now, usage.key_tokens(), &remote_token_keys_, tokens);
  // seq 0: no ceilings in this message (the control plane has not heard
  // from this member yet); ceilings and member count stay as they are.
  if (usage.seq() != 0) applyCeilings(usage);
}

void FarmClient::applyCeilings(const edge::v1::FarmUsage& usage) {
  uint64_t now = filters::ratelimit::nowSeconds();
  // Ceilings before the member count: a key going back to its default is
  // read with the count the control plane's bound already covers.
  auto ceiling = [](filters::ratelimit::Entry& e, int64_t v) {
    e.ceiling.store(v, std::memory_order_release);
  };
  state_->global_ceiling.store(usage.has_global_request_ceiling()
                                   ? static_cast<int64_t>(usage.global_request_ceiling())
                                   : -1,
                               std::memory_order_release);
  applyKeyed(state_->ips, now, usage.ip_request_ceilings(), &ceiling_ips_, ceiling);
  applyKeyed(state_->keys, now, usage.key_request_ceilings(), &ceiling_keys_, ceiling);
  uint32_t members = std::max<uint32_t>(1, usage.members());
  state_->farm_members.store(members, std::memory_order_release);
  if (members != usage_members_ && !members_file_.empty()) {
    std::string why;
    if (!writeFileAtomically(members_file_, std::to_string(members) + "\n", 0644, &why))
      log::warn("cannot write the farm members file", {{"error", log::str(why)}});
  }
  usage_members_ = members;
  applied_usage_seq_ = usage.seq();
  applied_usage_instance_ = usage.instance();
  if (&usage != &last_usage_) last_usage_ = usage;
  {
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.members = members;
  }
  setOffline(false, "");
}

void FarmClient::setOffline(bool offline, const char* why) {
  if (!state_) return;
  bool was = state_->farm_offline.exchange(offline);
  if (was == offline) return;
  if (offline) {
    log::warn("farm rate limits: applying the offline policy",
              {{"why", log::str(why)},
               {"policy", log::str(options_.offline_policy)},
               {"members", log::num(usage_members_)}});
    // Stale remote counts would block forever or admit too much; the
    // policy takes over from them (and from the ceilings, see
    // State::effectiveLimit).
    state_->remote_global.store(0);
    state_->ips.forEach(
        [](const std::string&, filters::ratelimit::Entry& e) { e.remote_requests.store(0); });
    state_->keys.forEach([](const std::string&, filters::ratelimit::Entry& e) {
      e.remote_requests.store(0);
      e.remote_tokens.store(0);
    });
  } else {
    log::info("farm rate limits: the control plane's ceilings apply",
              {{"members", log::num(usage_members_)}});
  }
}

void FarmClient::handleRest(const std::string& method, const std::string& path,
                            const std::string& body, const std::string& caller,
                            const std::string& credential,
                            std::function<void(int, std::string, std::string)> done) {
  edge::v1::RestRequest req;
  req.set_method(method);
  req.set_path(path);
  req.set_body(body);
  req.set_caller_client(caller);
  // The control plane checks the admin's own key again: a member's
  // certificate may subscribe, not administer.
  grpc::Channel::Metadata metadata{{"authorization", "Bearer " + credential}};
  channel_->unary(
      kRestPath, req.SerializeAsString(), 10000,
      [this, done](int status, std::string message, std::string response) {
        if (status == grpc::kUnauthenticated || status == grpc::kPermissionDenied) {
          done(status == grpc::kUnauthenticated ? 401 : 403,
               "the control plane refused this key for admin calls: " + message,
               status == grpc::kUnauthenticated ? "invalid_api_key" : "insufficient_scope");
          return;
        }
        if (status != 0) {
          done(503, "the control plane is unreachable (" + message + "); admin changes need it",
               "control_plane_unavailable");
          return;
        }
        edge::v1::RestReply reply;
        if (!reply.ParseFromString(response)) {
          done(502, "bad reply from the control plane", "bad_control_plane_reply");
          return;
        }
        auto answer = [done, reply] {
          done(static_cast<int>(reply.status()), reply.body(), reply.error_code());
        };
        uint64_t needed = storeVersion(reply.snapshot_version());
        if (needed == 0 || storeVersion(applied_version_) >= needed) {
          answer();
          return;
        }
        // Read your own writes: a key registered through this
        // member works on it once the answer arrives.
        waiting_.push_back({needed, main_.nowMs() + kWaitForSnapshotMs, std::move(answer)});
        if (!waiting_timer_) waiting_timer_ = main_.createTimer([this] { releaseWaiting(false); });
        waiting_timer_->enable(kWaitForSnapshotMs);
      },
      std::move(metadata));
}

void FarmClient::releaseWaiting(bool all) {
  if (waiting_.empty()) return;
  uint64_t applied = storeVersion(applied_version_);
  uint64_t now = main_.nowMs();
  std::vector<std::function<void()>> ready;
  uint64_t next_deadline = 0;
  for (auto it = waiting_.begin(); it != waiting_.end();) {
    if (all || it->store_version <= applied || it->deadline_ms <= now) {
      if (!all && it->store_version > applied) {
        log::warn(
            "an admin change is answered before this member runs it (no snapshot holding it "
            "arrived in time)",
            {{"needed_version", log::num(static_cast<long long>(it->store_version))},
             {"applied", log::str(applied_version_)}});
      }
      ready.push_back(std::move(it->answer));
      it = waiting_.erase(it);
    } else {
      if (next_deadline == 0 || it->deadline_ms < next_deadline) next_deadline = it->deadline_ms;
      ++it;
    }
  }
  if (next_deadline && waiting_timer_) waiting_timer_->enable(next_deadline - now);
  for (auto& answer : ready) answer();
}

FarmView FarmClient::view() const {
  std::lock_guard<std::mutex> lock(view_mutex_);
  return view_;
}

}  // namespace eldric::server
