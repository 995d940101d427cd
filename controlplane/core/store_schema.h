#pragma once

// The Store's SQLite schema and its migrations (internal to
// controlplane/core).

#include <sqlite3.h>

#include <string>

namespace eldric::controlplane::internal {

// Brings the schema up to the newest version in one transaction; refuses
// a database from a newer release.
bool migrate(sqlite3* db, const std::string& path, std::string* error);

}  // namespace eldric::controlplane::internal
