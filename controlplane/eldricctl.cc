// eldricctl: the admin CLI over eldric-controlplane's Admin gRPC service.
// Run `eldricctl --help`.

#include <google/protobuf/util/json_util.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/security/credentials.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/config/farm_plan.h"
#include "common/config/loader.h"
#include "common/pki/pki.h"
#include "eldric/edge/v1/admin.grpc.pb.h"

namespace {

namespace v1 = eldric::edge::v1;
using eldric::config::readFile;
using eldric::config::readKeyFile;
using eldric::config::splitList;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;  // the control plane answered with an error
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

const char kUsage[] = R"(eldricctl: administer an Eldric Edge farm through its control plane.

Usage: eldricctl [global flags] COMMAND [arguments] [flags]

Clients (who may call the API; each has one or more API keys):
  clients register NAME [--description TEXT] [--scopes inference,admin,worker]
                        [--rpm N] [--tpm N] [--max-concurrent N]
                        [--models m1,m2] [--tools t1,t2|none]
                        [--expires-in SECONDS]
                        Register a client and print its API key. The key is
                        shown only this once: store it right away. --tools:
                        the tool plugins (ids or function names) it is
                        offered; default all, "none" for none.
  clients list          All clients: registered ones and those in the config file.
  clients get ID        One client (by id "cl_..." or by name), with its keys.
  clients revoke ID     Revoke a client: every data plane refuses its keys
                        as soon as it applies the next snapshot (normally
                        within a second).
  clients rotate ID [--overlap-seconds N]
                        Issue a new key; the old ones keep working for N
                        seconds (default: the config's rotation_overlap_seconds).

Plugins (state only for now):
  plugins list
  plugins enable ID
  plugins disable ID
  plugins valves ID [--set JSON]
                        Print a plugin's valves (its settings, a JSON object),
                        or replace them. --set @FILE reads the JSON from FILE.

Farm:
  farm status           The version the control plane serves, and every data
                        plane: connected or not, the version it ACKed, a
                        rejected (NACKed) version with the reason, its last
                        usage report and the upstreams as it sees them.

Global flags (anywhere on the line):
  --control-plane HOST:PORT  where eldric-controlplane listens (default:
                             $ELDRIC_CONTROL_PLANE, else 127.0.0.1:8870)
  --ca FILE             use TLS, trusting this CA (PEM) for the server certificate
  --tls                 use TLS, trusting the system's CAs
  --cert FILE --key FILE  client certificate and key (PEM), for a control plane
                        started with --client-ca (mTLS)
  --server-name NAME    the name expected in the server certificate, when it
                        differs from HOST
  --api-key-file FILE   the admin API key, read from FILE's first line (or set
                        $ELDRIC_API_KEY): every call needs a key with the admin
                        scope (from the config's auth.admin_keys, or a client
                        registered with --scopes ...,admin)
  --farm-key FILE       a farm started the seed's way (eldric-edge --peers): the
                        TLS key its members share (or --farm-secret-file FILE, its
                        farm.secret_file); its control plane is on a member's farm
                        port, e.g. --control-plane edge1:8870 --ca cert.pem
  --timeout SECONDS     give up after this long (default 10)
  --json                print JSON instead of tables
  --help                this text

Exit status: 0 success, 1 the control plane refused the request (unknown
client, invalid input, ...), 2 bad command line, 3 control plane unreachable.

Examples:
  export ELDRIC_API_KEY=sk-...   (an admin key)
  eldricctl clients register openwebui --description "Open WebUI" --rpm 600
  eldricctl clients register ops --scopes inference,admin
  eldricctl clients list
  eldricctl clients rotate openwebui --overlap-seconds 600
  eldricctl clients revoke openwebui
  eldricctl plugins valves pii-redactor --set '{"mask":"*"}'
  eldricctl --control-plane cp.internal:8870 --ca ca.pem \
      --cert admin.pem --key admin.key --api-key-file /root/admin.key farm status
)";

