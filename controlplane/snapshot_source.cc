// The snapshot the farm is served: built from the config file, the store
// and the session key, versioned, and published to every stream. See
// snapshot_source.h, and server.cc for the threads and the lock order.

#include "controlplane/snapshot_source.h"

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/crypto.h"
#include "common/log.h"
#include "controlplane/clock.h"
#include "controlplane/core/farm_limits.h"
#include "controlplane/core/plugin_dir.h"
#include "controlplane/core/snapshot_builder.h"
#include "controlplane/core/store.h"
#include "controlplane/discovery_stream.h"
#include "controlplane/farm_usage.h"
#include "controlplane/server_impl.h"
#include "eldric/edge/v1/discovery.grpc.pb.h"

namespace eldric::controlplane {

using edge::v1::DiscoveryResponse;

bool snapshotVersion(const edge::v1::Snapshot& snap, uint64_t store_version, std::string* version,
                     std::string* error) {
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream sos(&bytes);
    google::protobuf::io::CodedOutputStream cos(&sos);
    cos.SetSerializationDeterministic(true);
    if (!snap.SerializeToCodedStream(&cos)) {
      *error = "cannot serialize the snapshot";
      return false;
    }
  }
  *version = "cp-" + std::to_string(store_version) + "-" + crypto::sha256Hex(bytes).substr(0, 12);
  return true;
}

FarmLimits farmLimitsOf(const edge::v1::Snapshot& snap) {
  FarmLimits limits;
  const auto& rl = snap.rate_limits();
  limits.tier[FarmCeilings::kGlobal] = rl.global_requests();
  limits.tier[FarmCeilings::kIp] = rl.per_ip_requests();
  limits.tier[FarmCeilings::kKey] = rl.per_key_requests();
  limits.tokens_tier = rl.per_key_tokens();
  if (rl.has_max_ip_entries()) limits.max_ip_entries = rl.max_ip_entries();
  for (const auto& k : snap.auth().api_keys()) {
    if (k.requests_per_minute()) limits.client_rpm[k.client_id()] = k.requests_per_minute();
    limits.client_tpm[k.client_id()] = k.tokens_per_minute();
  }
  return limits;
}

bool ControlPlane::Impl::rebuildLocked(const char* reason, std::string* error) {
  edge::v1::Snapshot snap = base_.snapshot;
  std::vector<ClientRecord> clients;
  if (!store_->listClientsChecked(&clients, error)) return false;
  int64_t now_s = unixMs() / 1000;
  addClientKeys(clients, now_s, snap.mutable_auth());
  std::vector<LoggedOutSession> logged_out;
  if (!store_->listLoggedOutSessions(now_s, &logged_out, error)) return false;
  addLoggedOutSessions(logged_out, snap.mutable_auth());
  snap.mutable_auth()->add_session_signing_keys(session_key_);
  // The enabled plugins with their code: every member runs the same.
  if (!base_.plugins_dir.empty()) {
    std::vector<std::string> warnings;
    addRunnablePlugins(base_.plugins_dir, store_->listPlugins(), snap.mutable_plugins(), &warnings);
    for (const auto& w : warnings) log::warn(w);
  }
  if (acme_) acme_->fill(snap.mutable_acme());
  if (stapler_) stapler_->watchAndFill(&snap);
  // Session ticket keys, one set for the farm: a ticket from any member
  // resumes on every other.
  if (snap.session_tickets().has_rotation()) {
    int64_t rotation = snap.session_tickets().rotation().seconds();
    tickets_.rotateIfDue(now_s, rotation);
    tickets_.fill(snap.mutable_session_tickets());
    next_ticket_rotation_s_ = rotation > 0 ? now_s + tickets_.secondsToNext(now_s, rotation) : 0;
  } else {
    next_ticket_rotation_s_ = 0;
  }
  // Members report (and expect the farm's counts) at the interval this
  // control plane pushes at, whatever set it.
  int64_t interval_ms = sync_interval_ms_.load();
  auto* interval = snap.mutable_farm()->mutable_sync_interval();
  interval->set_seconds(interval_ms / 1000);
  interval->set_nanos(static_cast<int32_t>(interval_ms % 1000) * 1000000);
  snap.clear_version();

  std::string version;
  if (!snapshotVersion(snap, store_->version(), &version, error)) return false;

  int64_t next_expiry = 0;
  for (const auto& k : snap.auth().api_keys()) {
    if (k.expires_at() > 0 && (next_expiry == 0 || k.expires_at() < next_expiry)) {
      next_expiry = k.expires_at();
    }
  }
  next_expiry_s_ = next_expiry;
  known_keys_.clear();
  for (const auto& k : snap.auth().api_keys()) {
    if (k.sha256().empty()) continue;  // a client by certificate: no key to check
    KnownKey known;
    known.client_name = k.client_name();
    known.expires_at = k.expires_at();
    for (int sc : k.scopes()) known.admin = known.admin || sc == edge::v1::SCOPE_ADMIN;
    known_keys_[k.sha256()] = std::move(known);
  }
  if (version == built_version_) return true;  // nothing changed: no push
  built_version_ = version;
  if (snap.acme().challenges_size() > 0) {
    std::vector<std::string> tokens;
    for (const auto& c : snap.acme().challenges()) tokens.push_back(c.token());
    challenge_versions_.emplace_back(version, std::move(tokens));
    if (challenge_versions_.size() > 16) challenge_versions_.erase(challenge_versions_.begin());
  }
  snap.set_version(version);

  DiscoveryResponse msg;
  msg.set_version_info(version);
  msg.set_nonce(newNonce());
  *msg.mutable_snapshot() = std::move(snap);
  // Once for every stream (see Outbound).
  OutboundPtr out = encode(msg);
  size_t streams = 0;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    streams = streams_.size();
  }
  log::info("snapshot built", {{"version", log::str(version)},
                               {"reason", log::str(reason)},
                               {"api_keys", log::num(msg.snapshot().auth().api_keys_size())},
                               {"bytes", log::num(static_cast<long long>(out->bytes.Length()))},
                               {"streams", log::num(static_cast<long long>(streams))}});
  publish(std::move(out), farmLimitsOf(msg.snapshot()));
  return true;
}

void ControlPlane::Impl::rebuildAfterChangeLocked(const char* reason) {
  std::string error;
  if (!rebuildLocked(reason, &error)) {
    // The change is committed and will reach the data planes with the
    // next successful build (the next change, SIGHUP or key expiry).
    log::error("rebuilding the snapshot after a change failed", {{"error", log::str(error)}});
  }
}

void ControlPlane::Impl::publish(OutboundPtr msg, FarmLimits limits) {
  std::vector<std::shared_ptr<DiscoveryStream>> to_kick;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    current_ = msg;
    current_limits_ = std::move(limits);
    for (auto& [raw, s] : streams_) {
      if (s->push(msg)) to_kick.push_back(s);
    }
  }
  for (auto& s : to_kick) s->kick();
}

}  // namespace eldric::controlplane
