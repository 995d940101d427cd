// The farm's members as the control plane tracks them: a data plane's
// stream from hello to done (acks, nacks, session logouts), its usage
// reports, and the farm-usage push built from them. See farm_members.h,
// and server.cc for the threads and the lock order.

#include "controlplane/farm_members.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/hex.h"
#include "common/log.h"
#include "controlplane/clock.h"
#include "controlplane/core/farm_limits.h"
#include "controlplane/core/store.h"
#include "controlplane/discovery_stream.h"
#include "controlplane/farm_usage.h"
#include "controlplane/server_impl.h"
#include "eldric/edge/v1/discovery.grpc.pb.h"

namespace eldric::controlplane {

using edge::v1::DiscoveryRequest;
using edge::v1::DiscoveryResponse;
using edge::v1::UsageReport;

namespace {

// Disconnected members stay in the farm status this long.
constexpr int64_t kForgetDisconnectedMs = 3600 * 1000;
constexpr size_t kMaxNackErrorLen = 4096;
// DiscoveryRequest.logged_out_sessions taken from one message.
constexpr size_t kMaxLogoutsPerMessage = 64;

}  // namespace

// ---------------------------------------------------------------------------
// The stream.

void ControlPlane::Impl::onHello(DiscoveryStream* s, const DiscoveryRequest& req) {
  bool kick = false;
  bool replaced = false;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    streams_[s] = s->self();
    NodeState& n = nodes_[s->nodeId()];
    replaced = n.stream != nullptr;
    n.node = req.node();
    n.stream = s;
    n.peer = s->peer();
    n.connected_since_unix_ms = unixMs();
    // On a hello, version_info is the snapshot the data plane already runs
    // (from an earlier stream), if any.
    if (!req.version_info().empty() && req.error_detail().empty()) {
      n.acked_version = req.version_info();
    }
    // Whatever it held before is unknown now (it may have restarted): until
    // it reports, the farm's ceilings count it as holding the whole limit.
    ceilings_.forget(s->nodeId());
    if (req.has_usage()) recordReportLocked(s->nodeId(), n, req.usage());
    // A data plane that connects late gets the current snapshot at once.
    if (current_) kick = s->push(current_);
  }
  onLogouts(s, req);
  if (req.has_usage() || logouts_pending_) noteReport();
  log::info("data plane connected", {{"node", log::str(s->nodeId())},
                                     {"peer", log::str(s->peer())},
                                     {"build", log::str(req.node().build_version())},
                                     {"running_version", log::str(req.version_info())},
                                     {"replaces_stream", replaced ? "true" : "false"}});
  if (kick) s->kick();
}

void ControlPlane::Impl::onRequest(DiscoveryStream* s, const DiscoveryRequest& req) {
  enum { kNone, kAck, kNack } kind = kNone;
  std::string rejected;
  if (!req.response_nonce().empty()) {
    kind = req.error_detail().empty() ? kAck : kNack;
    // A NACK's version_info is the version still in force; the rejected
    // one is the version that went out with the nonce.
    if (kind == kNack) rejected = s->versionForNonce(req.response_nonce());
  }
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    auto it = nodes_.find(s->nodeId());
    if (it == nodes_.end()) return;
    NodeState& n = it->second;
    if (req.has_node()) {
      if (!req.node().id().empty() && req.node().id() != s->nodeId()) {
        log::warn("a data plane changed node.id on an open stream; ignored",
                  {{"node", log::str(s->nodeId())}, {"new_id", log::str(req.node().id())}});
      } else {
        n.node.set_build_version(req.node().build_version());
        *n.node.mutable_listen_addresses() = req.node().listen_addresses();
      }
    }
    if (kind == kAck) {
      n.acked_version = req.version_info();
      n.nacked_version.clear();
      n.nack_error.clear();
    } else if (kind == kNack) {
      // After a NACK nothing is resent: the same snapshot would fail the
      // same way, and resending it in a loop (a known trap, see
      // go-control-plane's notes on NACKs) would only burn both sides. The
      // data plane keeps its last good snapshot; the next state change
      // (an admin change, SIGHUP) pushes a new version.
      n.nacked_version =
          rejected.empty() ? "(unknown nonce " + req.response_nonce() + ")" : rejected;
      n.nack_error = req.error_detail().substr(0, kMaxNackErrorLen);
      if (!req.version_info().empty()) n.acked_version = req.version_info();
    }
    // Reports from a stream the member has since replaced are stale.
    if (req.has_usage() && n.stream == s) recordReportLocked(s->nodeId(), n, req.usage());
  }
  onLogouts(s, req);
  if (req.has_usage() || logouts_pending_) noteReport();
  if (kind == kAck) {
    log::debug("snapshot acknowledged",
               {{"node", log::str(s->nodeId())}, {"version", log::str(req.version_info())}});
  } else if (kind == kNack) {
    log::warn("snapshot rejected by a data plane",
              {{"node", log::str(s->nodeId())},
               {"version", log::str(rejected)},
               {"in_force", log::str(req.version_info())},
               {"error", log::str(req.error_detail().substr(0, kMaxNackErrorLen))}});
  }
}