struct Args {
  std::string control_plane;
  std::string ca, cert, key, server_name;
  // A farm started the seed's way: the members' token, from the TLS key
  // they share or their secret file (pki::farmToken).
  std::string farm_key, farm_secret_file;
  bool tls = false;
  bool json = false;
  bool help = false;
  int timeout_s = 10;
  std::string api_key;  // --api-key-file, else $ELDRIC_API_KEY
  std::vector<std::string> positional;
  std::map<std::string, std::string> flags;  // command flags, without "--"
};

int usageError(const std::string& msg) {
  fprintf(stderr, "eldricctl: %s\n(see eldricctl --help)\n", msg.c_str());
  return kExitUsage;
}

bool parseArgs(int argc, char** argv, Args* a, std::string* error) {
  static const std::set<std::string> kBool = {"json", "tls", "help"};
  static const std::set<std::string> kGlobal = {"control-plane", "ca",          "cert",
                                                "key",           "server-name", "timeout",
                                                "api-key-file",  "farm-key",    "farm-secret-file"};
  static const std::set<std::string> kCommand = {"description",     "scopes", "rpm",   "tpm",
                                                 "max-concurrent",  "models", "tools", "expires-in",
                                                 "overlap-seconds", "set"};
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h") arg = "--help";
    if (arg.rfind("--", 0) != 0 || arg == "--") {
      a->positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
      has_value = true;
    }
    if (kBool.count(name)) {
      if (has_value) {
        *error = "flag --" + name + " takes no value";
        return false;
      }
      if (name == "json") a->json = true;
      if (name == "tls") a->tls = true;
      if (name == "help") a->help = true;
      continue;
    }
    if (!kGlobal.count(name) && !kCommand.count(name)) {
      *error = "unknown flag --" + name;
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        *error = "flag --" + name + " needs a value";
        return false;
      }
      value = argv[++i];
    }
    if (name == "control-plane") {
      a->control_plane = value;
    } else if (name == "ca") {
      a->ca = value;
    } else if (name == "cert") {
      a->cert = value;
    } else if (name == "key") {
      a->key = value;
    } else if (name == "server-name") {
      a->server_name = value;
    } else if (name == "farm-key") {
      a->farm_key = value;
    } else if (name == "farm-secret-file") {
      a->farm_secret_file = value;
    } else if (name == "api-key-file") {
      if (!readKeyFile(value, "flag --api-key-file", &a->api_key, error)) return false;
    } else if (name == "timeout") {
      char* end = nullptr;
      long n = strtol(value.c_str(), &end, 10);
      if (*end || n < 1 || n > 3600) {
        *error = "flag --timeout: must be a number of seconds from 1 to 3600";
        return false;
      }
      a->timeout_s = static_cast<int>(n);
    } else {
      a->flags[name] = value;
    }
  }
  return true;
}

// Rejects command flags the command does not take.
bool onlyFlags(const Args& a, std::initializer_list<const char*> allowed, const std::string& cmd,
               std::string* error) {
  for (const auto& [name, value] : a.flags) {
    bool ok = false;
    for (const char* f : allowed) ok = ok || name == f;
    if (!ok) {
      *error = "\"" + cmd + "\" does not take --" + name;
      return false;
    }
  }
  return true;
}

bool parseUint(const Args& a, const char* name, uint64_t max, uint64_t* out, std::string* error) {
  auto it = a.flags.find(name);
  if (it == a.flags.end()) return true;
  const std::string& v = it->second;
  char* end = nullptr;
  unsigned long long n = strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end || v[0] == '-' || n > max) {
    *error = std::string("flag --") + name + ": expected a whole number from 0 to " +
             std::to_string(max) + " (got \"" + v + "\")";
    return false;
  }
  *out = n;
  return true;
}

