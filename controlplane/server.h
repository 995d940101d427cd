#pragma once

// eldric-controlplane: one gRPC server that serves Snapshots to every data
// plane over the SnapshotDiscovery stream, aggregates their usage reports
// into farm-wide counts, and answers the Admin service (eldricctl, and the
// admin REST calls that data planes forward). State lives in the embedded
// Store (SQLite, fsync on commit); the snapshot's static part comes from a
// config file in the Edge's own JSON schema. See README.md.

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace eldric::controlplane {

struct Options {
  std::string listen = "127.0.0.1:8870";
  // The Edge JSON config the snapshots are built from (required).
  std::string config_file;
  std::string data_dir = "/var/lib/eldric-controlplane";
  // 0: the file's farm.sync_interval_ms, else 5000.
  int64_t sync_interval_ms = 0;
  // TLS: both or neither. With client_ca, clients must present a
  // certificate signed by it (mTLS).
  std::string tls_cert, tls_key, client_ca;
  // Plaintext beyond loopback, knowingly (a private network).
  bool allow_plaintext = false;
  std::string log_level;  // empty: the file's log_level, else info
  // The Edge's own flags (after "--"), read like eldric-edge reads them:
  // how a farm's primary starts its control plane with its own settings.
  // `config_file` is then unused.
  std::vector<std::string> edge_args;
  // The members' token: every call must carry it (metadata
  // "eldric-farm-token"). Read from a descriptor the primary passes
  // (--member-token-fd), never the command line.
  std::string member_token;
  // Exit when this process (the primary Edge) does (--parent-pid).
  int parent_pid = 0;
  bool help = false;
  bool version = false;
};

// Parses argv. Returns false with `*error` set on a bad flag or value.
bool parseCommandLine(int argc, char** argv, Options* out, std::string* error);
const char* usage();

class ControlPlane {
 public:
  explicit ControlPlane(Options options);
  ~ControlPlane();
  ControlPlane(const ControlPlane&) = delete;
  ControlPlane& operator=(const ControlPlane&) = delete;

  // Loads the config, opens the store, builds the first snapshot and
  // starts serving. False with `*error` set (fit for the operator) if any
  // of that fails.
  bool start(std::string* error);
  // The bound port (useful with port 0).
  int port() const;
  // SIGHUP: re-reads the config file; pushes a new snapshot if the content
  // changed. On error the old config stays in force.
  bool reload(std::string* error);
  // Ends every stream (UNAVAILABLE, so data planes reconnect) and stops.
  void shutdown();
  // The version served now.
  std::string currentVersion() const;

  class Impl;  // internal (server_impl.h)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace eldric::controlplane
