// The client registry on SQLite. See store.h for the contract.
//
// Durability: the database runs in WAL mode with synchronous=FULL, so COMMIT
// returns only after the WAL has been fsync'ed. Every mutating call is one
// BEGIN IMMEDIATE ... COMMIT transaction and reports success only after
// COMMIT returned; a caller that saw `true` can rely on the change surviving
// kill -9 and power loss.
//
// Secrets: API keys never reach SQLite. Only sha256Hex(key) and a short
// prefix are bound into statements, so neither the database, its WAL nor an
// SQLite error message can contain a key.

#include "controlplane/core/sqlite_store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/crypto_internal.h"
#include "controlplane/core/sqlite.h"
#include "controlplane/core/store_schema.h"
#include "controlplane/core/store_validation.h"

namespace eldric::controlplane::internal {

namespace {

constexpr int kBusyTimeoutMs = 5000;

// Column lists shared by the readers; clientFromRow() and keyFromRow() rely
// on this order.
constexpr char kSelectClients[] =
    "SELECT id, name, description, scopes, rpm, tpm, max_concurrent, allowed_models, source, "
    "created_at, expires_at, revoked_at, tools FROM clients";
constexpr char kSelectPlugins[] =
    "SELECT id, name, type, enabled, valves, created_at, updated_at FROM plugins";
constexpr char kSelectKeys[] =
    "SELECT client_id, sha256_hex, prefix, created_at, expires_at, revoked_at FROM keys";

int64_t nowSeconds() { return static_cast<int64_t>(std::time(nullptr)); }

std::string joinModels(const std::vector<std::string>& models) {
  std::string out;
  for (size_t i = 0; i < models.size(); ++i) {
    if (i > 0) out.push_back('\n');
    out += models[i];
  }
  return out;
}

std::vector<std::string> splitModels(const std::string& text) {
  std::vector<std::string> out;
  if (text.empty()) return out;
  size_t start = 0;
  while (true) {
    size_t nl = text.find('\n', start);
    out.push_back(text.substr(start, nl == std::string::npos ? std::string::npos : nl - start));
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return out;
}

// fsync(2) on a directory makes the entries created in it durable. SQLite
// does this for the -wal file it creates, but not for directories or a main
// database file created outside it; without it a power cut soon after the
// first start could lose the whole database, acknowledged writes included.
bool syncDir(const std::string& dir, std::string* error) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) {
    *error = "cannot sync directory " + dir + ": " + std::strerror(errno);
    if (fd >= 0) ::close(fd);
    return false;
  }
  ::close(fd);
  return true;
}

std::string parentDir(const std::string& path) {
  size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates `dir` and any missing parents with mode 0700. Existing
// directories keep their mode: the operator may have chosen it.
bool makeDirs(const std::string& dir, std::string* error) {
  std::string path;
  size_t pos = 0;
  while (pos <= dir.size()) {
    size_t slash = dir.find('/', pos);
    if (slash == std::string::npos) slash = dir.size();
    path = dir.substr(0, slash);
    pos = slash + 1;
    if (path.empty()) continue;  // the leading '/' of an absolute path
    if (::mkdir(path.c_str(), 0700) == 0) {
      if (!syncDir(parentDir(path), error)) return false;
    } else if (errno != EEXIST) {
      *error = "cannot create data directory " + path + ": " + std::strerror(errno);
      return false;
    }
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) {
    *error = "cannot use data directory " + dir + ": " + std::strerror(errno);
    return false;
  }
  if (!S_ISDIR(st.st_mode)) {
    *error = "data directory " + dir + " exists but is not a directory";
    return false;
  }
  return true;
}

class SqliteStore : public Store {
 public:
  SqliteStore(sqlite3* db, std::string path) : db_(db), path_(std::move(path)) {}
  ~SqliteStore() override { sqlite3_close_v2(db_); }

  bool registerClient(const std::string& name, const std::string& description, Scopes scopes,
                      const ClientLimits& limits, int64_t expires_at, IssuedKey* out,
                      std::string* error, bool* conflict) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    bool no_conflict;
    if (conflict == nullptr) conflict = &no_conflict;
    *conflict = false;
    // Without `out` the key would be committed but lost: refuse up front.
    if (out == nullptr) {
      *error = "internal error: no place to return the key";
      return false;
    }

    if (!validateName(name, error)) return false;
    std::optional<size_t> desc_len = utf8Length(description);
    if (!desc_len || *desc_len > kMaxDescriptionChars) {
      *error = "description must be at most 500 characters of valid UTF-8";
      return false;
    }
    if (!validateScopes(scopes, error) || !validateLimits(limits, error)) return false;
    int64_t now = nowSeconds();
    if (expires_at < 0 || (expires_at != 0 && expires_at <= now)) {
      *error = "expires_at must be 0 (never) or a time in the future";
      return false;
    }

    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    std::string existing_id;
    int rc = findByName(name, &existing_id);
    if (rc == SQLITE_ROW) {
      *conflict = true;
      *error = "a client named \"" + name + "\" already exists";
      return false;
    }
    if (rc != SQLITE_DONE) return dbError(error);

    std::string id;
    if (!newClientId(&id, error)) return false;
    Stmt ins(db_,
             "INSERT INTO clients (id, name, description, scopes, rpm, tpm, max_concurrent, "
             "allowed_models, source, created_at, expires_at, revoked_at, tools) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'api', ?9, ?10, 0, ?11)");
    ins.bind(1, id)
        .bind(2, name)
        .bind(3, description)
        .bind(4, static_cast<int64_t>(scopes))
        .bind(5, static_cast<int64_t>(limits.rpm))
        .bind(6, static_cast<int64_t>(limits.tpm))
        .bind(7, static_cast<int64_t>(limits.max_concurrent))
        .bind(8, joinModels(limits.allowed_models))
        .bind(9, now)
        .bind(10, expires_at)
        .bind(11, joinModels(limits.tools));
    if (ins.step() != SQLITE_DONE) return dbError(error);

    std::string key;
    if (!insertNewKey(id, now, &key, error)) return false;
    if (!bumpVersion(error)) return false;
    std::optional<ClientRecord> record = loadClient(id);
    if (!record) return dbError(error);
    if (!txn.commit()) return dbError(error);

    out->key = std::move(key);
    out->client = std::move(*record);
    return true;
  }

  bool upsertConfigClient(const std::string& name, const std::string& key, Scopes scopes,
                          std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    if (!validateName(name, error) || !validateScopes(scopes, error)) return false;
    // Whitespace is rejected rather than trimmed: a key read with a trailing
    // newline would otherwise be stored as a hash nobody can ever present.
    // The message never quotes the key.
    bool key_ok = !key.empty() && key.size() <= kMaxConfigKeyLen;
    for (char c : key) {
      unsigned char u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) key_ok = false;
    }
    if (!key_ok) {
      *error = "the key for client \"" + name +
               "\" must be 1-1024 characters without spaces or control characters";
      return false;
    }
    const std::string hash = crypto::sha256Hex(key);
    int64_t now = nowSeconds();

    // Runs at every start: the common case reads a few rows and changes
    // nothing, which commits without writing (no fsync, no version bump).
    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    bool changed = false;

    Stmt find(db_,
              "SELECT id, source, scopes, expires_at, revoked_at FROM clients WHERE name = ?1");
    find.bind(1, name);
    int rc = find.step();
    std::string id;
    if (rc == SQLITE_DONE) {
      if (!newClientId(&id, error)) return false;
      Stmt ins(db_,
               "INSERT INTO clients (id, name, description, scopes, source, created_at) "
               "VALUES (?1, ?2, '', ?3, 'config', ?4)");
      ins.bind(1, id).bind(2, name).bind(3, static_cast<int64_t>(scopes)).bind(4, now);
      if (ins.step() != SQLITE_DONE) return dbError(error);
      changed = true;
    } else if (rc == SQLITE_ROW) {
      id = find.text(0);
      if (find.text(1) != "config") {
        // Refusing is safer than attaching an operator key (and new scopes)
        // to a client someone registered through the API.
        *error =
            "a client named \"" + name + "\" already exists and was registered through the API";
        return false;
      }
      // The config file is the authority for config clients: their scopes
      // follow it and, while listed there, they are active.
      if (static_cast<Scopes>(find.int64(2)) != scopes || find.int64(3) != 0 ||
          find.int64(4) != 0) {
        Stmt upd(db_,
                 "UPDATE clients SET scopes = ?2, expires_at = 0, revoked_at = 0 WHERE id = ?1");
        upd.bind(1, id).bind(2, static_cast<int64_t>(scopes));
        if (upd.step() != SQLITE_DONE) return dbError(error);
        changed = true;
      }
    } else {
      return dbError(error);
    }

    Stmt key_row(
        db_, "SELECT client_id, source, expires_at, revoked_at FROM keys WHERE sha256_hex = ?1");
    key_row.bind(1, hash);
    rc = key_row.step();
    if (rc == SQLITE_ROW) {
      if (key_row.text(0) != id) {
        *error = "the key for client \"" + name + "\" is already in use by another client";
        return false;
      }
      if (key_row.text(1) != "config" || key_row.int64(2) != 0 || key_row.int64(3) != 0) {
        Stmt upd(db_,
                 "UPDATE keys SET source = 'config', expires_at = 0, revoked_at = 0 "
                 "WHERE sha256_hex = ?1");
        upd.bind(1, hash);
        if (upd.step() != SQLITE_DONE) return dbError(error);
        changed = true;
      }
    } else if (rc == SQLITE_DONE) {
      Stmt ins(db_,
               "INSERT INTO keys (sha256_hex, client_id, prefix, source, created_at) "
               "VALUES (?1, ?2, ?3, 'config', ?4)");
      ins.bind(1, hash).bind(2, id).bind(3, crypto::keyPrefix(key)).bind(4, now);
      if (ins.step() != SQLITE_DONE) return dbError(error);
      changed = true;
    } else {
      return dbError(error);
    }

    // "Replaces": a key the config used to name for this client stops
    // working once the config names another. Revoked, not deleted, so the
    // listing still shows what happened.
    Stmt old(db_,
             "UPDATE keys SET revoked_at = ?3 WHERE client_id = ?1 AND source = 'config' "
             "AND sha256_hex <> ?2 AND revoked_at = 0");
    old.bind(1, id).bind(2, hash).bind(3, now);
    if (old.step() != SQLITE_DONE) return dbError(error);
    if (sqlite3_changes(db_) > 0) changed = true;

    if (changed && !bumpVersion(error)) return false;
    if (!txn.commit()) return dbError(error);
    return true;
  }