std::string formatTime(int64_t unix_s) {
  if (unix_s <= 0) return "-";
  time_t t = static_cast<time_t>(unix_s);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[32];
  strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%SZ", &tm);
  return buf;
}

std::string ago(int64_t unix_ms) {
  if (unix_ms <= 0) return "never";
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  int64_t s = (now - unix_ms) / 1000;
  if (s < 0) s = 0;
  if (s < 120) return std::to_string(s) + "s ago";
  if (s < 7200) return std::to_string(s / 60) + "m ago";
  if (s < 172800) return std::to_string(s / 3600) + "h ago";
  return std::to_string(s / 86400) + "d ago";
}

std::string join(const google::protobuf::RepeatedPtrField<std::string>& items,
                 const char* sep = ",") {
  std::string out;
  for (const auto& i : items) {
    if (!out.empty()) out += sep;
    out += i;
  }
  return out;
}

void printTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows) {
    if (width.size() < r.size()) width.resize(r.size(), 0);
    for (size_t i = 0; i < r.size(); ++i) width[i] = std::max(width[i], r[i].size());
  }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i) {
      line += r[i];
      if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 2, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    printf("%s\n", line.c_str());
  }
}

void printJson(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.always_print_primitive_fields = true;
  o.preserve_proto_field_names = true;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(m, &out, o);
  printf("%s", out.c_str());
  if (out.empty() || out.back() != '\n') printf("\n");
}

std::string clientStatus(const v1::Client& c) {
  if (c.revoked_at()) return "revoked";
  if (c.expires_at() && c.expires_at() <= time(nullptr)) return "expired";
  return "active";
}

std::string keyStatus(const v1::KeyInfo& k) {
  if (k.revoked_at()) return "revoked";
  if (k.expires_at() && k.expires_at() <= time(nullptr)) return "expired";
  if (k.expires_at()) return "active until " + formatTime(k.expires_at());
  return "active";
}

std::string limit(uint32_t v, const char* zero) { return v ? std::to_string(v) : zero; }

// Client.source says; a control plane older than that field sends none,
// and its config clients are the ones with a "cfg_" id.
bool isConfigClient(const v1::Client& c) {
  if (!c.source().empty()) return c.source() == "config";
  return c.id().rfind("cfg_", 0) == 0;
}

void printClient(const v1::Client& c) {
  std::vector<std::vector<std::string>> rows = {
      {"ID:", c.id()},
      {"Name:", c.name()},
      {"Source:", isConfigClient(c) ? "config file (read-only here)" : "registered"},
      {"Description:", c.description().empty() ? "-" : c.description()},
      {"Scopes:", join(c.scopes())},
      {"Requests/min:", limit(c.requests_per_minute(), "default")},
      {"Tokens/min:", limit(c.tokens_per_minute(), "default")},
      {"Max concurrent:", limit(c.max_concurrent_requests(), "default")},
      {"Models:", c.allowed_models().empty() ? "all" : join(c.allowed_models())},
      {"Tools:", c.tools().empty() ? "all tool plugins" : join(c.tools())},
      {"Created:", formatTime(c.created_at())},
      {"Expires:", c.expires_at() ? formatTime(c.expires_at()) : "never"},
      {"Status:", clientStatus(c)},
  };
  if (c.revoked_at()) rows.push_back({"Revoked:", formatTime(c.revoked_at())});
  printTable(rows);
  printf("Keys:\n");
  std::vector<std::vector<std::string>> keys = {{"  PREFIX", "CREATED", "STATUS"}};
  for (const auto& k : c.keys()) {
    keys.push_back({"  " + k.prefix() + "...", formatTime(k.created_at()), keyStatus(k)});
  }
  printTable(keys);
}

void printNewKey(const v1::ClientWithKey& r, const char* what) {
  printf("%s client \"%s\" (id %s).\n\n", what, r.client().name().c_str(), r.client().id().c_str());
  printf("API key (shown only this once; store it now):\n\n    %s\n\n", r.api_key().c_str());
}

