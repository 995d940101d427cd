// eldric-controlplane's command line. See server.h.

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "common/address.h"
#include "common/config/flag_parser.h"
#include "controlplane/server.h"

namespace eldric::controlplane {

const char* usage() {
  return R"(eldric-controlplane: serves configuration snapshots to a farm of eldric-edge
data planes, keeps the client registry, and sums the farm's usage for
farm-wide rate limits.

Usage: eldric-controlplane --config FILE [flags]
       eldric-controlplane [flags] -- EDGE-FLAGS
  --config FILE          the Edge JSON config (same schema as eldric-edge's
                         --config) that every data plane is served; required
  --listen ADDR:PORT     gRPC listen address (default 127.0.0.1:8870;
                         "[::]:8870" for IPv6, port 0 picks a free port)
  --data-dir DIR         registered clients, plugins (SQLite) and the session
                         signing key (default /var/lib/eldric-controlplane)
  --sync-interval-ms N   how often farm usage is pushed to the data planes
                         (default: the file's farm.sync_interval_ms, else 5000)
  --tls-cert FILE        serve TLS with this certificate chain (PEM) ...
  --tls-key FILE         ... and this private key (PEM)
  --client-ca FILE       require client certificates signed by this CA (mTLS)
  --allow-plaintext      serve without TLS on an address other than loopback
  --log-level LEVEL      debug, info, warn, error (default: the file's, else info)
  --member-token-fd N    require every call to carry the token read from
                         descriptor N (how a farm's primary Edge starts this
                         daemon for its members; see the README's "Farm")
  --parent-pid PID       exit when process PID (the primary Edge) does
  -- EDGE-FLAGS          eldric-edge's own flags instead of --config (the
                         primary passes its command line on this way)
  --help, --version

Without --tls-cert the server is plaintext, which it refuses to be on any
address but loopback unless --allow-plaintext says so (a private network). Snapshots carry the data planes' TLS private keys and key hashes;
anything beyond one host should use TLS, and --client-ca so that only your
data planes can subscribe.

Signals: SIGHUP re-reads the config file and pushes a new snapshot if it
changed; SIGTERM or SIGINT closes the streams (data planes keep serving on
their last snapshot and reconnect) and exits.

Examples:
  eldric-controlplane --config /etc/eldric/edge.json
  eldric-controlplane --config edge.json --listen 0.0.0.0:8870 \
      --tls-cert cp.pem --tls-key cp.key --client-ca farm-ca.pem
)";
}

namespace {

// HOST:PORT or [V6]:PORT with a port from 0 to 65535.
bool validListen(const std::string& s) {
  size_t colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  std::string host = s.substr(0, colon);
  if (host.front() == '[' && host.back() != ']') return false;
  std::string port = s.substr(colon + 1);
  if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return false;
  return std::stol(port) <= 65535;
}

// True if the listen address is on loopback only.
bool loopbackListen(const std::string& s) {
  size_t colon = s.rfind(':');
  return network::isLoopbackHost(colon == std::string::npos ? s : s.substr(0, colon));
}

// The token the primary Edge wrote into a pipe: one line, read whole, the
// descriptor closed after.
bool readTokenFd(const std::string& v, std::string* token, std::string* error) {
  char* end = nullptr;
  long fd = std::strtol(v.c_str(), &end, 10);
  if (*end || fd < 3 || fd > 1024) {
    *error = "flag --member-token-fd: expected a descriptor number from 3 (got \"" + v + "\")";
    return false;
  }
  std::string text;
  char buf[256];
  while (text.size() < 4096) {
    ssize_t n = read(static_cast<int>(fd), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  close(static_cast<int>(fd));
  text = text.substr(0, text.find('\n'));
  if (text.size() < 32) {
    *error = "flag --member-token-fd: descriptor " + v + " gave no token";
    return false;
  }
  *token = std::move(text);
  return true;
}

}  // namespace

bool parseCommandLine(int argc, char** argv, Options* out, std::string* error) {
  config::FlagParser flags(argc, argv);
  std::string arg;
  while (flags.next(&arg)) {
    if (arg == "--help" || arg == "-h") {
      out->help = true;
    } else if (arg == "--version") {
      out->version = true;
    } else if (arg == "--listen") {
      if (!flags.value(&out->listen, error)) return false;
      if (!validListen(out->listen)) {
        *error = "flag --listen: expected HOST:PORT, e.g. 127.0.0.1:8870 or [::]:8870 (got \"" +
                 out->listen + "\")";
        return false;
      }
    } else if (arg == "--config") {
      if (!flags.value(&out->config_file, error)) return false;
    } else if (arg == "--data-dir") {
      if (!flags.value(&out->data_dir, error)) return false;
    } else if (arg == "--sync-interval-ms") {
      std::string v;
      if (!flags.value(&v, error)) return false;
      char* end = nullptr;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (*end || n < 10 || n > 3600000) {
        *error =
            "flag --sync-interval-ms: must be an integer from 10 to 3600000 (got \"" + v + "\")";
        return false;
      }
      out->sync_interval_ms = n;
    } else if (arg == "--allow-plaintext") {
      out->allow_plaintext = true;
    } else if (arg == "--tls-cert") {
      if (!flags.value(&out->tls_cert, error)) return false;
    } else if (arg == "--tls-key") {
      if (!flags.value(&out->tls_key, error)) return false;
    } else if (arg == "--client-ca") {
      if (!flags.value(&out->client_ca, error)) return false;
    } else if (arg == "--log-level") {
      if (!flags.value(&out->log_level, error)) return false;
      if (out->log_level != "debug" && out->log_level != "info" && out->log_level != "warn" &&
          out->log_level != "error") {
        *error =
            "flag --log-level: must be debug, info, warn or error (got \"" + out->log_level + "\")";
        return false;
      }
    } else if (arg == "--member-token-fd") {
      std::string v;
      if (!flags.value(&v, error)) return false;
      if (!readTokenFd(v, &out->member_token, error)) return false;
    } else if (arg == "--parent-pid") {
      std::string v;
      if (!flags.value(&v, error)) return false;
      char* end = nullptr;
      long n = std::strtol(v.c_str(), &end, 10);
      if (*end || n <= 1) {
        *error = "flag --parent-pid: expected a process id (got \"" + v + "\")";
        return false;
      }
      out->parent_pid = static_cast<int>(n);
    } else if (arg == "--") {
      out->edge_args = flags.rest();
    } else if (arg.empty() || arg[0] != '-') {
      *error = "unexpected argument \"" + arg + "\" (see --help)";
      return false;
    } else {
      *error = "unknown flag " + arg + " (see --help)";
      return false;
    }
  }
  if (out->help || out->version) return true;
  if (out->tls_cert.empty() != out->tls_key.empty()) {
    *error = "TLS needs both --tls-cert and --tls-key";
    return false;
  }
  if (!out->client_ca.empty() && out->tls_cert.empty()) {
    *error = "--client-ca needs TLS: give --tls-cert and --tls-key too";
    return false;
  }
  if (out->tls_cert.empty() && !out->allow_plaintext && !loopbackListen(out->listen)) {
    *error = "--listen " + out->listen +
             " without --tls-cert would serve snapshots (TLS keys, key hashes) in plaintext beyond "
             "this host: "
             "give --tls-cert and --tls-key, or --allow-plaintext on a private network";
    return false;
  }
  if (out->config_file.empty() && out->edge_args.empty()) {
    *error =
        "missing --config FILE: the Edge JSON config that the data planes are served (see --help)";
    return false;
  }
  return true;
}

}  // namespace eldric::controlplane