  std::vector<ClientRecord> listClients() override {
    std::vector<ClientRecord> out;
    std::string error;
    if (!listClientsChecked(&out, &error)) out.clear();
    return out;
  }

  bool listClientsChecked(std::vector<ClientRecord>* out, std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    out->clear();
    std::map<std::string, size_t> index;
    // One read transaction so clients and keys come from the same snapshot.
    if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return dbError(error);
    bool ok = true;
    {
      Stmt q(db_, std::string(kSelectClients) + " ORDER BY created_at, name");
      int rc;
      while ((rc = q.step()) == SQLITE_ROW) {
        index[q.text(0)] = out->size();
        out->push_back(clientFromRow(q));
      }
      if (rc != SQLITE_DONE) ok = dbError(error);
      Stmt k(db_, std::string(kSelectKeys) + " ORDER BY client_id, created_at, rowid");
      while (ok && (rc = k.step()) == SQLITE_ROW) {
        auto it = index.find(k.text(0));
        if (it != index.end()) (*out)[it->second].keys.push_back(keyFromRow(k));
      }
      if (ok && rc != SQLITE_DONE) ok = dbError(error);
    }
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    if (!ok) out->clear();
    return ok;
  }

  std::optional<ClientRecord> getClient(const std::string& id_or_name) override {
    if (sqlite3_exec(db_, "BEGIN", nullptr, nullptr, nullptr) != SQLITE_OK) return std::nullopt;
    std::optional<ClientRecord> record;
    std::string id;
    if (resolve(id_or_name, &id) == SQLITE_ROW) record = loadClient(id);
    sqlite3_exec(db_, "COMMIT", nullptr, nullptr, nullptr);
    return record;
  }

