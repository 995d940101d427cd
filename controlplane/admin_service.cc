// The Admin gRPC service and ControlPlane::Impl's admin handlers. See
// admin_service.h, and server.cc for the threads and the lock order.

#include "controlplane/admin_service.h"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/config/farm_plan.h"
#include "common/crypto.h"
#include "common/log.h"
#include "controlplane/clock.h"
#include "controlplane/core/acme/certificates.h"
#include "controlplane/core/admin_rest.h"
#include "controlplane/core/store.h"
#include "controlplane/server_impl.h"
#include "eldric/edge/v1/admin.grpc.pb.h"

namespace eldric::controlplane {

namespace {

grpc::Status storeError(const std::string& error) {
  // The Store names database failures "database error in ..."; anything
  // else it refuses is the caller's input.
  if (error.rfind("database error", 0) == 0) return grpc::Status(grpc::StatusCode::INTERNAL, error);
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error);
}

void toProto(const ClientRecord& c, edge::v1::Client* out) {
  out->set_id(c.id);
  out->set_name(c.name);
  out->set_description(c.description);
  out->set_source(c.source);
  if (c.scopes & static_cast<Scopes>(Scope::Inference)) out->add_scopes("inference");
  if (c.scopes & static_cast<Scopes>(Scope::Admin)) out->add_scopes("admin");
  if (c.scopes & static_cast<Scopes>(Scope::Worker)) out->add_scopes("worker");
  if (c.scopes & static_cast<Scopes>(Scope::Router)) out->add_scopes("router");
  out->set_requests_per_minute(c.limits.rpm);
  out->set_tokens_per_minute(c.limits.tpm);
  out->set_max_concurrent_requests(c.limits.max_concurrent);
  for (const auto& m : c.limits.allowed_models) out->add_allowed_models(m);
  for (const auto& t : c.limits.tools) out->add_tools(t);
  out->set_created_at(c.created_at);
  out->set_expires_at(c.expires_at);
  out->set_revoked_at(c.revoked_at);
  for (const auto& k : c.keys) {
    auto* ki = out->add_keys();
    ki->set_prefix(k.prefix);
    ki->set_created_at(k.created_at);
    ki->set_expires_at(k.expires_at);
    ki->set_revoked_at(k.revoked_at);
  }
}

void toProto(const PluginRecord& p, edge::v1::Plugin* out) {
  out->set_id(p.id);
  out->set_name(p.name);
  out->set_type(p.type);
  out->set_enabled(p.enabled);
}

// Clients defined in the config file (read-only), as the REST API lists
// them: one per client name, ids "cfg_<name>".
std::vector<edge::v1::Client> configClients(const edge::v1::Auth& auth,
                                            const std::string& only = "") {
  std::vector<edge::v1::Client> out;
  std::map<std::string, size_t> index;
  for (const auto& k : auth.api_keys()) {
    if (!only.empty() && k.client_id() != only && k.client_name() != only) continue;
    auto it = index.find(k.client_name());
    edge::v1::Client* c;
    if (it == index.end()) {
      index[k.client_name()] = out.size();
      out.emplace_back();
      c = &out.back();
      c->set_id(k.client_id());
      c->set_name(k.client_name());
      c->set_source("config");
      for (int sc : k.scopes()) {
        c->add_scopes(sc == edge::v1::SCOPE_ADMIN    ? "admin"
                      : sc == edge::v1::SCOPE_WORKER ? "worker"
                      : sc == edge::v1::SCOPE_ROUTER ? "router"
                                                     : "inference");
      }
      c->set_requests_per_minute(k.requests_per_minute());
      c->set_tokens_per_minute(k.tokens_per_minute());
      c->set_max_concurrent_requests(k.max_concurrent_requests());
      for (const auto& m : k.allowed_models()) c->add_allowed_models(m);
      for (const auto& t : k.tools()) c->add_tools(t);
    } else {
      c = &out[it->second];
    }
    c->add_keys()->set_prefix(k.prefix());
  }
  return out;
}

class AdminService final : public edge::v1::Admin::Service {
 public:
  explicit AdminService(ControlPlane::Impl* impl) : impl_(impl) {}
  grpc::Status HandleRest(grpc::ServerContext* ctx, const edge::v1::RestRequest* req,
                          edge::v1::RestReply* reply) override {
    // The caller is who the key says, not what the request claims.
    return guarded(ctx, "HandleRest", [&](const std::string& caller) {
      return impl_->handleRest(*req, caller, reply);
    });
  }
  grpc::Status RegisterClient(grpc::ServerContext* ctx, const edge::v1::RegisterClientRequest* req,
                              edge::v1::ClientWithKey* out) override {
    return guarded(ctx, "RegisterClient",
                   [&](const std::string&) { return impl_->registerClient(*req, out); });
  }
  grpc::Status ListClients(grpc::ServerContext* ctx, const edge::v1::ListClientsRequest*,
                           edge::v1::ClientList* out) override {
    return guarded(ctx, "ListClients", [&](const std::string&) { return impl_->listClients(out); });
  }
  grpc::Status GetClient(grpc::ServerContext* ctx, const edge::v1::ClientRef* req,
                         edge::v1::Client* out) override {
    return guarded(ctx, "GetClient",
                   [&](const std::string&) { return impl_->getClient(req->id(), out); });
  }
  grpc::Status RevokeClient(grpc::ServerContext* ctx, const edge::v1::ClientRef* req,
                            edge::v1::Client* out) override {
    return guarded(ctx, "RevokeClient",
                   [&](const std::string&) { return impl_->revokeClient(req->id(), out); });
  }
  grpc::Status RotateKey(grpc::ServerContext* ctx, const edge::v1::RotateKeyRequest* req,
                         edge::v1::ClientWithKey* out) override {
    return guarded(ctx, "RotateKey",
                   [&](const std::string&) { return impl_->rotateKey(*req, out); });
  }
  grpc::Status ListPlugins(grpc::ServerContext* ctx, const edge::v1::ListPluginsRequest*,
                           edge::v1::PluginList* out) override {
    return guarded(ctx, "ListPlugins", [&](const std::string&) { return impl_->listPlugins(out); });
  }
  grpc::Status SetPluginEnabled(grpc::ServerContext* ctx,
                                const edge::v1::SetPluginEnabledRequest* req,
                                edge::v1::Plugin* out) override {
    return guarded(ctx, "SetPluginEnabled",
                   [&](const std::string&) { return impl_->setPluginEnabled(*req, out); });
  }
  grpc::Status GetValves(grpc::ServerContext* ctx, const edge::v1::PluginRef* req,
                         edge::v1::Valves* out) override {
    return guarded(ctx, "GetValves",
                   [&](const std::string&) { return impl_->getValves(req->id(), out); });
  }
  grpc::Status SetValves(grpc::ServerContext* ctx, const edge::v1::SetValvesRequest* req,
                         edge::v1::Valves* out) override {
    return guarded(ctx, "SetValves",
                   [&](const std::string&) { return impl_->setValves(*req, out); });
  }
  grpc::Status GetFarmStatus(grpc::ServerContext* ctx, const edge::v1::FarmStatusRequest*,
                             edge::v1::FarmStatus* out) override {
    return guarded(ctx, "GetFarmStatus",
                   [&](const std::string&) { return impl_->farmStatus(out); });
  }

