#include "controlplane/core/snapshot_builder.h"

#include "common/hex.h"

namespace eldric::controlplane {

void addClientKeys(const std::vector<ClientRecord>& clients, int64_t now_s, edge::v1::Auth* auth) {
  for (const auto& c : clients) {
    if (c.revoked_at != 0 || (c.expires_at != 0 && c.expires_at <= now_s)) continue;
    for (const auto& k : c.keys) {
      if (k.revoked_at != 0 || (k.expires_at != 0 && k.expires_at <= now_s)) continue;
      std::string raw;
      if (!hexDecode(k.sha256_hex, &raw) || raw.size() != 32) continue;
      auto* ak = auth->add_api_keys();
      ak->set_sha256(raw);
      ak->set_prefix(k.prefix);
      ak->set_client_id(c.id);
      ak->set_client_name(c.name);
      if (c.scopes & static_cast<Scopes>(Scope::Inference))
        ak->add_scopes(edge::v1::SCOPE_INFERENCE);
      if (c.scopes & static_cast<Scopes>(Scope::Admin)) ak->add_scopes(edge::v1::SCOPE_ADMIN);
      if (c.scopes & static_cast<Scopes>(Scope::Worker)) ak->add_scopes(edge::v1::SCOPE_WORKER);
      if (c.scopes & static_cast<Scopes>(Scope::Router)) ak->add_scopes(edge::v1::SCOPE_ROUTER);
      ak->set_requests_per_minute(c.limits.rpm);
      ak->set_tokens_per_minute(c.limits.tpm);
      ak->set_max_concurrent_requests(c.limits.max_concurrent);
      for (const auto& m : c.limits.allowed_models) ak->add_allowed_models(m);
      int64_t expires = k.expires_at;
      if (c.expires_at != 0 && (expires == 0 || c.expires_at < expires)) expires = c.expires_at;
      ak->set_expires_at(expires);
    }
  }
}

void addLoggedOutSessions(const std::vector<LoggedOutSession>& sessions, edge::v1::Auth* auth) {
  for (const auto& s : sessions) {
    std::string raw;
    if (!hexDecode(s.token_sha256_hex, &raw) || raw.size() != 32) continue;
    auto* out = auth->add_logged_out_sessions();
    out->set_token_sha256(raw);
    out->set_expires_at(s.expires_at);
  }
}

}  // namespace eldric::controlplane