  bool revokeClient(const std::string& id_or_name, std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    int64_t now = nowSeconds();
    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    std::string id;
    int rc = resolve(id_or_name, &id);
    if (rc == SQLITE_DONE) {
      *error = "no client \"" + id_or_name + "\"";
      return false;
    }
    if (rc != SQLITE_ROW) return dbError(error);

    int changes = 0;
    Stmt c(db_, "UPDATE clients SET revoked_at = ?2 WHERE id = ?1 AND revoked_at = 0");
    c.bind(1, id).bind(2, now);
    if (c.step() != SQLITE_DONE) return dbError(error);
    changes += sqlite3_changes(db_);
    Stmt k(db_, "UPDATE keys SET revoked_at = ?2 WHERE client_id = ?1 AND revoked_at = 0");
    k.bind(1, id).bind(2, now);
    if (k.step() != SQLITE_DONE) return dbError(error);
    changes += sqlite3_changes(db_);

    // Revoking a revoked client succeeds without a change, so the version
    // (which data planes watch) only moves when something did.
    if (changes > 0 && !bumpVersion(error)) return false;
    if (!txn.commit()) return dbError(error);
    return true;
  }

  bool rotateKey(const std::string& id_or_name, int64_t overlap_seconds, IssuedKey* out,
                 std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    if (out == nullptr) {
      *error = "internal error: no place to return the key";
      return false;
    }
    int64_t now = nowSeconds();
    if (overlap_seconds < 0 || overlap_seconds > std::numeric_limits<int64_t>::max() - now) {
      *error = "overlap must be a non-negative number of seconds";
      return false;
    }
    int64_t deadline = now + overlap_seconds;

    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    std::string id;
    int rc = resolve(id_or_name, &id);
    if (rc == SQLITE_DONE) {
      *error = "no client \"" + id_or_name + "\"";
      return false;
    }
    if (rc != SQLITE_ROW) return dbError(error);
    {
      Stmt st(db_, "SELECT revoked_at FROM clients WHERE id = ?1");
      st.bind(1, id);
      if (st.step() != SQLITE_ROW) return dbError(error);
      if (st.int64(0) != 0) {
        *error = "client \"" + id_or_name + "\" is revoked";
        return false;
      }
    }

    std::string key;
    if (!insertNewKey(id, now, &key, error)) return false;
    // Active keys get the overlap as their remaining life, unless they were
    // already due to expire sooner: a rotation never extends a key.
    Stmt upd(db_,
             "UPDATE keys SET expires_at = ?3 WHERE client_id = ?1 AND sha256_hex <> ?2 "
             "AND revoked_at = 0 AND (expires_at = 0 OR expires_at > ?3)");
    upd.bind(1, id).bind(2, crypto::sha256Hex(key)).bind(3, deadline);
    if (upd.step() != SQLITE_DONE) return dbError(error);
    if (!bumpVersion(error)) return false;
    std::optional<ClientRecord> record = loadClient(id);
    if (!record) return dbError(error);
    if (!txn.commit()) return dbError(error);

    out->key = std::move(key);
    out->client = std::move(*record);
    return true;
  }

