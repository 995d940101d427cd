#include "dataplane/server/farm.h"

#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <unordered_map>

#include "dataplane/common/log.h"
#include "dataplane/common/random.h"
#include "eldric/edge/v1/admin.pb.h"

namespace eldric::server {
namespace {

constexpr const char* kStreamPath = "/eldric.edge.v1.SnapshotDiscovery/StreamSnapshots";
constexpr const char* kRestPath = "/eldric.edge.v1.Admin/HandleRest";
constexpr uint64_t kMaxBackoffMs = 30000;

int64_t nowUnixMs() {
  timeval tv;
  gettimeofday(&tv, nullptr);
  return static_cast<int64_t>(tv.tv_sec) * 1000 + tv.tv_usec / 1000;
}

}  // namespace

FarmClient::FarmClient(Dispatcher& main, const config::FarmOptions& options, std::string node_id,
                       std::vector<std::string> listen_addresses, ApplyFn apply, ReportFn report)
    : main_(main), options_(options), apply_(std::move(apply)), report_(std::move(report)) {
  node_.set_id(std::move(node_id));
  node_.set_build_version("eldric-edge 0.1.0");
  for (auto& a : listen_addresses) node_.add_listen_addresses(a);
  grpc::ChannelOptions co;
  co.targets = options_.control_planes;
  co.tls = !options_.ca_file.empty() || !options_.cert_file.empty();
  co.ca_file = options_.ca_file;
  co.cert_file = options_.cert_file;
  co.key_file = options_.key_file;
  channel_ = std::make_unique<grpc::Channel>(main_, co);
  view_.offline_policy = options_.offline_policy;
}

void FarmClient::setIdentity(std::string node_id, const std::vector<std::string>& listen_addresses) {
  node_.set_id(std::move(node_id));
  node_.clear_listen_addresses();
  for (const auto& a : listen_addresses) node_.add_listen_addresses(a);
}

FarmClient::~FarmClient() {
  if (stream_) stream_->cancel();
}

void FarmClient::setRateLimitState(filters::ratelimit::StateSharedPtr state) {
  state_ = std::move(state);
  if (state_) state_->offline_local_share.store(options_.offline_policy == "local_share");
}

void FarmClient::start() {
  reconnect_timer_ = main_.createTimer([this] { connect(); });
  report_timer_ = main_.createTimer([this] {
    sendReport();
    report_timer_->enable(options_.sync_interval_ms);
  });
  // The farm's counts go stale when the control plane is out of reach for
  // a few intervals: then the offline policy applies.
  offline_timer_ = main_.createTimer([this] { setOffline(true); });
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
  setOffline(false);
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
    uint64_t ms = static_cast<uint64_t>(si.seconds()) * 1000 + static_cast<uint64_t>(si.nanos()) / 1000000;
    if (ms > 0 && ms != options_.sync_interval_ms) {
      options_.sync_interval_ms = ms;
      report_timer_->enable(ms);
    }
    ack.set_version_info(applied_version_);
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.acked_version = applied_version_;
    view_.snapshots_applied++;
  } else {
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
  report_(usage);
  usage->set_applied_usage_seq(applied_usage_seq_);
  usage->set_farm_members(usage_members_);
  stream_->send(req.SerializeAsString());
}

void FarmClient::applyFarmUsage(const edge::v1::FarmUsage& usage) {
  if (!state_) return;
  uint64_t now = filters::ratelimit::nowSeconds();
  state_->remote_global.store(usage.global_requests(), std::memory_order_relaxed);
  state_->farm_members.store(std::max<uint32_t>(1, usage.members()), std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> lock(view_mutex_);
    view_.members = std::max<uint32_t>(1, usage.members());
  }
  // Absolute counts: set what was reported, zero what no longer is.
  auto apply = [&](filters::ratelimit::KeyedTable& table,
                   const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& counts,
                   std::vector<std::string>* previous, auto&& set) {
    std::vector<std::string> now_set;
    now_set.reserve(counts.size());
    for (const auto& c : counts) {
      set(*table.get(c.key(), now), static_cast<int64_t>(c.count()));
      now_set.push_back(c.key());
    }
    std::sort(now_set.begin(), now_set.end());
    for (const auto& k : *previous) {
      if (!std::binary_search(now_set.begin(), now_set.end(), k)) set(*table.get(k, now), -1);
    }
    *previous = std::move(now_set);
  };
  auto requests = [](filters::ratelimit::Entry& e, int64_t v) { e.remote_requests.store(v < 0 ? 0 : v); };
  auto tokens = [](filters::ratelimit::Entry& e, int64_t v) { e.remote_tokens.store(v < 0 ? 0 : v); };
  auto ceiling = [](filters::ratelimit::Entry& e, int64_t v) { e.ceiling.store(v); };
  apply(state_->ips, usage.ip_requests(), &remote_ips_, requests);
  apply(state_->keys, usage.key_requests(), &remote_keys_, requests);
  apply(state_->keys, usage.key_tokens(), &remote_token_keys_, tokens);
  // The ceilings the control plane shared the limits out as; a key left
  // out goes back to its default (an equal share). A control plane
  // without ceilings (seq 0) leaves every key at its default.
  if (usage.seq() != 0) {
    state_->global_ceiling.store(
        usage.has_global_request_ceiling() ? static_cast<int64_t>(usage.global_request_ceiling()) : -1);
    apply(state_->ips, usage.ip_request_ceilings(), &ceiling_ips_, ceiling);
    apply(state_->keys, usage.key_request_ceilings(), &ceiling_keys_, ceiling);
  }
  applied_usage_seq_ = usage.seq();
  usage_members_ = std::max<uint32_t>(1, usage.members());
}

void FarmClient::setOffline(bool offline) {
  if (!state_) return;
  bool was = state_->farm_offline.exchange(offline);
  if (was == offline) return;
  if (offline) {
    log::warn("control plane unreachable: farm counts are stale, applying the offline policy",
              {{"policy", log::str(options_.offline_policy)}});
    // Stale remote counts would block forever or admit too much; the
    // policy takes over from them.
    state_->remote_global.store(0);
    state_->ips.forEach([](const std::string&, filters::ratelimit::Entry& e) { e.remote_requests.store(0); });
    state_->keys.forEach([](const std::string&, filters::ratelimit::Entry& e) {
      e.remote_requests.store(0);
      e.remote_tokens.store(0);
    });
  }
}

void FarmClient::handleRest(const std::string& method, const std::string& path, const std::string& body,
                            const std::string& caller,
                            std::function<void(int, std::string, std::string)> done) {
  edge::v1::RestRequest req;
  req.set_method(method);
  req.set_path(path);
  req.set_body(body);
  req.set_caller_client(caller);
  channel_->unary(kRestPath, req.SerializeAsString(), 10000,
                  [done](int status, std::string message, std::string response) {
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
                    done(static_cast<int>(reply.status()), reply.body(), reply.error_code());
                  });
}

FarmView FarmClient::view() const {
  std::lock_guard<std::mutex> lock(view_mutex_);
  return view_;
}

}  // namespace eldric::server