 private:
  template <class F>
  grpc::Status guarded(grpc::ServerContext* ctx, const char* method, F call) {
    std::string caller;
    grpc::Status status = impl_->checkMember(*ctx);
    if (status.ok()) status = impl_->authorizeAdmin(*ctx, &caller);
    if (!status.ok()) {
      log::warn("admin call refused", {{"method", log::str(method)},
                                       {"peer", log::str(ctx->peer())},
                                       {"error", log::str(status.error_message())}});
      return status;
    }
    return call(caller);
  }

  ControlPlane::Impl* impl_;
};

}  // namespace

std::unique_ptr<grpc::Service> newAdminService(ControlPlane::Impl* impl) {
  return std::make_unique<AdminService>(impl);
}

AdminContext ControlPlane::Impl::adminContextLocked() {
  AdminContext ctx;
  ctx.store = store_.get();
  ctx.config_auth = &base_.snapshot.auth();
  ctx.rotation_overlap_seconds = base_.snapshot.auth().rotation_overlap().seconds();
  ctx.usage_json = [this](const std::string& id) { return usageJson(id); };
  ctx.mode = "farm";
  ctx.farm_status = [this](edge::v1::FarmStatus* out) { farmStatus(out); };
  // Under store_mu_ (the caller's), as acme_ is.
  ctx.certificates_json = [this] {
    return acme::certificatesJson(base_.snapshot, acme_.get(), unixMs() / 1000);
  };
  if (acme_) ctx.renew_certificates = [this](std::string* why) { return acme_->renewNow(why); };
  return ctx;
}

