#pragma once

// The snapshot the farm is served. ControlPlane::Impl builds it from the
// config file's Snapshot, the store's clients and session logouts and the
// session key, and publishes each new version to every stream
// (snapshot_source.cc). What it derives from a built snapshot:

#include <cstdint>
#include <string>

#include "controlplane/farm_usage.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane {

// `snap`'s version (its own version field empty): "cp-<store version>-"
// and the first 12 hex of the SHA-256 of its deterministic serialization.
// It names the store state and the content: it changes with either (a key
// expiring changes the content alone) and is the same after a restart when
// nothing changed. False with `*error` set if `snap` cannot be serialized.
bool snapshotVersion(const edge::v1::Snapshot& snap, uint64_t store_version, std::string* version,
                     std::string* error);

// The request limits `snap` has the members enforce: what the farm's
// ceilings are shared out of and usage reports are bounded to.
FarmLimits farmLimitsOf(const edge::v1::Snapshot& snap);

}  // namespace eldric::controlplane
