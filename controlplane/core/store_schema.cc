#include "controlplane/core/store_schema.h"

#include <cstdint>
#include <string>

#include "controlplane/core/sqlite.h"

namespace eldric::controlplane::internal {

namespace {

// Schema migrations, applied in order inside one transaction at open. A
// database records the last one applied as meta.schema_version; a new
// release appends a step here and never edits an old one.
struct Migration {
  int to_version;
  const char* sql;
};

const Migration kMigrations[] = {
    {1, R"sql(
CREATE TABLE meta (
  key TEXT PRIMARY KEY,
  value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('version', 0);
INSERT INTO meta (key, value) VALUES ('schema_version', 0);

-- name uses SQLite's default BINARY collation: uniqueness is case-sensitive.
CREATE TABLE clients (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL UNIQUE,
  description TEXT NOT NULL DEFAULT '',
  scopes INTEGER NOT NULL,
  rpm INTEGER NOT NULL DEFAULT 0,
  tpm INTEGER NOT NULL DEFAULT 0,
  max_concurrent INTEGER NOT NULL DEFAULT 0,
  allowed_models TEXT NOT NULL DEFAULT '',  -- newline separated
  source TEXT NOT NULL CHECK (source IN ('api', 'config')),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL DEFAULT 0,
  revoked_at INTEGER NOT NULL DEFAULT 0
);

-- A key is identified by its hash; the hash is unique across all clients so
-- one presented key can never authenticate as two clients.
CREATE TABLE keys (
  sha256_hex TEXT PRIMARY KEY NOT NULL CHECK (length(sha256_hex) = 64),
  client_id TEXT NOT NULL REFERENCES clients (id) ON DELETE CASCADE,
  prefix TEXT NOT NULL,
  source TEXT NOT NULL CHECK (source IN ('api', 'config')),
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL DEFAULT 0,
  revoked_at INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX keys_by_client ON keys (client_id);
)sql"},
    {2, R"sql(
-- Plugin state (plain data until the data plane runs plugins). valves is a
-- compact JSON object, validated before it is written.
CREATE TABLE plugins (
  id TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  enabled INTEGER NOT NULL DEFAULT 0 CHECK (enabled IN (0, 1)),
  valves TEXT NOT NULL DEFAULT '{}',
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL
) WITHOUT ROWID;
)sql"},
    {3, R"sql(
-- Web chat sessions logged out on a farm member, by the SHA-256 of the
-- cookie's token; each is dropped once past its expiry.
CREATE TABLE logged_out_sessions (
  token_sha256_hex TEXT PRIMARY KEY NOT NULL CHECK (length(token_sha256_hex) = 64),
  expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX logged_out_sessions_by_expiry ON logged_out_sessions (expires_at);
)sql"},
    {4, R"sql(
-- The tool plugins a client is offered (newline separated; empty: all).
ALTER TABLE clients ADD COLUMN tools TEXT NOT NULL DEFAULT '';
)sql"},
};
constexpr int kSchemaVersion = 4;

}  // namespace

// Brings the schema up to kSchemaVersion in one transaction.
bool migrate(sqlite3* db, const std::string& path, std::string* error) {
  Transaction txn(db);
  if (!txn.begin()) {
    *error = "database error in " + path + ": " + sqlite3_errmsg(db);
    return false;
  }
  int current = 0;
  {
    Stmt has_meta(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'");
    int rc = has_meta.step();
    if (rc == SQLITE_ROW) {
      Stmt v(db, "SELECT value FROM meta WHERE key = 'schema_version'");
      if (v.step() != SQLITE_ROW) {
        *error = path + " is not an Eldric Edge database (meta has no schema_version)";
        return false;
      }
      current = static_cast<int>(v.int64(0));
    } else if (rc != SQLITE_DONE) {
      *error = "database error in " + path + ": " + sqlite3_errmsg(db);
      return false;
    }
  }
  if (current > kSchemaVersion) {
    *error = path + " has schema version " + std::to_string(current) +
             ", newer than this binary supports (" + std::to_string(kSchemaVersion) +
             "); use a newer release";
    return false;
  }
  for (const Migration& m : kMigrations) {
    if (m.to_version <= current) continue;
    if (!execOrError(db, path, m.sql, error)) return false;
    Stmt set(db, "UPDATE meta SET value = ?1 WHERE key = 'schema_version'");
    set.bind(1, static_cast<int64_t>(m.to_version));
    if (set.step() != SQLITE_DONE) {
      *error = "database error in " + path + ": " + sqlite3_errmsg(db);
      return false;
    }
    current = m.to_version;
  }
  if (!txn.commit()) {
    *error = "database error in " + path + ": " + sqlite3_errmsg(db);
    return false;
  }
  return true;
}

}  // namespace eldric::controlplane::internal