// A client's use across the farm: the sum of the fresh reports.
std::string ControlPlane::Impl::usageJson(const std::string& client_id) {
  uint64_t requests = 0, tokens = 0, in_flight = 0;
  std::lock_guard<std::mutex> l(streams_mu_);
  int64_t now_steady = steadyMs();
  int64_t fresh_ms = kFreshIntervals * sync_interval_ms_.load();
  for (const auto& [id, n] : nodes_) {
    if (!n.has_report || now_steady - n.last_report_steady_ms > fresh_ms) continue;
    for (const auto& kc : n.report.key_requests()) {
      if (kc.key() == client_id) requests += kc.count();
    }
    for (const auto& kc : n.report.key_tokens()) {
      if (kc.key() == client_id) tokens += kc.count();
    }
    for (const auto& kc : n.report.key_in_flight()) {
      if (kc.key() == client_id) in_flight += kc.count();
    }
  }
  return "{\"requests_in_window\":" + std::to_string(requests) +
         ",\"tokens_in_window\":" + std::to_string(tokens) +
         ",\"in_flight\":" + std::to_string(in_flight) + "}";
}

grpc::Status ControlPlane::Impl::checkMember(const grpc::ServerContextBase& ctx) const {
  if (options_.member_token.empty()) return grpc::Status::OK;
  const auto& md = ctx.client_metadata();
  auto it = md.find(config::kFarmTokenMetadata);
  std::string given =
      it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
  if (!crypto::constantTimeEquals(given, options_.member_token)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "not a member of this farm: the farm token does not match (members "
                        "derive it from the TLS key they share, or from farm.secret_file)");
  }
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::authorizeAdmin(const grpc::ServerContext& ctx,
                                                std::string* caller) {
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  std::string_view value;
  if (it != md.end()) value = std::string_view(it->second.data(), it->second.size());
  constexpr std::string_view kBearer = "bearer ";
  if (value.size() <= kBearer.size() ||
      !std::equal(kBearer.begin(), kBearer.end(), value.begin(), [](char a, char b) {
        return a == std::tolower(static_cast<unsigned char>(b));
      })) {
    return grpc::Status(
        grpc::StatusCode::UNAUTHENTICATED,
        "admin calls need an admin API key (metadata \"authorization: Bearer <key>\"; "
        "eldricctl: --api-key-file or ELDRIC_API_KEY)");
  }
  std::string_view key = value.substr(kBearer.size());
  unsigned char digest[32];
  crypto::sha256(key.data(), key.size(), digest);
  std::string hash(reinterpret_cast<const char*>(digest), sizeof digest);
  std::lock_guard<std::mutex> l(store_mu_);
  auto k = known_keys_.find(hash);
  if (k == known_keys_.end() ||
      (k->second.expires_at > 0 && k->second.expires_at <= unixMs() / 1000)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid or expired API key");
  }
  if (!k->second.admin) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "this API key has no admin scope");
  }
  *caller = k->second.client_name;
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::handleRest(const edge::v1::RestRequest& req,
                                            const std::string& caller, edge::v1::RestReply* reply) {
  std::lock_guard<std::mutex> l(store_mu_);
  bool changed = false;
  RestReply r =
      handleAdminRest(adminContextLocked(), req.method(), req.path(), req.body(), &changed);
  if (changed) {
    // The path names the client or plugin; bodies (keys, valves) are never
    // logged.
    log::info("admin state changed", {{"method", log::str(req.method())},
                                      {"path", log::str(req.path())},
                                      {"caller", log::str(caller)}});
    // Committed; the answer goes out only once the new snapshot is queued
    // on every stream.
    rebuildAfterChangeLocked("admin REST");
    reply->set_snapshot_version(built_version_);
  }
  reply->set_status(static_cast<uint32_t>(r.status));
  reply->set_body(std::move(r.body));
  reply->set_error_code(std::move(r.error_code));
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::registerClient(const edge::v1::RegisterClientRequest& req,
                                                edge::v1::ClientWithKey* out) {
  if (req.name().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "a client needs a name");
  }
  Scopes scopes = 0;
  for (const auto& s : req.scopes()) {
    Scopes one = 0;
    if (!parseScopes(s, &one)) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "unknown scope \"" + s + "\" (inference, admin, worker)");
    }
    scopes |= one;
  }
  if (scopes == 0) scopes = static_cast<Scopes>(Scope::Inference);
  ClientLimits limits;
  limits.rpm = req.requests_per_minute();
  limits.tpm = req.tokens_per_minute();
  limits.max_concurrent = req.max_concurrent_requests();
  limits.allowed_models.assign(req.allowed_models().begin(), req.allowed_models().end());
  limits.tools.assign(req.tools().begin(), req.tools().end());
  if (req.expires_in_seconds() < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "expires_in_seconds must be 0 (never) or positive");
  }
  int64_t expires_at =
      req.expires_in_seconds() > 0 ? unixMs() / 1000 + req.expires_in_seconds() : 0;

  std::lock_guard<std::mutex> l(store_mu_);
  if (!configClients(base_.snapshot.auth(), req.name()).empty()) {
    return grpc::Status(
        grpc::StatusCode::ALREADY_EXISTS,
        "a client named \"" + req.name() + "\" already exists (in the config file)");
  }
  IssuedKey issued;
  std::string error;
  bool conflict = false;
  if (!store_->registerClient(req.name(), req.description(), scopes, limits, expires_at, &issued,
                              &error, &conflict)) {
    if (conflict) return grpc::Status(grpc::StatusCode::ALREADY_EXISTS, error);
    return storeError(error);
  }
  log::info("client registered", {{"client", log::str(issued.client.name)},
                                  {"id", log::str(issued.client.id)},
                                  {"key_prefix", log::str(crypto::keyPrefix(issued.key))}});
  rebuildAfterChangeLocked("client registered");
  toProto(issued.client, out->mutable_client());
  out->set_api_key(issued.key);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::listClients(edge::v1::ClientList* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  std::vector<ClientRecord> clients;
  std::string error;
  if (!store_->listClientsChecked(&clients, &error)) {
    return grpc::Status(grpc::StatusCode::INTERNAL, error);
  }
  for (auto& c : configClients(base_.snapshot.auth())) *out->add_clients() = std::move(c);
  for (const auto& c : clients) toProto(c, out->add_clients());
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::getClient(const std::string& id, edge::v1::Client* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  if (auto c = store_->getClient(id)) {
    toProto(*c, out);
    return grpc::Status::OK;
  }
  auto cfg = configClients(base_.snapshot.auth(), id);
  if (!cfg.empty()) {
    *out = std::move(cfg[0]);
    return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::NOT_FOUND, "no client \"" + id + "\"");
}

grpc::Status ControlPlane::Impl::revokeClient(const std::string& id, edge::v1::Client* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  if (!configClients(base_.snapshot.auth(), id).empty()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "client \"" + id + "\" is defined in the config file; change it there");
  }
  if (!store_->getClient(id)) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "no client \"" + id + "\"");
  }
  std::string error;
  if (!store_->revokeClient(id, &error)) return storeError(error);
  auto c = store_->getClient(id);
  if (!c) return grpc::Status(grpc::StatusCode::INTERNAL, "client vanished after revocation");
  log::info("client revoked", {{"client", log::str(c->name)}, {"id", log::str(c->id)}});
  rebuildAfterChangeLocked("client revoked");
  toProto(*c, out);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::rotateKey(const edge::v1::RotateKeyRequest& req,
                                           edge::v1::ClientWithKey* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  if (!configClients(base_.snapshot.auth(), req.id()).empty()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        "client \"" + req.id() + "\" is defined in the config file; change its key there");
  }
  auto existing = store_->getClient(req.id());
  if (!existing) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no client \"" + req.id() + "\"");
  if (existing->revoked_at != 0) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "client \"" + req.id() + "\" is revoked; register a new client");
  }
  int64_t overlap = req.has_overlap_seconds() ? req.overlap_seconds()
                                              : base_.snapshot.auth().rotation_overlap().seconds();
  if (overlap < 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "overlap_seconds must be 0 or more");
  }
  IssuedKey issued;
  std::string error;
  if (!store_->rotateKey(req.id(), overlap, &issued, &error)) return storeError(error);
  log::info("client key rotated", {{"client", log::str(issued.client.name)},
                                   {"id", log::str(issued.client.id)},
                                   {"key_prefix", log::str(crypto::keyPrefix(issued.key))},
                                   {"overlap_seconds", log::num(overlap)}});
  rebuildAfterChangeLocked("key rotated");
  toProto(issued.client, out->mutable_client());
  out->set_api_key(issued.key);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::listPlugins(edge::v1::PluginList* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  for (const auto& p : store_->listPlugins()) toProto(p, out->add_plugins());
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::setPluginEnabled(const edge::v1::SetPluginEnabledRequest& req,
                                                  edge::v1::Plugin* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  PluginRecord rec;
  std::string error;
  bool not_found = false;
  if (!store_->setPluginEnabled(req.id(), req.enabled(), &rec, &error, &not_found)) {
    if (not_found) return grpc::Status(grpc::StatusCode::NOT_FOUND, error);
    return storeError(error);
  }
  log::info(req.enabled() ? "plugin enabled" : "plugin disabled", {{"plugin", log::str(req.id())}});
  rebuildAfterChangeLocked("plugin state");
  toProto(rec, out);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::getValves(const std::string& id, edge::v1::Valves* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  auto p = store_->getPlugin(id);
  if (!p) return grpc::Status(grpc::StatusCode::NOT_FOUND, "no plugin \"" + id + "\"");
  out->set_plugin_id(p->id);
  out->set_json(p->valves_json);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::setValves(const edge::v1::SetValvesRequest& req,
                                           edge::v1::Valves* out) {
  std::lock_guard<std::mutex> l(store_mu_);
  PluginRecord rec;
  std::string error;
  bool not_found = false;
  if (!store_->setPluginValves(req.plugin_id(), req.json(), &rec, &error, &not_found)) {
    if (not_found) return grpc::Status(grpc::StatusCode::NOT_FOUND, error);
    return storeError(error);
  }
  // Valves may hold secrets (a plugin's API token): log that they changed,
  // never what they are.
  log::info("plugin valves changed", {{"plugin", log::str(req.plugin_id())}});
  rebuildAfterChangeLocked("plugin valves");
  out->set_plugin_id(rec.id);
  out->set_json(rec.valves_json);
  return grpc::Status::OK;
}

grpc::Status ControlPlane::Impl::farmStatus(edge::v1::FarmStatus* out) {
  std::lock_guard<std::mutex> l(streams_mu_);
  if (current_) out->set_current_version(current_->version);
  for (const auto& [id, n] : nodes_) {
    auto* m = out->add_members();
    m->set_node_id(id);
    *m->mutable_listen_addresses() = n.node.listen_addresses();
    m->set_build_version(n.node.build_version());
    m->set_connected(n.stream != nullptr);
    m->set_acked_version(n.acked_version);
    m->set_nacked_version(n.nacked_version);
    m->set_nack_error(n.nack_error);
    m->set_last_report_unix_ms(n.has_report ? n.last_report_unix_ms : 0);
    m->set_connected_since_unix_ms(n.stream ? n.connected_since_unix_ms : 0);
    for (const auto& u : n.report.upstreams()) {
      auto* v = m->add_upstreams();
      v->set_url(u.url());
      v->set_healthy(u.healthy());
      v->set_in_flight(u.in_flight());
    }
  }
  return grpc::Status::OK;
}

}  // namespace eldric::controlplane