class Cli {
 public:
  explicit Cli(Args a) : a_(std::move(a)) {}

  int run() {
    const auto& p = a_.positional;
    if (a_.help || p.empty() || p[0] == "help") {
      fputs(kUsage, stdout);
      return p.empty() && !a_.help ? kExitUsage : kExitOk;
    }
    std::string error;
    if (!connect(&error)) return usageError(error);
    std::string group = p[0];
    std::string cmd = p.size() > 1 ? p[1] : "";
    std::string full = group + (cmd.empty() ? "" : " " + cmd);
    auto args = [&](size_t n, const char* what) -> bool {
      if (p.size() != 2 + n) {
        error = "\"" + full + "\" takes " + what;
        return false;
      }
      return true;
    };
    if (group == "clients") {
      if (cmd == "register") {
        if (!args(1, "one argument: NAME") ||
            !onlyFlags(a_,
                       {"description", "scopes", "rpm", "tpm", "max-concurrent", "models", "tools",
                        "expires-in"},
                       full, &error)) {
          return usageError(error);
        }
        return clientsRegister(p[2]);
      }
      if (cmd == "list") {
        if (!args(0, "no arguments") || !onlyFlags(a_, {}, full, &error)) return usageError(error);
        return clientsList();
      }
      if (cmd == "get" || cmd == "revoke") {
        if (!args(1, "one argument: the client's id or name") || !onlyFlags(a_, {}, full, &error)) {
          return usageError(error);
        }
        return cmd == "get" ? clientsGet(p[2]) : clientsRevoke(p[2]);
      }
      if (cmd == "rotate") {
        if (!args(1, "one argument: the client's id or name") ||
            !onlyFlags(a_, {"overlap-seconds"}, full, &error)) {
          return usageError(error);
        }
        return clientsRotate(p[2]);
      }
      return usageError(cmd.empty() ? "clients: give register, list, get, revoke or rotate"
                                    : "unknown command \"clients " + cmd + "\"");
    }
    if (group == "plugins") {
      if (cmd == "list") {
        if (!args(0, "no arguments") || !onlyFlags(a_, {}, full, &error)) return usageError(error);
        return pluginsList();
      }
      if (cmd == "enable" || cmd == "disable") {
        if (!args(1, "one argument: the plugin id") || !onlyFlags(a_, {}, full, &error)) {
          return usageError(error);
        }
        return pluginsEnable(p[2], cmd == "enable");
      }
      if (cmd == "valves") {
        if (!args(1, "one argument: the plugin id") || !onlyFlags(a_, {"set"}, full, &error)) {
          return usageError(error);
        }
        return pluginsValves(p[2]);
      }
      return usageError(cmd.empty() ? "plugins: give list, enable, disable or valves"
                                    : "unknown command \"plugins " + cmd + "\"");
    }
    if (group == "farm") {
      if (cmd == "status") {
        if (!args(0, "no arguments") || !onlyFlags(a_, {}, full, &error)) return usageError(error);
        return farmStatus();
      }
      return usageError(cmd.empty() ? "farm: give status" : "unknown command \"farm " + cmd + "\"");
    }
    return usageError("unknown command \"" + group + "\"");
  }