void ControlPlane::Impl::onLogouts(DiscoveryStream* s, const DiscoveryRequest& req) {
  if (req.logged_out_sessions_size() == 0) return;
  std::vector<LoggedOutSession> sessions;
  for (const auto& l : req.logged_out_sessions()) {
    if (sessions.size() == kMaxLogoutsPerMessage) break;
    if (l.token_sha256().size() != 32) continue;
    sessions.push_back({hexEncode(l.token_sha256()), l.expires_at()});
  }
  std::lock_guard<std::mutex> l(store_mu_);
  size_t added = 0;
  std::string error;
  if (!store_->addLoggedOutSessions(sessions, unixMs() / 1000, &added, &error)) {
    log::error("session logouts not recorded",
               {{"node", log::str(s->nodeId())}, {"error", log::str(error)}});
    return;
  }
  if (added == 0) return;
  log::info(
      "sessions logged out on a member",
      {{"node", log::str(s->nodeId())}, {"sessions", log::num(static_cast<long long>(added))}});
  // The snapshot is rebuilt by the timer, with the next farm push: many
  // logouts (or a member sending many messages) make one rebuild per push
  // gap, not one per message.
  logouts_pending_ = true;
}

void ControlPlane::Impl::onDone(DiscoveryStream* s) {
  bool was_current = false;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    streams_.erase(s);
    if (!s->nodeId().empty()) {
      auto it = nodes_.find(s->nodeId());
      if (it != nodes_.end() && it->second.stream == s) {
        it->second.stream = nullptr;
        it->second.disconnected_steady_ms = steadyMs();
        was_current = true;
      }
    }
  }
  if (was_current) {
    log::info("data plane disconnected",
              {{"node", log::str(s->nodeId())}, {"peer", log::str(s->peer())}});
  }
}

// ---------------------------------------------------------------------------
// Usage reports and the farm-usage push.

void ControlPlane::Impl::recordReportLocked(const std::string& id, NodeState& n,
                                            const UsageReport& reported) {
  UsageReport usage = reported;
  if (size_t cut = boundReport(current_limits_, &usage)) {
    // Once per member until it reports within bounds again: a member in
    // this state reports every sync interval.
    if (!n.report_cut) {
      log::warn("a member's usage report goes past the served limits; bounded",
                {{"node", log::str(id)},
                 {"entries_or_counts_cut", log::num(static_cast<long long>(cut))}});
    }
    n.report_cut = true;
  } else {
    n.report_cut = false;
  }
  // The tunnel directory is bounded too: a member holds at most this many.
  if (usage.tunnels_size() > kMaxTunnelsPerMember) {
    usage.mutable_tunnels()->DeleteSubrange(kMaxTunnelsPerMember,
                                            usage.tunnels_size() - kMaxTunnelsPerMember);
  }
  for (auto& t : *usage.mutable_tunnels()) {
    if (t.models_size() > kMaxModelsPerTunnel) {
      t.mutable_models()->DeleteSubrange(kMaxModelsPerTunnel,
                                         t.models_size() - kMaxModelsPerTunnel);
    }
    t.clear_member_id();  // the control plane says who holds it, not the member
    t.clear_relay_url();
  }
  n.report = usage;
  n.has_report = true;
  n.last_report_unix_ms = unixMs();
  n.last_report_steady_ms = steadyMs();
  FarmCeilings::Report r;
  // A seq another control-plane process counted says nothing about ours.
  r.applied_seq = usage.applied_usage_instance() == instance_ ? usage.applied_usage_seq() : 0;
  // farm_members 0: a data plane that predates ceilings (its defaults are
  // the whole limit).
  r.members = std::max<uint32_t>(1, usage.farm_members());
  r.offline = usage.offline();
  auto copy = [](const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& from,
                 std::unordered_map<std::string, uint64_t>* to) {
    for (const auto& kc : from) (*to)[kc.key()] = kc.count();
  };
  if (usage.global_requests()) r.counts[FarmCeilings::kGlobal][""] = usage.global_requests();
  copy(usage.ip_requests(), &r.counts[FarmCeilings::kIp]);
  copy(usage.key_requests(), &r.counts[FarmCeilings::kKey]);
  if (usage.has_global_request_ceiling())
    r.ceilings[FarmCeilings::kGlobal][""] = usage.global_request_ceiling();
  copy(usage.ip_request_ceilings(), &r.ceilings[FarmCeilings::kIp]);
  copy(usage.key_request_ceilings(), &r.ceilings[FarmCeilings::kKey]);
  if (usage.global_refused()) r.refused[FarmCeilings::kGlobal][""] = usage.global_refused();
  copy(usage.ip_refused(), &r.refused[FarmCeilings::kIp]);
  copy(usage.key_refused(), &r.refused[FarmCeilings::kKey]);
  ceilings_.onReport(id, std::move(r));
}