  bool upsertPlugin(const PluginRecord& p, std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    PluginRecord rec = p;
    if (rec.name.empty()) rec.name = rec.id;
    if (!validatePlugin(rec, error)) return false;
    std::string valves;
    if (!canonicalValves(rec.valves_json.empty() ? "{}" : rec.valves_json, &valves, error)) {
      return false;
    }
    int64_t now = nowSeconds();
    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    int rc;
    std::string old_name, old_type;
    {
      Stmt find(db_, "SELECT name, type FROM plugins WHERE id = ?1");
      find.bind(1, rec.id);
      rc = find.step();
      if (rc == SQLITE_ROW) {
        old_name = find.text(0);
        old_type = find.text(1);
      }
    }
    if (rc == SQLITE_ROW) {
      if (old_name == rec.name && old_type == rec.type) return txn.commit() || dbError(error);
      Stmt upd(db_, "UPDATE plugins SET name = ?2, type = ?3, updated_at = ?4 WHERE id = ?1");
      upd.bind(1, rec.id).bind(2, rec.name).bind(3, rec.type).bind(4, now);
      if (upd.step() != SQLITE_DONE) return dbError(error);
    } else if (rc == SQLITE_DONE) {
      Stmt ins(db_,
               "INSERT INTO plugins (id, name, type, enabled, valves, created_at, updated_at) "
               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)");
      ins.bind(1, rec.id)
          .bind(2, rec.name)
          .bind(3, rec.type)
          .bind(4, static_cast<int64_t>(rec.enabled ? 1 : 0))
          .bind(5, valves)
          .bind(6, now);
      if (ins.step() != SQLITE_DONE) return dbError(error);
    } else {
      return dbError(error);
    }
    if (!bumpVersion(error)) return false;
    if (!txn.commit()) return dbError(error);
    return true;
  }

