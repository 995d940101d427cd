// eldric-controlplane: the assembly (start, reload, shutdown, the timer).
// See server.h, server_impl.h for the other pieces, and README.md.
//
// Threads and locks:
// - The discovery stream uses gRPC's callback API: a DiscoveryStream reactor per
//   data plane, no thread per stream. Its reactions (OnReadDone,
//   OnWriteDone, OnDone) run on gRPC's threads.
// - The Admin service is a synchronous service: its handlers block on the
//   Store's fsync, which belongs on gRPC's sync thread pool rather than on
//   the callback threads that drive every stream.
// - One timer thread pushes farm usage (every sync interval, and soon
//   after reports arrive) and drops keys that reach their expiry.
//
// Lock order: store_mu_ -> streams_mu_ -> DiscoveryStream::mu_. StartWrite and
// Finish are never called with streams_mu_ or a DiscoveryStream::mu_ held, because
// gRPC may run the completion (OnWriteDone, even OnDone) inline on the
// calling thread.

#include "controlplane/server.h"

#include <grpc/grpc_security_constants.h>
#include <grpc/support/log.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "common/config/loader.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/session_key.h"
#include "controlplane/admin_service.h"
#include "controlplane/clock.h"
#include "controlplane/core/plugin_dir.h"
#include "controlplane/core/store.h"
#include "controlplane/curl_transport.h"
#include "controlplane/discovery_stream.h"
#include "controlplane/server_impl.h"
#include "eldric/edge/v1/discovery.grpc.pb.h"