 private:
  bool connect(std::string* error) {
    api_key_ = a_.api_key;
    if (api_key_.empty()) {
      const char* env = getenv("ELDRIC_API_KEY");
      if (env && *env) api_key_ = env;
    }
    target_ = a_.control_plane;
    if (target_.empty()) {
      const char* env = getenv("ELDRIC_CONTROL_PLANE");
      target_ = env && *env ? env : "127.0.0.1:8870";
    }
    if (a_.cert.empty() != a_.key.empty()) {
      *error = "a client certificate needs both --cert and --key";
      return false;
    }
    bool tls = a_.tls || !a_.ca.empty() || !a_.cert.empty();
    std::shared_ptr<grpc::ChannelCredentials> creds;
    if (tls) {
      grpc::SslCredentialsOptions o;
      if (!a_.ca.empty() && !readFile(a_.ca, "--ca", &o.pem_root_certs, error)) return false;
      if (!a_.cert.empty()) {
        if (!readFile(a_.cert, "--cert", &o.pem_cert_chain, error) ||
            !readFile(a_.key, "--key", &o.pem_private_key, error)) {
          return false;
        }
      }
      creds = grpc::SslCredentials(o);
    } else {
      creds = grpc::InsecureChannelCredentials();
    }
    if (!a_.farm_key.empty() || !a_.farm_secret_file.empty()) {
      if (!eldric::pki::farmToken(a_.farm_secret_file, a_.farm_key, &farm_token_, error))
        return false;
    }
    grpc::ChannelArguments args;
    if (!a_.server_name.empty()) args.SetSslTargetNameOverride(a_.server_name);
    tls_ = tls;
    stub_ = v1::Admin::NewStub(grpc::CreateCustomChannel(target_, creds, args));
    return true;
  }

