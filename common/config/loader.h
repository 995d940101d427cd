#pragma once

// Standalone configuration: the seed's CLI flags and JSON file become one
// Snapshot. A flag overrides the file. Every problem is reported as an
// error naming the flag, the field (as a dotted path) or the file.

#include <string>
#include <vector>

#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::config {

struct CommandLine {
  std::string config_file;
  bool help = false;
  bool version = false;
  std::string log_level;  // empty: from file, else info
  // Raw flag values; empty / unset when not given.
  std::string port, http_port, bind, routers, cert, key, workers, mode, peers, api_key, access_log,
      control_plane, data_dir, control_plane_ca, control_plane_cert, control_plane_key, node_id,
      plugins_dir, farm_port;
  bool no_tls = false;
  bool primary = false;  // --primary: this member runs the farm's control plane
};

// Reads a whole file. On failure `*error` names `what` and the path
// ("tls.cert_file /etc/ssl/x.pem: No such file or directory").
bool readFile(const std::string& path, const std::string& what, std::string* out,
              std::string* error);

// An API key kept off the command line (which every local user can read in
// /proc): the first line of `path`, trailing blanks removed. `what` names
// the flag in errors.
bool readKeyFile(const std::string& path, const std::string& what, std::string* key,
                 std::string* error);

// A comma-separated list ("a, b,c"): items trimmed of spaces and tabs,
// empty ones dropped. Flags and eldricctl options use it.
std::vector<std::string> splitList(const std::string& s);

// Parses argv. Returns false with `*error` set for an unknown flag, a flag
// missing its value, ...
bool parseCommandLine(int argc, char** argv, CommandLine* out, std::string* error);
const char* usage();

// Farm mode: how this data plane reaches eldric-controlplane. Process
// options, not part of the Snapshot (the snapshot comes from there).
struct FarmOptions {
  bool enabled = false;
  std::vector<std::string> control_planes;   // "host:port", tried in order
  std::string ca_file, cert_file, key_file;  // TLS / mTLS to the control plane
  std::string node_id;
  // Where the other members reach this one to relay a tunnel forward
  // ("https://10.0.0.5:443"); empty: this member's main port at the address
  // the control plane sees it connect from. relay_ca_file: trust for the
  // other members' certificates when relaying over https (empty: the
  // control plane's CA file, else the system bundle).
  std::string relay_url;
  std::string relay_ca_file;
  uint64_t sync_interval_ms = 5000;
  // With the control plane unreachable: "local_share" enforces each tier
  // at limit / members (last known); "local_only" enforces the whole limit
  // on local counts (the farm may then admit members x limit).
  std::string offline_policy = "local_share";

  // The seed's form: no control_plane, the members named in `peers` (the
  // HTTPS host:port each serves on, this one among them or not). One
  // member, the primary, runs eldric-controlplane as its supervised child
  // on `port`; every member subscribes to it. See farm_plan.h.
  bool supervised = false;
  std::vector<std::string> peers;
  // "": not marked (farm_plan.h picks); "self": this member (--primary,
  // farm.primary: true); else the primary's name as the peers give it.
  std::string primary;
  int64_t port = kDefaultFarmPort;
  // The members' shared secret (first line); empty: derived from the TLS
  // private key every member holds.
  std::string secret_file;
  // Where eldric-controlplane is; empty: beside eldric-edge, then PATH.
  std::string controlplane_path;
  // This member as the peers name it: the port it serves on (HTTPS, or
  // HTTP with --no-tls), its bind address, and its TLS files (the farm
  // port's certificate, the members' pin and the derived secret; empty
  // with --no-tls).
  int64_t member_port = 0;
  std::string bind;
  std::string tls_cert_file, tls_key_file;
  // Filled in at start from the secret (pki::farmToken, common/pki/pki.h); never
  // logged.
  std::string member_token;
  // How many members the plan names: the equal share of a farm-wide limit
  // until the control plane says how many report.
  uint32_t planned_members = 0;
  static constexpr int64_t kDefaultFarmPort = 8870;
};

// The flags that give the same settings again (for the primary's control
// plane child), without the API key (which it passes in the environment,
// out of every local user's reach in /proc/<pid>/cmdline).
std::vector<std::string> commandLineArgs(const CommandLine& cli);

// tls.mode "acme": what the orderer (the control plane, or a standalone
// Edge's in-process core) asks the CA for. Not part of the Snapshot: the
// data planes only serve what comes of it (Snapshot.acme).
struct AcmeSettings {
  bool enabled = false;
  std::string directory_url = "https://acme-v02.api.letsencrypt.org/directory";
  std::string email;
  std::vector<std::string> domains;
  std::string key_type = "ecdsa-p256";  // or "rsa-2048"
  int64_t renew_before_days = 30;
  // Trust for the directory's certificate (a private CA); empty: the
  // system's roots.
  std::string ca_file;
  std::string challenge = "http-01";
  // After a failed attempt the next comes this long after, doubling up to
  // retry_max_s.
  int64_t retry_initial_s = 10;
  int64_t retry_max_s = 3600;
  // The HTTP port the challenges are answered on (the config's http_port),
  // for the orderer's own check before it asks the CA to validate.
  int64_t http_port = 80;
  // Whether an orderer started with `other` must start again for these.
  bool sameAs(const AcmeSettings& other) const;
};

struct LoadResult {
  edge::v1::Snapshot snapshot;
  FarmOptions farm;
  AcmeSettings acme;
  std::string log_level;
  // The plugins directory (plugins/<id>/manifest.json); empty: none. Read
  // by whoever owns the store (see controlplane/core/plugin_dir.h).
  std::string plugins_dir;
  // Things that are accepted but not acted on yet; logged at start.
  std::vector<std::string> warnings;
};

// Reads the file (if any), applies flags, validates, reads TLS material
// from disk. Returns false with `*error` set.
bool load(const CommandLine& cli, LoadResult* out, std::string* error);

// Parses JSON config text (with // and /* */ comments) into `out` as the
// file would be; exposed for tests.
bool loadFromText(const std::string& text, const std::string& source, const CommandLine& cli,
                  LoadResult* out, std::string* error);

}  // namespace eldric::config