namespace {

// A member's Node.relay_url with an empty host ("https://:443") takes the
// address its stream comes from (gRPC's peer: "ipv4:10.0.0.5:51234",
// "ipv6:[fd00::5]:51234").
std::string relayUrlOf(const NodeState& n) {
  const std::string& url = n.node.relay_url();
  size_t at = url.find("://:");
  if (at == std::string::npos) return url;
  std::string peer = n.peer;
  for (const char* scheme : {"ipv4:", "ipv6:"}) {
    if (peer.rfind(scheme, 0) == 0) peer = peer.substr(5);
  }
  size_t colon = peer.rfind(':');
  if (colon == std::string::npos || colon == 0) return "";
  std::string host = peer.substr(0, colon);
  // gRPC escapes some characters in IPv6 peers (%5B for '['): take them
  // as they come only if they already are an address.
  if (host.find('%') != std::string::npos) return "";
  return url.substr(0, at + 3) + host + url.substr(at + 3);
}

}  // namespace

std::unordered_set<std::string> ControlPlane::Impl::contestedTunnelsLocked(
    const std::function<bool(const NodeState&)>& fresh) {
  std::unordered_map<std::string, const std::string*> holder;
  std::unordered_set<std::string> contested;
  for (const auto& [id, n] : nodes_) {
    if (!fresh(n)) continue;
    for (const auto& t : n.report.tunnels()) {
      auto [it, fresh_id] = holder.emplace(t.tunnel_id(), &id);
      if (!fresh_id && *it->second != id && contested.insert(t.tunnel_id()).second) {
        log::warn("two members report the same tunnel; it is left out of the directory",
                  {{"tunnel", log::str(t.tunnel_id())},
                   {"member", log::str(id)},
                   {"other_member", log::str(*it->second)}});
      }
    }
  }
  return contested;
}

void ControlPlane::Impl::addTunnelDirectory(const std::string& to,
                                            const std::function<bool(const NodeState&)>& fresh,
                                            const std::unordered_set<std::string>& contested,
                                            edge::v1::FarmUsage* fu) {
  for (const auto& [id, n] : nodes_) {
    if (id == to || !fresh(n) || n.report.tunnels_size() == 0) continue;
    std::string url = relayUrlOf(n);
    if (url.empty()) continue;
    for (const auto& t : n.report.tunnels()) {
      // Tunnel ids are 128 random bits: one two members claim is a member
      // trying to draw another's relays (and the router keys they carry).
      if (contested.count(t.tunnel_id())) continue;
      auto* v = fu->add_tunnels();
      *v = t;
      v->set_member_id(id);
      v->set_relay_url(url);
    }
  }
}