  void prepare(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(a_.timeout_s));
    // Every Admin call needs an admin key; the server says so if missing.
    if (!api_key_.empty()) ctx->AddMetadata("authorization", "Bearer " + api_key_);
    if (!farm_token_.empty()) ctx->AddMetadata(eldric::config::kFarmTokenMetadata, farm_token_);
  }

  int fail(const grpc::Status& s) {
    if (s.error_code() == grpc::StatusCode::UNAVAILABLE ||
        s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      fprintf(stderr,
              "eldricctl: cannot reach the control plane at %s: %s\n"
              "Is eldric-controlplane running there? Set the address with --control-plane "
              "HOST:PORT or $ELDRIC_CONTROL_PLANE.\n%s",
              target_.c_str(), s.error_message().c_str(),
              tls_ ? "With TLS, check --ca (and --cert/--key if it requires client "
                     "certificates).\n"
                   : "If it serves TLS, pass --ca FILE (or --tls).\n");
      return kExitUnreachable;
    }
    const char* what = "error";
    switch (s.error_code()) {
      case grpc::StatusCode::NOT_FOUND:
        what = "not found";
        break;
      case grpc::StatusCode::INVALID_ARGUMENT:
        what = "invalid";
        break;
      case grpc::StatusCode::ALREADY_EXISTS:
        what = "already exists";
        break;
      case grpc::StatusCode::FAILED_PRECONDITION:
        what = "refused";
        break;
      case grpc::StatusCode::UNAUTHENTICATED:
      case grpc::StatusCode::PERMISSION_DENIED:
        what = "not allowed";
        break;
      default:
        break;
    }
    fprintf(stderr, "eldricctl: %s: %s\n", what, s.error_message().c_str());
    return kExitRefused;
  }

  int clientsRegister(const std::string& name) {
    v1::RegisterClientRequest req;
    req.set_name(name);
    std::string error;
    auto it = a_.flags.find("description");
    if (it != a_.flags.end()) req.set_description(it->second);
    it = a_.flags.find("scopes");
    if (it != a_.flags.end()) {
      for (const auto& s : splitList(it->second)) req.add_scopes(s);
    }
    it = a_.flags.find("models");
    if (it != a_.flags.end()) {
      for (const auto& m : splitList(it->second)) req.add_allowed_models(m);
    }
    it = a_.flags.find("tools");
    if (it != a_.flags.end()) {
      for (const auto& t : splitList(it->second)) req.add_tools(t);
    }
    uint64_t rpm = 0, tpm = 0, conc = 0, expires = 0;
    if (!parseUint(a_, "rpm", UINT32_MAX, &rpm, &error) ||
        !parseUint(a_, "tpm", UINT32_MAX, &tpm, &error) ||
        !parseUint(a_, "max-concurrent", UINT32_MAX, &conc, &error) ||
        !parseUint(a_, "expires-in", INT32_MAX * 100ULL, &expires, &error)) {
      return usageError(error);
    }
    req.set_requests_per_minute(static_cast<uint32_t>(rpm));
    req.set_tokens_per_minute(static_cast<uint32_t>(tpm));
    req.set_max_concurrent_requests(static_cast<uint32_t>(conc));
    req.set_expires_in_seconds(static_cast<int64_t>(expires));
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::ClientWithKey out;
    grpc::Status s = stub_->RegisterClient(&ctx, req, &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
    } else {
      printNewKey(out, "Registered");
      printf("Use it as: Authorization: Bearer <key>\n");
    }
    return kExitOk;
  }

  int clientsList() {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::ClientList out;
    grpc::Status s = stub_->ListClients(&ctx, v1::ListClientsRequest(), &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
      return kExitOk;
    }
    if (out.clients().empty()) {
      printf("No clients. Register one with: eldricctl clients register NAME\n");
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"ID", "NAME", "SOURCE", "SCOPES", "RPM", "TPM", "STATUS", "KEYS"}};
    for (const auto& c : out.clients()) {
      std::string keys;
      for (const auto& k : c.keys()) {
        if (k.revoked_at() || (k.expires_at() && k.expires_at() <= time(nullptr))) continue;
        if (!keys.empty()) keys += ",";
        keys += k.prefix() + "...";
      }
      rows.push_back({c.id(), c.name(), isConfigClient(c) ? "config" : "api", join(c.scopes()),
                      limit(c.requests_per_minute(), "-"), limit(c.tokens_per_minute(), "-"),
                      clientStatus(c), keys.empty() ? "-" : keys});
    }
    printTable(rows);
    return kExitOk;
  }

  int clientsGet(const std::string& id) {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::ClientRef ref;
    ref.set_id(id);
    v1::Client out;
    grpc::Status s = stub_->GetClient(&ctx, ref, &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
    } else {
      printClient(out);
    }
    return kExitOk;
  }

  int clientsRevoke(const std::string& id) {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::ClientRef ref;
    ref.set_id(id);
    v1::Client out;
    grpc::Status s = stub_->RevokeClient(&ctx, ref, &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
    } else {
      printf("Revoked client \"%s\" (id %s) and all its keys.\n", out.name().c_str(),
             out.id().c_str());
    }
    return kExitOk;
  }

  int clientsRotate(const std::string& id) {
    v1::RotateKeyRequest req;
    req.set_id(id);
    std::string error;
    if (a_.flags.count("overlap-seconds")) {
      uint64_t overlap = 0;
      if (!parseUint(a_, "overlap-seconds", 90ULL * 86400, &overlap, &error)) {
        return usageError(error);
      }
      req.set_overlap_seconds(static_cast<int64_t>(overlap));
    }
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::ClientWithKey out;
    grpc::Status s = stub_->RotateKey(&ctx, req, &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
      return kExitOk;
    }
    printNewKey(out, "New key for");
    int64_t until = 0;
    for (const auto& k : out.client().keys()) {
      if (!k.revoked_at() && k.expires_at() > until) until = k.expires_at();
    }
    if (until > 0) {
      printf("The previous keys keep working until %s.\n", formatTime(until).c_str());
    } else {
      printf("The previous keys stopped working now.\n");
    }
    return kExitOk;
  }

  int pluginsList() {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::PluginList out;
    grpc::Status s = stub_->ListPlugins(&ctx, v1::ListPluginsRequest(), &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
      return kExitOk;
    }
    if (out.plugins().empty()) {
      printf("No plugins.\n");
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {{"ID", "NAME", "TYPE", "ENABLED"}};
    for (const auto& p : out.plugins()) {
      rows.push_back({p.id(), p.name(), p.type(), p.enabled() ? "yes" : "no"});
    }
    printTable(rows);
    return kExitOk;
  }

  int pluginsEnable(const std::string& id, bool enable) {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::SetPluginEnabledRequest req;
    req.set_id(id);
    req.set_enabled(enable);
    v1::Plugin out;
    grpc::Status s = stub_->SetPluginEnabled(&ctx, req, &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
    } else {
      printf("Plugin \"%s\" is %s.\n", out.id().c_str(), out.enabled() ? "enabled" : "disabled");
    }
    return kExitOk;
  }

  // Prints the valves object itself (it is JSON already), in both modes.
  int pluginsValves(const std::string& id) {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::Valves out;
    grpc::Status s;
    auto it = a_.flags.find("set");
    if (it != a_.flags.end()) {
      v1::SetValvesRequest req;
      req.set_plugin_id(id);
      std::string json = it->second;
      if (!json.empty() && json[0] == '@') {
        std::string error;
        if (!readFile(json.substr(1), "--set @file", &json, &error)) return usageError(error);
      }
      req.set_json(json);
      s = stub_->SetValves(&ctx, req, &out);
    } else {
      v1::PluginRef ref;
      ref.set_id(id);
      s = stub_->GetValves(&ctx, ref, &out);
    }
    if (!s.ok()) return fail(s);
    printf("%s\n", out.json().c_str());
    return kExitOk;
  }

  int farmStatus() {
    grpc::ClientContext ctx;
    prepare(&ctx);
    v1::FarmStatus out;
    grpc::Status s = stub_->GetFarmStatus(&ctx, v1::FarmStatusRequest(), &out);
    if (!s.ok()) return fail(s);
    if (a_.json) {
      printJson(out);
      return kExitOk;
    }
    printf("Serving version: %s\n", out.current_version().c_str());
    if (out.members().empty()) {
      printf("No data planes have connected yet.\n");
      return kExitOk;
    }
    printf("\n");
    std::vector<std::vector<std::string>> rows = {
        {"NODE", "CONNECTED", "ACKED VERSION", "LAST REPORT", "UPSTREAMS", "LISTEN", "BUILD"}};
    int behind = 0;
    for (const auto& m : out.members()) {
      std::string acked = m.acked_version().empty() ? "-" : m.acked_version();
      if (m.acked_version() != out.current_version()) {
        acked += " (behind)";
        ++behind;
      }
      int healthy = 0;
      for (const auto& u : m.upstreams()) healthy += u.healthy() ? 1 : 0;
      std::string ups = m.upstreams().empty() ? "-"
                                              : std::to_string(healthy) + "/" +
                                                    std::to_string(m.upstreams_size()) + " healthy";
      rows.push_back({m.node_id(), m.connected() ? "yes" : "no", acked,
                      ago(m.last_report_unix_ms()), ups,
                      m.listen_addresses().empty() ? "-" : join(m.listen_addresses()),
                      m.build_version().empty() ? "-" : m.build_version()});
    }
    printTable(rows);
    printf("\n%d of %d data planes run the serving version.\n", out.members_size() - behind,
           out.members_size());
    bool header = false;
    for (const auto& m : out.members()) {
      if (m.nacked_version().empty()) continue;
      if (!header) printf("\nRejected snapshots (the data plane keeps its last good one):\n");
      header = true;
      printf("  %s rejected %s: %s\n", m.node_id().c_str(), m.nacked_version().c_str(),
             m.nack_error().c_str());
    }
    for (const auto& m : out.members()) {
      for (const auto& u : m.upstreams()) {
        if (u.healthy()) continue;
        printf("  %s sees %s unhealthy\n", m.node_id().c_str(), u.url().c_str());
      }
    }
    return kExitOk;
  }

  Args a_;
  std::string target_;
  std::string api_key_;
  std::string farm_token_;
  bool tls_ = false;
  std::unique_ptr<v1::Admin::Stub> stub_;
};

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string error;
  if (!parseArgs(argc, argv, &a, &error)) return usageError(error);
  return Cli(std::move(a)).run();
}
