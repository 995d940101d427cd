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

}  // namespace eldric::controlplane