namespace eldric::controlplane {

using edge::v1::DiscoveryResponse;

namespace {

bool readPem(const std::string& path, const std::string& what, std::string* out,
             std::string* error) {
  if (!config::readFile(path, what, out, error)) return false;
  if (out->find("-----BEGIN ") == std::string::npos) {
    *error = what + " " + path + ": not a PEM file (no -----BEGIN line)";
    return false;
  }
  return true;
}

// gRPC's own messages, as JSON lines like ours.
void grpcLog(gpr_log_func_args* args) {
  // gRPC's errors are mostly about one connection (a client that failed
  // the TLS handshake): a warning for the whole process.
  log::Level level = args->severity == GPR_LOG_SEVERITY_ERROR  ? log::Level::Warn
                     : args->severity == GPR_LOG_SEVERITY_INFO ? log::Level::Info
                                                               : log::Level::Debug;
  if (!log::enabled(level)) return;
  log::write(level, "grpc",
             {{"message", log::str(args->message ? args->message : "")},
              {"file", log::str(args->file ? args->file : "")},
              {"line", log::num(args->line)}});
}

}  // namespace

// ---------------------------------------------------------------------------
// Start, reload, stop.

bool ControlPlane::Impl::loadConfig(config::LoadResult* out, int64_t* file_interval,
                                    std::string* error) {
  config::CommandLine cli;
  if (!options_.edge_args.empty()) {
    // The primary Edge's own flags, read as it reads them (its API key,
    // if any, came in ELDRIC_API_KEY).
    std::vector<char*> argv = {const_cast<char*>("eldric-edge")};
    for (auto& a : options_.edge_args) argv.push_back(const_cast<char*>(a.c_str()));
    if (!config::parseCommandLine(static_cast<int>(argv.size()), argv.data(), &cli, error)) {
      *error = "the Edge's flags: " + *error;
      return false;
    }
  } else {
    cli.config_file = options_.config_file;
  }
  // A farm member's own settings (mode "farm", peers, control_plane,
  // node_id) say how it reaches a control plane; here they are not used,
  // so one file can serve the members and this daemon alike.
  if (!config::load(cli, out, error)) return false;
  if (out->snapshot.clusters_size() == 0 || out->snapshot.clusters(0).name() != "routers" ||
      out->snapshot.clusters(0).endpoints_size() == 0) {
    *error = (cli.config_file.empty() ? std::string("the Edge's flags") : cli.config_file) +
             ": no routers for the farm: give \"router_urls\" (or --routers)";
    return false;
  }
  // farm.sync_interval_ms (the loader's default when absent).
  const auto& d = out->snapshot.farm().sync_interval();
  *file_interval = d.seconds() * 1000 + d.nanos() / 1000000;
  return true;
}

bool ControlPlane::Impl::start(std::string* error) {
  if (options_.config_file.empty() && options_.edge_args.empty()) {
    *error = "no --config FILE: the Edge JSON config that the data planes are served";
    return false;
  }
  int64_t file_interval = 0;
  config::LoadResult loaded;
  if (!loadConfig(&loaded, &file_interval, error)) return false;
  log::Level level = log::Level::Info;
  std::string level_name = !options_.log_level.empty() ? options_.log_level : loaded.log_level;
  if (!level_name.empty() && log::parseLevel(level_name, &level)) log::setLevel(level);
  gpr_set_log_function(grpcLog);
  for (const auto& w : loaded.warnings) log::warn(w);

  std::unique_ptr<Store> store = Store::open(options_.data_dir, error);
  if (!store) return false;
  if (!loaded.plugins_dir.empty() && !syncPluginDirLogged(loaded.plugins_dir, *store, error))
    return false;
  std::string session_key;
  if (!loadSessionKey(options_.data_dir, &session_key, error)) return false;

  std::string cert, key, ca;
  bool tls = !options_.tls_cert.empty() || !options_.tls_key.empty();
  if (tls) {
    if (options_.tls_cert.empty() || options_.tls_key.empty()) {
      *error = "TLS needs both --tls-cert and --tls-key";
      return false;
    }
    if (!readPem(options_.tls_cert, "--tls-cert", &cert, error) ||
        !readPem(options_.tls_key, "--tls-key", &key, error)) {
      return false;
    }
  }
  if (!options_.client_ca.empty()) {
    if (!tls) {
      *error = "--client-ca needs TLS: give --tls-cert and --tls-key too";
      return false;
    }
    if (!readPem(options_.client_ca, "--client-ca", &ca, error)) return false;
  }

  // A nonce prefix per process, so that a nonce echoed from before a
  // restart never matches one sent after it.
  unsigned char boot[4];
  if (getrandom(boot, sizeof boot, 0) != static_cast<ssize_t>(sizeof boot)) {
    *error = "getrandom failed";
    return false;
  }
  nonce_prefix_ = hexEncode(std::string(reinterpret_cast<char*>(boot), sizeof boot)) + "-";
  usage_seq_ = 0;
  instance_ = nonce_prefix_.substr(0, nonce_prefix_.size() - 1);
  sync_interval_ms_ = options_.sync_interval_ms > 0 ? options_.sync_interval_ms
                      : file_interval > 0           ? file_interval
                                                    : kDefaultSyncIntervalMs;

  {
    std::lock_guard<std::mutex> l(store_mu_);
    store_ = std::move(store);
    base_ = std::move(loaded);
    session_key_ = std::move(session_key);
    auto ocsp_transport = makeCurlTransport("", error);
    if (!ocsp_transport) return false;
    stapler_ = std::make_unique<acme::OcspStapler>(std::move(ocsp_transport), [this] {
      std::lock_guard<std::mutex> sl(store_mu_);
      rebuildAfterChangeLocked("ocsp");
    });
    if (!rebuildLocked("start", error)) return false;
    stapler_->start();
  }
  if (!applyAcme(base_.acme, error)) return false;

  std::shared_ptr<grpc::ServerCredentials> creds;
  if (tls) {
    grpc::SslServerCredentialsOptions ssl(
        ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    ssl.pem_root_certs = ca;
    ssl.pem_key_cert_pairs.push_back({key, cert});
    creds = grpc::SslServerCredentials(ssl);
  } else {
    creds = grpc::InsecureServerCredentials();
  }

  grpc::EnableDefaultHealthCheckService(true);
  discovery_service_ = std::make_unique<DiscoveryService>(this);
  admin_service_ = newAdminService(this);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, creds, &port_);
  builder.RegisterService(discovery_service_.get());
  builder.RegisterService(admin_service_.get());
  // Never share the port with another process (gRPC allows SO_REUSEPORT
  // by default: a second control plane would silently split the farm).
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Find dead data planes behind a silent network, and let their clients
  // ping every 10 s or more without being cut off.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    *error = "cannot listen on " + options_.listen +
             " (address in use, not local, or malformed? give HOST:PORT)";
    server_.reset();
    return false;
  }
  started_ = true;
  timer_ = std::thread([this] { timerLoop(); });
  log::info("control plane started",
            {{"listen", log::str(options_.listen)},
             {"port", log::num(port_)},
             {"tls", tls ? (ca.empty() ? "\"server\"" : "\"mutual\"") : "\"off\""},
             {"config", log::str(options_.config_file)},
             {"data_dir", log::str(options_.data_dir)},
             {"sync_interval_ms", log::num(sync_interval_ms_.load())},
             {"version", log::str(currentVersion())}});
  return true;
}

