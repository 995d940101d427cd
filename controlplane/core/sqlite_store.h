#pragma once

// The Store on SQLite (internal to controlplane/core; callers use
// Store::open).

#include <memory>
#include <string>

#include "controlplane/core/store.h"

namespace eldric::controlplane::internal {

// Opens (creating if needed) `data_dir`/edge.db. See Store::open.
std::unique_ptr<Store> openSqliteStore(const std::string& data_dir, std::string* error);

}  // namespace eldric::controlplane::internal