void ControlPlane::Impl::pushFarmUsage() {
  std::vector<std::shared_ptr<DiscoveryStream>> to_kick;
  std::unique_lock<std::mutex> l(streams_mu_);
  int64_t now_steady = steadyMs();
  int64_t now_unix = unixMs();
  int64_t fresh_ms = kFreshIntervals * sync_interval_ms_.load();

  // Forget members that have been gone a long time.
  for (auto it = nodes_.begin(); it != nodes_.end();) {
    if (it->second.stream == nullptr &&
        now_steady - it->second.disconnected_steady_ms > kForgetDisconnectedMs) {
      ceilings_.forget(it->first);
      it = nodes_.erase(it);
    } else {
      ++it;
    }
  }

  // The farm: members connected now or heard from recently. Counts are
  // summed over the fresh reports; ceilings are shared out among all of
  // them (a member that has not reported yet is assumed to hold the whole
  // limit until it does, so nobody is raised meanwhile).
  Totals t;
  std::vector<std::string> members;
  auto fresh = [&](const NodeState& n) {
    return n.has_report && now_steady - n.last_report_steady_ms <= fresh_ms;
  };
  for (const auto& [id, n] : nodes_) {
    if (n.stream == nullptr && !fresh(n)) continue;
    members.push_back(id);
    if (!fresh(n)) continue;
    t.global += n.report.global_requests();
    addCounts(n.report.ip_requests(), &t.ip);
    addCounts(n.report.key_requests(), &t.req);
    addCounts(n.report.key_tokens(), &t.tok);
  }

  // The limits the members enforce, from the snapshot they run.
  auto limit_of = [this](FarmCeilings::Tier tier, const std::string& key) {
    return current_limits_.of(tier, key);
  };
  uint64_t seq = ++usage_seq_;
  uint32_t member_count = static_cast<uint32_t>(std::max<size_t>(1, members.size()));
  auto ceilings = ceilings_.allocate(members, member_count, seq, limit_of);
  const std::unordered_set<std::string> contested = contestedTunnelsLocked(fresh);

  for (auto& [raw, s] : streams_) {
    auto it = nodes_.find(s->nodeId());
    // A stream a member has since replaced gets nothing more.
    if (it == nodes_.end() || it->second.stream != raw) continue;
    const NodeState& n = it->second;
    const UsageReport* own = fresh(n) ? &n.report : nullptr;
    auto msg = std::make_shared<DiscoveryResponse>();
    msg->set_nonce(newNonce());
    auto* fu = msg->mutable_farm_usage();
    fu->set_at_unix_ms(now_unix);
    fu->set_members(member_count);
    // The others' counts: the sum less this member's own report.
    fu->set_global_requests(t.global - (own ? std::min(t.global, own->global_requests()) : 0));
    writeDifference(t.ip, own ? &own->ip_requests() : nullptr, fu->mutable_ip_requests());
    writeDifference(t.req, own ? &own->key_requests() : nullptr, fu->mutable_key_requests());
    writeDifference(t.tok, own ? &own->key_tokens() : nullptr, fu->mutable_key_tokens());
    // Ceilings only for members heard from since they connected (seq 0:
    // the member keeps what it has).
    if (!ceilings_.known(it->first)) {
      addTunnelDirectory(it->first, fresh, contested, fu);
      if (s->push(std::move(msg))) to_kick.push_back(s);
      continue;
    }
    fu->set_seq(seq);
    fu->set_instance(instance_);
    const auto& mine = ceilings[it->first].ceilings;
    auto global = mine[FarmCeilings::kGlobal].find("");
    if (global != mine[FarmCeilings::kGlobal].end()) fu->set_global_request_ceiling(global->second);
    auto write = [](const std::unordered_map<std::string, uint64_t>& from,
                    google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* to) {
      for (const auto& [key, value] : from) {
        auto* kc = to->Add();
        kc->set_key(key);
        kc->set_count(value);
      }
    };
    write(mine[FarmCeilings::kIp], fu->mutable_ip_request_ceilings());
    write(mine[FarmCeilings::kKey], fu->mutable_key_request_ceilings());
    addTunnelDirectory(it->first, fresh, contested, fu);
    if (s->push(std::move(msg))) to_kick.push_back(s);
  }
  // Kick outside streams_mu_ (see the lock order at the top).
  l.unlock();
  for (auto& s : to_kick) s->kick();
}

}  // namespace eldric::controlplane