  std::vector<PluginRecord> listPlugins() override {
    std::vector<PluginRecord> out;
    Stmt q(db_, std::string(kSelectPlugins) + " ORDER BY id");
    while (q.step() == SQLITE_ROW) out.push_back(pluginFromRow(q));
    return out;
  }

  std::optional<PluginRecord> getPlugin(const std::string& id) override {
    Stmt q(db_, std::string(kSelectPlugins) + " WHERE id = ?1");
    q.bind(1, id);
    if (q.step() != SQLITE_ROW) return std::nullopt;
    return pluginFromRow(q);
  }

  bool setPluginEnabled(const std::string& id, bool enabled, PluginRecord* out, std::string* error,
                        bool* not_found) override {
    return updatePlugin(id, "enabled", std::to_string(enabled ? 1 : 0), true, out, error,
                        not_found);
  }

  bool setPluginValves(const std::string& id, const std::string& json, PluginRecord* out,
                       std::string* error, bool* not_found) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    bool nf;
    if (not_found == nullptr) not_found = &nf;
    *not_found = false;
    std::string valves;
    if (!canonicalValves(json, &valves, error)) return false;
    return updatePlugin(id, "valves", valves, false, out, error, not_found);
  }

  uint64_t version() override {
    Stmt q(db_, "SELECT value FROM meta WHERE key = 'version'");
    return q.step() == SQLITE_ROW ? static_cast<uint64_t>(q.int64(0)) : 0;
  }

 private:
  static ClientRecord clientFromRow(const Stmt& q) {
    ClientRecord r;
    r.id = q.text(0);
    r.name = q.text(1);
    r.description = q.text(2);
    r.scopes = static_cast<Scopes>(q.int64(3));
    r.limits.rpm = static_cast<uint32_t>(q.int64(4));
    r.limits.tpm = static_cast<uint32_t>(q.int64(5));
    r.limits.max_concurrent = static_cast<uint32_t>(q.int64(6));
    r.limits.allowed_models = splitModels(q.text(7));
    r.source = q.text(8);
    r.created_at = q.int64(9);
    r.expires_at = q.int64(10);
    r.revoked_at = q.int64(11);
    r.limits.tools = splitModels(q.text(12));
    return r;
  }

  static PluginRecord pluginFromRow(const Stmt& q) {
    PluginRecord r;
    r.id = q.text(0);
    r.name = q.text(1);
    r.type = q.text(2);
    r.enabled = q.int64(3) != 0;
    r.valves_json = q.text(4);
    r.created_at = q.int64(5);
    r.updated_at = q.int64(6);
    return r;
  }

  // Sets one column of a plugin (`column` is a fixed name from this file,
  // never caller input). Bumps the version only when the value changed.
  bool updatePlugin(const std::string& id, const char* column, const std::string& value,
                    bool as_integer, PluginRecord* out, std::string* error, bool* not_found) {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    bool nf;
    if (not_found == nullptr) not_found = &nf;
    *not_found = false;
    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    Stmt upd(db_, std::string("UPDATE plugins SET ") + column +
                      " = ?2, updated_at = ?3 WHERE id = ?1 AND " + column + " IS NOT ?2");
    upd.bind(1, id);
    if (as_integer) {
      upd.bind(2, static_cast<int64_t>(std::stoll(value)));
    } else {
      upd.bind(2, value);
    }
    upd.bind(3, nowSeconds());
    if (upd.step() != SQLITE_DONE) return dbError(error);
    bool changed = sqlite3_changes(db_) > 0;
    std::optional<PluginRecord> rec = getPlugin(id);
    if (!rec) {
      *not_found = true;
      *error = "no plugin \"" + id + "\"";
      return false;
    }
    if (changed && !bumpVersion(error)) return false;
    if (!txn.commit()) return dbError(error);
    if (out) *out = std::move(*rec);
    return true;
  }

  bool addLoggedOutSessions(const std::vector<LoggedOutSession>& sessions, int64_t now_s,
                            size_t* added, std::string* error) override {
    std::string scratch;
    if (error == nullptr) error = &scratch;
    size_t count = 0;
    Transaction txn(db_);
    if (!txn.begin()) return dbError(error);
    Stmt prune(db_, "DELETE FROM logged_out_sessions WHERE expires_at <= ?1");
    prune.bind(1, now_s);
    if (prune.step() != SQLITE_DONE) return dbError(error);
    Stmt have(db_, "SELECT COUNT(*) FROM logged_out_sessions");
    if (have.step() != SQLITE_ROW) return dbError(error);
    size_t kept = static_cast<size_t>(have.int64(0));
    for (const auto& s : sessions) {
      if (s.expires_at <= now_s || s.expires_at > now_s + kMaxSessionLifetimeSeconds) continue;
      if (s.token_sha256_hex.size() != 64 ||
          s.token_sha256_hex.find_first_not_of("0123456789abcdef") != std::string::npos) {
        continue;
      }
      Stmt known(db_, "SELECT 1 FROM logged_out_sessions WHERE token_sha256_hex = ?1");
      known.bind(1, s.token_sha256_hex);
      int rc = known.step();
      if (rc == SQLITE_ROW) continue;
      if (rc != SQLITE_DONE) return dbError(error);
      if (kept >= kMaxLoggedOutSessions) {
        Stmt soonest(db_,
                     "SELECT token_sha256_hex, expires_at FROM logged_out_sessions ORDER BY "
                     "expires_at LIMIT 1");
        if (soonest.step() != SQLITE_ROW) return dbError(error);
        if (s.expires_at <= soonest.int64(1)) continue;
        Stmt evict(db_, "DELETE FROM logged_out_sessions WHERE token_sha256_hex = ?1");
        evict.bind(1, soonest.text(0));
        if (evict.step() != SQLITE_DONE) return dbError(error);
        --kept;
      }
      Stmt ins(db_,
               "INSERT INTO logged_out_sessions (token_sha256_hex, expires_at) VALUES (?1, ?2)");
      ins.bind(1, s.token_sha256_hex).bind(2, s.expires_at);
      if (ins.step() != SQLITE_DONE) return dbError(error);
      ++kept;
      ++count;
    }
    if (count > 0 && !bumpVersion(error)) return false;
    if (!txn.commit()) return dbError(error);
    if (added) *added = count;
    return true;
  }

  bool listLoggedOutSessions(int64_t now_s, std::vector<LoggedOutSession>* out,
                             std::string* error) override {
    out->clear();
    Stmt q(db_,
           "SELECT token_sha256_hex, expires_at FROM logged_out_sessions WHERE expires_at > ?1 "
           "ORDER BY expires_at, token_sha256_hex");
    q.bind(1, now_s);
    int rc;
    while ((rc = q.step()) == SQLITE_ROW) out->push_back({q.text(0), q.int64(1)});
    if (rc != SQLITE_DONE) return dbError(error);
    return true;
  }

  static KeyRecord keyFromRow(const Stmt& k) {
    KeyRecord r;
    r.sha256_hex = k.text(1);
    r.prefix = k.text(2);
    r.created_at = k.int64(3);
    r.expires_at = k.int64(4);
    r.revoked_at = k.int64(5);
    return r;
  }

  // Sets `*error` from the connection's last error and returns false. The
  // message names the database file so an operator knows where to look.
  bool dbError(std::string* error) {
    *error = "database error in " + path_ + ": " + sqlite3_errmsg(db_);
    return false;
  }

  int findByName(const std::string& name, std::string* id) {
    Stmt q(db_, "SELECT id FROM clients WHERE name = ?1");
    q.bind(1, name);
    int rc = q.step();
    if (rc == SQLITE_ROW) *id = q.text(0);
    return rc;
  }

  // Id first, then name. Names of id form are refused at registration, so
  // the two cannot collide for clients this code created.
  int resolve(const std::string& id_or_name, std::string* id) {
    Stmt q(db_, "SELECT id FROM clients WHERE id = ?1");
    q.bind(1, id_or_name);
    int rc = q.step();
    if (rc == SQLITE_ROW) {
      *id = q.text(0);
      return rc;
    }
    if (rc != SQLITE_DONE) return rc;
    return findByName(id_or_name, id);
  }

  std::optional<ClientRecord> loadClient(const std::string& id) {
    Stmt q(db_, std::string(kSelectClients) + " WHERE id = ?1");
    q.bind(1, id);
    if (q.step() != SQLITE_ROW) return std::nullopt;
    ClientRecord r = clientFromRow(q);
    Stmt k(db_, std::string(kSelectKeys) + " WHERE client_id = ?1 ORDER BY created_at, rowid");
    k.bind(1, id);
    int rc;
    while ((rc = k.step()) == SQLITE_ROW) r.keys.push_back(keyFromRow(k));
    if (rc != SQLITE_DONE) return std::nullopt;
    return r;
  }

  // 64 random bits make a collision unlikely, not impossible; checking costs
  // one indexed read inside the transaction we already hold.
  bool newClientId(std::string* id, std::string* error) {
    for (int attempt = 0; attempt < 8; ++attempt) {
      *id = "cl_" + crypto::internal::randomHex(8);
      Stmt q(db_, "SELECT 1 FROM clients WHERE id = ?1");
      q.bind(1, *id);
      int rc = q.step();
      if (rc == SQLITE_DONE) return true;
      if (rc != SQLITE_ROW) return dbError(error);
    }
    *error = "could not allocate a unique client id";
    return false;
  }

  // Generates a key, stores its hash and prefix, and hands the key back.
  bool insertNewKey(const std::string& client_id, int64_t now, std::string* key,
                    std::string* error) {
    *key = crypto::generateApiKey();
    Stmt ins(db_,
             "INSERT INTO keys (sha256_hex, client_id, prefix, source, created_at) "
             "VALUES (?1, ?2, ?3, 'api', ?4)");
    ins.bind(1, crypto::sha256Hex(*key))
        .bind(2, client_id)
        .bind(3, crypto::keyPrefix(*key))
        .bind(4, now);
    if (ins.step() != SQLITE_DONE) {
      key->clear();
      return dbError(error);
    }
    return true;
  }

  bool bumpVersion(std::string* error) {
    Stmt u(db_, "UPDATE meta SET value = value + 1 WHERE key = 'version'");
    if (u.step() != SQLITE_DONE || sqlite3_changes(db_) != 1) return dbError(error);
    return true;
  }

  sqlite3* db_;
  std::string path_;
};

