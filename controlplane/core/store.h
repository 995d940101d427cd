#pragma once

// The durable client registry: clients and their API keys, in SQLite (WAL,
// synchronous=FULL: a call that returned success survives kill -9 and
// power loss). Keys are stored only as SHA-256 hashes plus a short visible
// prefix. Used by the control plane daemon and, in standalone mode, linked
// into the data plane: it has no gRPC and no TLS library in it.
//
// Thread-compatible: one Store per thread, or external serialization.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/crypto.h"

namespace eldric::controlplane {

enum class Scope : uint32_t { Inference = 1, Admin = 2, Worker = 4, Router = 8 };
// Bit set of Scope values.
using Scopes = uint32_t;
std::string scopesToString(Scopes s);  // "inference,admin"
// Parses "inference", "admin", "worker", "router" (comma separated). False if unknown.
bool parseScopes(const std::string& text, Scopes* out);

struct ClientLimits {
  uint32_t rpm = 0;  // 0: the tier default
  uint32_t tpm = 0;
  uint32_t max_concurrent = 0;              // 0: unlimited
  std::vector<std::string> allowed_models;  // empty: all
  // Tool plugins offered (plugin ids or function names); empty: all,
  // {"none"}: none.
  std::vector<std::string> tools;
};

struct KeyRecord {
  std::string sha256_hex;  // 64 lowercase hex chars
  std::string prefix;      // first characters of the key, e.g. "sk-3f9a1b"
  int64_t created_at = 0;  // Unix seconds
  int64_t expires_at = 0;  // 0: never (set on rotation for the old key)
  int64_t revoked_at = 0;  // 0: not revoked
};

struct ClientRecord {
  std::string id;    // stable id, "cl_" + 16 hex
  std::string name;  // unique
  std::string description;
  Scopes scopes = static_cast<Scopes>(Scope::Inference);
  ClientLimits limits;
  // "config" for keys from the config file / flags (read-only through the
  // API), "api" for registered clients.
  std::string source = "api";
  int64_t created_at = 0;
  int64_t expires_at = 0;  // 0: never
  int64_t revoked_at = 0;  // 0: active
  std::vector<KeyRecord> keys;
};

// A plugin's state, kept as plain data for now: the data plane does not run
// plugins yet. Valves are the plugin's settings, a JSON object.
struct PluginRecord {
  std::string id;    // 1-64 of letters, digits, '.', '_' or '-'
  std::string name;  // display name; defaults to the id
  std::string type;  // "filter", "pipe", "action", ... (1-32 printable characters)
  bool enabled = false;
  std::string valves_json = "{}";  // always a JSON object, stored compact
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

// A web chat session logged out before its expiry (see Auth.logged_out_sessions).
struct LoggedOutSession {
  std::string token_sha256_hex;  // 64 lowercase hex chars
  int64_t expires_at = 0;        // Unix seconds
};
// How many live logged-out sessions the store keeps. Past it, a logout
// expiring later than the soonest kept one takes its place; one expiring
// sooner is not kept (a member that re-sends it changes nothing).
constexpr size_t kMaxLoggedOutSessions = 10000;
// A logout claiming an expiry further out than this is refused: no
// session lives that long (Auth.session_ttl is at most 30 days).
constexpr int64_t kMaxSessionLifetimeSeconds = 31 * 24 * 3600;

// A key handed out once, at registration or rotation.
struct IssuedKey {
  std::string key;  // "sk-" + 48 random base62 characters
  ClientRecord client;
};

class Store {
 public:
  // Opens (creating if needed) `<data_dir>/edge.db`. Returns null and sets
  // `error` if the directory or database cannot be used.
  static std::unique_ptr<Store> open(const std::string& data_dir, std::string* error);
  virtual ~Store() = default;

  // Errors are returned as false with `*error` set to a message fit for an
  // API client ("a client named \"x\" already exists"); `*conflict` is set
  // when the failure is a duplicate name.
  virtual bool registerClient(const std::string& name, const std::string& description,
                              Scopes scopes, const ClientLimits& limits, int64_t expires_at,
                              IssuedKey* out, std::string* error, bool* conflict) = 0;
  // Adds a client with a key the operator chose (config file, --api-key).
  // Idempotent by name: replaces that client's config-sourced key.
  virtual bool upsertConfigClient(const std::string& name, const std::string& key, Scopes scopes,
                                  std::string* error) = 0;
  virtual std::vector<ClientRecord> listClients() = 0;
  // As listClients(), but a database error is reported instead of giving
  // a short (or empty) list: a snapshot built from a short list would
  // revoke every key missing from it.
  virtual bool listClientsChecked(std::vector<ClientRecord>* out, std::string* error) = 0;
  // By id or name.
  virtual std::optional<ClientRecord> getClient(const std::string& id_or_name) = 0;
  // Marks the client and all its keys revoked. False if unknown.
  virtual bool revokeClient(const std::string& id_or_name, std::string* error) = 0;
  // A new key; the old active keys stay valid until now + overlap_seconds.
  virtual bool rotateKey(const std::string& id_or_name, int64_t overlap_seconds, IssuedKey* out,
                         std::string* error) = 0;
  // Plugins. Each change bumps version() like a client change does.
  // Creates the plugin, or updates its name and type (enabled and valves are
  // kept when it exists; `p.enabled` and `p.valves_json` seed a new one).
  virtual bool upsertPlugin(const PluginRecord& p, std::string* error) = 0;
  virtual std::vector<PluginRecord> listPlugins() = 0;
  virtual std::optional<PluginRecord> getPlugin(const std::string& id) = 0;
  // False with `*not_found` set when there is no such plugin. Setting the
  // state it already has succeeds without a change (and no version bump).
  virtual bool setPluginEnabled(const std::string& id, bool enabled, PluginRecord* out,
                                std::string* error, bool* not_found) = 0;
  // `json` must be a JSON object (at most 64 KiB); it is stored compact.
  // False with `*not_found` set when there is no such plugin, or with only
  // `*error` set when the JSON is not an object.
  virtual bool setPluginValves(const std::string& id, const std::string& json, PluginRecord* out,
                               std::string* error, bool* not_found) = 0;

  // Records logouts; those already expired, already kept, malformed or
  // over the bound are skipped. `*added` (if given) counts the new ones;
  // version() is bumped only when there are some. Expired entries are
  // removed on the way.
  virtual bool addLoggedOutSessions(const std::vector<LoggedOutSession>& sessions, int64_t now_s,
                                    size_t* added, std::string* error) = 0;
  // The logouts that have not expired at `now_s`, soonest expiry first.
  virtual bool listLoggedOutSessions(int64_t now_s, std::vector<LoggedOutSession>* out,
                                     std::string* error) = 0;

  // A monotonically increasing number, bumped by every successful change;
  // survives restarts.
  virtual uint64_t version() = 0;
};

}  // namespace eldric::controlplane