bool ControlPlane::Impl::reload(std::string* error) {
  config::LoadResult loaded;
  int64_t file_interval = 0;
  if (!loadConfig(&loaded, &file_interval, error)) {
    log::error("config reload failed; the previous config stays in force",
               {{"error", log::str(*error)}});
    return false;
  }
  if (options_.log_level.empty()) {
    log::Level level = log::Level::Info;
    if (!loaded.log_level.empty()) log::parseLevel(loaded.log_level, &level);
    log::setLevel(level);
  }
  for (const auto& w : loaded.warnings) log::warn(w);
  std::string acme_error;
  if (!applyAcme(loaded.acme, &acme_error))
    log::error("ACME not restarted; the previous orderer runs on",
               {{"error", log::str(acme_error)}});
  if (options_.sync_interval_ms <= 0) {
    sync_interval_ms_ = file_interval > 0 ? file_interval : kDefaultSyncIntervalMs;
  }
  std::lock_guard<std::mutex> l(store_mu_);
  if (!loaded.plugins_dir.empty()) {
    std::string plugins_error;
    if (!syncPluginDirLogged(loaded.plugins_dir, *store_, &plugins_error)) {
      // The plugins' state is kept as it was; the rest of the config applies.
      log::error("plugins directory not re-read", {{"error", log::str(plugins_error)}});
    }
  }
  base_ = std::move(loaded);
  if (!rebuildLocked("config reload", error)) {
    log::error("rebuilding the snapshot failed", {{"error", log::str(*error)}});
    return false;
  }
  log::info("config reloaded", {{"version", log::str(built_version_)}});
  return true;
}

void ControlPlane::Impl::shutdown() {
  if (!started_ || stopped_) return;
  stopped_ = true;
  {
    std::lock_guard<std::mutex> l(timer_mu_);
    stopping_ = true;
  }
  timer_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  std::unique_ptr<acme::Manager> acme;
  std::unique_ptr<acme::OcspStapler> stapler;
  {
    std::lock_guard<std::mutex> l(store_mu_);
    acme = std::move(acme_);
    stapler = std::move(stapler_);
  }
  acme.reset();  // stops its thread, which may be waiting for store_mu_
  stapler.reset();
  if (auto* health = server_->GetHealthCheckService()) health->Shutdown();
  // Tell every data plane to go elsewhere (or retry) rather than letting
  // the streams hang until the deadline below cancels them.
  std::vector<std::shared_ptr<DiscoveryStream>> all;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    for (auto& [raw, s] : streams_) all.push_back(s);
  }
  for (auto& s : all) {
    s->close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "control plane shutting down"));
  }
  all.clear();
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  server_->Wait();
  // Every handler has returned (Wait); taking the locks they held makes
  // that visible to TSan before the members they touched are destroyed.
  {
    std::lock_guard<std::mutex> sl(store_mu_);
    std::lock_guard<std::mutex> l(streams_mu_);
  }
  log::info("control plane stopped");
}

// ---------------------------------------------------------------------------
// ACME.

bool ControlPlane::Impl::applyAcme(const config::AcmeSettings& settings, std::string* error) {
  std::unique_ptr<acme::Manager> old;
  {
    std::lock_guard<std::mutex> l(store_mu_);
    if (settings.sameAs(acme_settings_) && (acme_ != nullptr) == settings.enabled) return true;
    old = std::move(acme_);
  }
  if (old) {
    log::info("tls.acme changed: the ACME orderer restarts");
    old.reset();
  }
  std::unique_ptr<acme::Manager> next;
  if (settings.enabled) {
    auto transport = makeCurlTransport(settings.ca_file, error);
    if (!transport) return false;
    acme::Hooks hooks;
    hooks.changed = [this] {
      std::lock_guard<std::mutex> l(store_mu_);
      rebuildAfterChangeLocked("acme");
    };
    hooks.served = [this](const std::vector<std::pair<std::string, std::string>>& c,
                          std::string* why) { return challengesServed(c, why); };
    next = std::make_unique<acme::Manager>(settings, options_.data_dir, std::move(transport),
                                           std::move(hooks));
  }
  std::lock_guard<std::mutex> l(store_mu_);
  acme_settings_ = settings;
  if (next && !next->start(error)) return false;
  acme_ = std::move(next);
  return true;
}