// Returns the single text result of a PRAGMA, or nullopt with `*error` set.
std::optional<std::string> pragmaValue(sqlite3* db, const std::string& path, const char* sql,
                                       std::string* error) {
  Stmt q(db, sql);
  int rc = q.step();
  if (rc == SQLITE_ROW) return q.text(0);
  *error = "database error in " + path + ": " + sqlite3_errmsg(db);
  return std::nullopt;
}

}  // namespace

std::unique_ptr<Store> openSqliteStore(const std::string& data_dir, std::string* error) {
  std::string scratch;
  if (error == nullptr) error = &scratch;
  if (data_dir.empty()) {
    *error = "data directory is empty";
    return nullptr;
  }
  if (!makeDirs(data_dir, error)) return nullptr;
  const std::string path = data_dir + "/edge.db";

  // Create the file ourselves so it starts as 0600 whatever the umask;
  // SQLite gives the -wal and -shm files the database file's mode.
  bool created = true;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST) {
    created = false;
    fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  }
  if (fd < 0) {
    *error = "cannot open " + path + ": " + std::strerror(errno);
    return nullptr;
  }
  ::close(fd);
  if (created && !syncDir(data_dir, error)) return nullptr;

  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  // From here the connection is owned by `db` and closed on every return.
  std::unique_ptr<sqlite3, int (*)(sqlite3*)> db(raw, sqlite3_close_v2);
  if (rc != SQLITE_OK) {
    *error = "cannot open " + path + ": " + (raw ? sqlite3_errmsg(raw) : sqlite3_errstr(rc));
    return nullptr;
  }
  sqlite3_extended_result_codes(db.get(), 1);
  // Other processes (the CLI, a second daemon) may hold the write lock for a
  // moment; wait for it instead of failing with SQLITE_BUSY.
  sqlite3_busy_timeout(db.get(), kBusyTimeoutMs);

  // journal_mode answers with the mode in effect: anything but "wal" (for
  // example on a filesystem without shared memory) is refused, because the
  // durability argument above relies on WAL + synchronous=FULL.
  std::optional<std::string> mode = pragmaValue(db.get(), path, "PRAGMA journal_mode=WAL", error);
  if (!mode) return nullptr;
  if (*mode != "wal") {
    *error = "cannot use " + path + ": SQLite refused WAL mode (journal_mode is " + *mode + ")";
    return nullptr;
  }
  if (!execOrError(db.get(), path, "PRAGMA synchronous=FULL", error) ||
      !execOrError(db.get(), path, "PRAGMA foreign_keys=ON", error)) {
    return nullptr;
  }
  std::optional<std::string> fk = pragmaValue(db.get(), path, "PRAGMA foreign_keys", error);
  if (!fk) return nullptr;
  if (*fk != "1") {
    *error = "cannot use " + path + ": this SQLite does not enforce foreign keys";
    return nullptr;
  }
  if (!migrate(db.get(), path, error)) return nullptr;
  return std::make_unique<SqliteStore>(db.release(), path);
}

}  // namespace eldric::controlplane::internal
