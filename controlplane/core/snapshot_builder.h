#pragma once

// Turns store state into Snapshot parts. Shared by the control plane and
// the standalone data plane, so that both build the same snapshot from the
// same state.

#include <cstdint>
#include <vector>

#include "controlplane/core/store.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane {

// Appends the active keys of active clients to `auth`, as hashes. Revoked
// clients and keys, and keys already expired at `now_s`, are left out.
void addClientKeys(const std::vector<ClientRecord>& clients, int64_t now_s, edge::v1::Auth* auth);

// Appends the logged-out sessions (as raw digests) to `auth`.
void addLoggedOutSessions(const std::vector<LoggedOutSession>& sessions, edge::v1::Auth* auth);

// TLS session ticket keys (Snapshot.session_tickets): a new key first
// every rotation, the two before it kept to decrypt, so a ticket lives
// between two and three rotations. Keys are random (getrandom) and kept in
// memory only: a restart of whoever rotates ends resumption once.
class TicketKeyRing {
 public:
  static constexpr size_t kKeys = 3;
  static constexpr size_t kKeyBytes = 80;  // name 16, AES-256 32, HMAC-SHA256 32

  // Rotates when `rotation_s` has passed since the last (or there is no
  // key yet). True when the keys changed.
  bool rotateIfDue(int64_t now_s, int64_t rotation_s);
  // Seconds until the next rotation is due (at least 1).
  int64_t secondsToNext(int64_t now_s, int64_t rotation_s) const;
  // Sets `out`'s keys (its rotation is the config's, left as it is).
  // With rotation zero, none: tickets are off.
  void fill(edge::v1::SessionTickets* out) const;

 private:
  std::vector<std::string> keys_;  // newest first
  int64_t rotated_at_ = 0;
};

}  // namespace eldric::controlplane