bool ControlPlane::Impl::challengesServed(
    const std::vector<std::pair<std::string, std::string>>& challenges, std::string* why) {
  std::vector<std::string> holding;  // versions that hold every token
  {
    std::lock_guard<std::mutex> l(store_mu_);
    for (const auto& [version, tokens] : challenge_versions_) {
      bool all = true;
      for (const auto& c : challenges)
        all = all && std::find(tokens.begin(), tokens.end(), c.first) != tokens.end();
      if (all) holding.push_back(version);
    }
  }
  size_t connected = 0, serving = 0;
  {
    std::lock_guard<std::mutex> l(streams_mu_);
    for (const auto& [id, n] : nodes_) {
      if (!n.stream) continue;
      ++connected;
      if (std::find(holding.begin(), holding.end(), n.acked_version) != holding.end()) ++serving;
    }
  }
  if (connected > 0 && serving == connected) return true;
  *why = connected == 0 ? "no member is connected"
                        : std::to_string(serving) + " of " + std::to_string(connected) +
                              " members serve the challenges";
  return false;
}

// ---------------------------------------------------------------------------
// Farm usage.

// Farm usage goes out at least every sync interval, and soon after a
// report arrives: a member's counts then reach the others within a few
// milliseconds instead of up to one more interval later, which halves how
// stale the others' counts are when a member decides (and so the farm's
// over-admission). Report-driven pushes are at least interval/8 (and 5 ms)
// apart, so N reporting members cost at most 8 pushes per interval however
// large N is.
void ControlPlane::Impl::noteReport() {
  {
    std::lock_guard<std::mutex> l(timer_mu_);
    if (report_pending_) return;
    report_pending_ = true;
  }
  timer_cv_.notify_one();
}

void ControlPlane::Impl::timerLoop() {
  using Clock = std::chrono::steady_clock;
  auto last_push = Clock::now();
  auto next_periodic = last_push + std::chrono::milliseconds(sync_interval_ms_.load());
  std::unique_lock<std::mutex> l(timer_mu_);
  while (!stopping_) {
    int64_t interval_ms = sync_interval_ms_.load();
    auto min_gap = std::chrono::milliseconds(std::max<int64_t>(5, interval_ms / 8));
    auto due = next_periodic;
    if (report_pending_) due = std::min(due, last_push + min_gap);
    auto now = Clock::now();
    if (now < due) {
      // Woken early by a report, a stop, or spuriously: re-evaluate.
      timer_cv_.wait_until(l, due);
      continue;
    }
    report_pending_ = false;
    last_push = now;
    next_periodic = now + std::chrono::milliseconds(interval_ms);
    l.unlock();
    pushFarmUsage();
    // Keys that reached their expiry leave the snapshot.
    int64_t expiry = next_expiry_s_.load();
    if (expiry != 0 && unixMs() / 1000 >= expiry) {
      std::lock_guard<std::mutex> sl(store_mu_);
      rebuildAfterChangeLocked("key expiry");
    }
    if (logouts_pending_.exchange(false)) {
      std::lock_guard<std::mutex> sl(store_mu_);
      rebuildAfterChangeLocked("session logout");
    }
    // A new session ticket key comes first (checked every sync interval).
    int64_t rotate_at = next_ticket_rotation_s_.load();
    if (rotate_at != 0 && unixMs() / 1000 >= rotate_at) {
      std::lock_guard<std::mutex> sl(store_mu_);
      rebuildAfterChangeLocked("session ticket key rotation");
    }
    l.lock();
  }
}

// ---------------------------------------------------------------------------

ControlPlane::ControlPlane(Options options) : impl_(std::make_unique<Impl>(std::move(options))) {}
ControlPlane::~ControlPlane() = default;
bool ControlPlane::start(std::string* error) { return impl_->start(error); }
int ControlPlane::port() const { return impl_->port(); }
bool ControlPlane::reload(std::string* error) { return impl_->reload(error); }
void ControlPlane::shutdown() { impl_->shutdown(); }
std::string ControlPlane::currentVersion() const { return impl_->currentVersion(); }

}  // namespace eldric::controlplane
