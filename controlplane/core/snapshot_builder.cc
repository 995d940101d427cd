#include "controlplane/core/snapshot_builder.h"

#include <sys/random.h>

#include <algorithm>
#include <cstdlib>

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
      for (const auto& t : c.limits.tools) ak->add_tools(t);
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

bool TicketKeyRing::rotateIfDue(int64_t now_s, int64_t rotation_s) {
  if (rotation_s <= 0) {
    bool had = !keys_.empty();
    keys_.clear();
    return had;
  }
  if (!keys_.empty() && now_s - rotated_at_ < rotation_s) return false;
  std::string key(kKeyBytes, '\0');
  size_t got = 0;
  while (got < key.size()) {
    ssize_t n = getrandom(key.data() + got, key.size() - got, 0);
    if (n <= 0) abort();  // no randomness: nothing safe to encrypt with
    got += static_cast<size_t>(n);
  }
  keys_.insert(keys_.begin(), std::move(key));
  if (keys_.size() > kKeys) keys_.resize(kKeys);
  rotated_at_ = now_s;
  return true;
}

int64_t TicketKeyRing::secondsToNext(int64_t now_s, int64_t rotation_s) const {
  if (rotation_s <= 0) return 3600;
  return std::max<int64_t>(1, rotated_at_ + rotation_s - now_s);
}

void TicketKeyRing::fill(edge::v1::SessionTickets* out) const {
  out->clear_keys();
  for (const auto& k : keys_) out->add_keys(k);
}

}  // namespace eldric::controlplane
