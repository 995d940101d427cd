#include "dataplane/server/server.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>

#include "absl/container/flat_hash_set.h"
#include "common/address.h"
#include "common/file.h"
#include "common/hex.h"
#include "common/log.h"
#include "common/pki/pki.h"
#include "common/session_key.h"
#include "controlplane/core/acme/certificates.h"
#include "controlplane/core/admin_rest.h"
#include "controlplane/core/plugin_dir.h"
#include "controlplane/core/snapshot_builder.h"
#include "dataplane/network/connection.h"
#include "dataplane/server/acme_transport.h"
#include "dataplane/server/builtin.h"
#include "dataplane/server/webchat_handler.h"
#include "dataplane/tls/client_context.h"
#include "filters/auth/auth_filter.h"
#include "filters/auth/session.h"
#include "filters/auth/session_filter.h"
#include "filters/plugins/host_script.h"
#include "filters/plugins/plugin_filter.h"
#include "filters/plugins/valves.h"
#include "filters/ratelimit/ratelimit_filter.h"
#include "filters/tools/tools_filter.h"
#include "filters/tunnel/tunnel.h"
#include "filters/usage/usage_filter.h"
#include "rapidjson/document.h"

namespace eldric::server {

namespace {
// A supervised farm's primary looks for a second primary (members marked
// differently) this long after it starts, then this often.
constexpr uint64_t kOtherPrimaryFirstCheckMs = 2000;
constexpr uint64_t kOtherPrimaryCheckMs = 30000;
}  // namespace

// ---------------------------------------------------------------------------
// Server

Server::Server(config::CommandLine cli)
    : cli_(std::move(cli)), plugin_runtime_(filters::plugins::kHostScript) {
  registerFilters();
  state_.plugins_health = [this] { return plugin_runtime_.healthJson(); };
  state_.plugins_metrics = [this](std::string& out) {
    plugin_runtime_.appendMetrics(out);
    appendTunnelMetrics(out);
  };
}

config::RuntimeConfigSharedPtr Server::config() const {
  std::lock_guard<std::mutex> lock(config_mutex_);
  return config_;
}

namespace {

// What a usage report carries of the tunnel directory (UsageReport.tunnels).
constexpr size_t kMaxTunnelReportBytes = 512u << 10;
constexpr size_t kMaxDirectoryModels = 16;

constexpr uint64_t kSweepIntervalMs = 15000;
// How often resident memory is compared with limits.max_rss_mb.
constexpr uint64_t kOverloadCheckMs = 250;
// Session logouts sent with one farm report (the control plane takes as many).
constexpr size_t kLogoutsPerReport = 64;
// Standalone: session logouts written to the store per sweep (and at exit).
constexpr size_t kLogoutsPerSweep = 1000;

// Resident memory of this process, from /proc/self/statm (0 if unknown).
uint64_t residentBytes() {
  FILE* f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  unsigned long long size = 0, resident = 0;
  int n = fscanf(f, "%llu %llu", &size, &resident);
  fclose(f);
  return n == 2 ? resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE)) : 0;
}

// How often to look the upstream endpoints given by host name up again (the
// shortest interval of their clusters), and those names (into `names` if
// not null).
uint64_t dnsNames(const config::RuntimeConfig& cfg, std::vector<std::string>* names) {
  uint64_t interval = 0;
  for (const auto& c : cfg.clusters) {
    for (const auto& h : c->hosts) {
      sockaddr_storage ip;
      if (network::parseIpAddress(h->hostname(), 0, &ip)) continue;
      if (names) names->push_back(h->hostname());
      if (!interval || c->dns_refresh_ms < interval) interval = c->dns_refresh_ms;
    }
  }
  return interval ? interval : upstream::ClusterInfo().dns_refresh_ms;
}

// Every router as this member sees it, for a usage report or the farm
// status (two messages with the same three fields).
template <typename View>
void addUpstreamViews(const config::RuntimeConfig& cfg, uint64_t now_ms,
                      google::protobuf::RepeatedPtrField<View>* out) {
  for (const auto& c : cfg.clusters) {
    for (const auto& h : c->hosts) {
      auto* u = out->Add();
      u->set_url(h->url());
      u->set_healthy(h->available(now_ms));
      u->set_in_flight(h->in_flight.load(std::memory_order_relaxed));
    }
  }
}

// SO_REUSEPORT would let a second Edge (same user) join a port another
// one already serves, and the kernel would split connections between two
// processes with different keys and limits. A plain bind first proves the
// port is free.
bool portFree(const sockaddr_storage& addr, std::string* error) {
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) == 0;
  if (!ok) {
    *error = "cannot listen on " +
             network::formatAddress(reinterpret_cast<const sockaddr*>(&addr)) + ": " +
             strerror(errno) + " (is another eldric-edge running?)";
  }
  close(fd);
  return ok;
}

int bindSocket(const std::string& address, uint32_t port, std::string* error, bool probe) {
  sockaddr_storage addr;
  if (!network::parseIpAddress(address, static_cast<uint16_t>(port), &addr)) {
    *error = "bind_address \"" + address + "\" is not an IP address";
    return -1;
  }
  if (probe && port != 0 && !portFree(addr, error)) return -1;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  // One listening socket per worker on the same port: the kernel spreads
  // connections, and no accept lock is shared.
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  socklen_t len = addr.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    *error = "cannot listen on " + network::formatAddress(reinterpret_cast<sockaddr*>(&addr)) +
             ": " + strerror(errno);
    close(fd);
    return -1;
  }
  if (::listen(fd, 1024) != 0) {
    *error = std::string("listen: ") + strerror(errno);
    close(fd);
    return -1;
  }
  return fd;
}

uint32_t boundPort(int fd) {
  sockaddr_storage addr;
  socklen_t len = sizeof addr;
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
  return ntohs(reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port);
}

}  // namespace

bool Server::bindListeners(const config::RuntimeConfig& cfg, size_t workers, std::string* error) {
  worker_fds_.assign(workers, {});
  bound_listeners_.clear();
  for (const auto& l : cfg.listeners) {
    uint32_t port = l.port;
    for (size_t w = 0; w < workers; ++w) {
      int fd = bindSocket(l.address, port, error, /*probe=*/w == 0);
      if (fd < 0) return false;
      // Port 0: the first socket picks, the others join it.
      if (port == 0) port = boundPort(fd);
      worker_fds_[w].emplace_back(fd, l.name);
    }
    log::info("listening", {{"listener", log::str(l.name)},
                            {"address", log::str(l.address)},
                            {"port", log::num(port)},
                            {"tls", l.tls ? "true" : "false"},
                            {"role", log::str(l.redirect_to_https ? "redirect" : "serve")}});
    bound_listeners_.push_back({l.name, l.address, port});
  }
  return true;
}

void Server::pinListeners(edge::v1::Snapshot* snapshot) const {
  if (bound_listeners_.empty()) return;  // not bound yet: the first build
  for (auto& l : *snapshot->mutable_listeners()) {
    const BoundListener* bound = nullptr;
    for (const auto& b : bound_listeners_) {
      if (b.name == l.name()) bound = &b;
    }
    if (!bound) {
      log::warn("a new listener needs a restart", {{"listener", log::str(l.name())}});
      continue;
    }
    if (l.address().port() != 0 && l.address().port() != bound->port) {
      log::warn("listener port changes need a restart", {{"listener", log::str(l.name())}});
    }
    l.mutable_address()->set_address(bound->address);
    l.mutable_address()->set_port(bound->port);
  }
}

bool Server::applyFarmSnapshot(const edge::v1::Snapshot& pushed, std::string* error) {
  // What is this host's own stays local: the listeners it bound, its data
  // directory, its access log and thread count. A listener's certificate
  // may come from the control plane (the same name, with TLS on both sides).
  edge::v1::Snapshot snapshot = pushed;
  snapshot.clear_listeners();
  for (const auto& local : local_snapshot_.listeners()) {
    auto* l = snapshot.add_listeners();
    *l = local;
    for (const auto& remote : pushed.listeners()) {
      if (remote.name() == local.name() && remote.has_tls() && local.has_tls())
        *l->mutable_tls() = remote.tls();
    }
  }
  snapshot.set_data_dir(local_snapshot_.data_dir());
  *snapshot.mutable_access_log() = local_snapshot_.access_log();
  snapshot.set_worker_threads(local_snapshot_.worker_threads());
  // The farm says which plugins run; this host says how (its interpreter,
  // where their code goes, whether a sandbox is required).
  const auto& local_plugins = local_snapshot_.plugins();
  auto* plugins = snapshot.mutable_plugins();
  plugins->set_python(local_plugins.python());
  plugins->set_require_sandbox(local_plugins.require_sandbox());
  plugins->set_max_message_bytes(local_plugins.max_message_bytes());
  plugins->set_runtime_dir(local_plugins.runtime_dir());
  auto next = build(snapshot, error);
  if (!next) return false;
  base_snapshot_ = snapshot;
  applyConfig(next);
  // Kept so that a restart while the control plane is down still serves
  // the farm's last word (static stability across restarts too).
  std::string why;
  if (!farm_snapshot_path_.empty() &&
      !writeFileAtomically(farm_snapshot_path_, snapshot.SerializeAsString(), 0600, &why))
    log::warn("cannot keep the farm snapshot for a restart", {{"error", log::str(why)}});
  log::info("snapshot applied from the control plane",
            {{"version", log::str(snapshot.version())},
             {"api_keys", log::num(snapshot.auth().api_keys_size())}});
  return true;
}

std::vector<filters::auth::LoggedOutSession> Server::unlistedLogouts(size_t max) {
  auto cfg = config();
  if (!cfg) return {};
  // absl's own string_view (this absl does not alias std::string_view).
  absl::flat_hash_set<absl::string_view> listed;
  for (const auto& l : cfg->snapshot.auth().logged_out_sessions()) listed.insert(l.token_sha256());
  auto known = [&listed](std::string_view d) {
    return listed.contains(absl::string_view(d.data(), d.size()));
  };
  return filters::auth::localLogouts(static_cast<int64_t>(time(nullptr)), max, known);
}

void Server::fillLogouts(edge::v1::DiscoveryRequest* req) {
  for (auto& l : unlistedLogouts(kLogoutsPerReport)) {
    auto* out = req->add_logged_out_sessions();
    out->set_token_sha256(std::move(l.digest));
    out->set_expires_at(l.expires_at);
  }
}

void Server::persistLogouts(bool list_now) {
  if (!store_ || farm_) return;
  std::vector<controlplane::LoggedOutSession> rows;
  for (const auto& l : unlistedLogouts(kLogoutsPerSweep))
    rows.push_back({hexEncode(l.digest), l.expires_at});
  if (rows.empty()) return;
  size_t added = 0;
  std::string error;
  if (!store_->addLoggedOutSessions(rows, static_cast<int64_t>(time(nullptr)), &added, &error)) {
    log::error("session logouts not stored; they hold until a restart",
               {{"error", log::str(error)}});
  } else if (added) {
    log::debug("session logouts stored", {{"sessions", log::num(static_cast<long long>(added))}});
    // The running config then lists them (build() reads the store), so the
    // next sweep does not write the same ones again.
    if (list_now && !rebuild(&error)) {
      log::warn("config not rebuilt after storing session logouts", {{"error", log::str(error)}});
    }
  }
}

void Server::startTunnelRelay(const config::RuntimeConfig& cfg) {
  // Trust for the other members' certificates (relays over https).
  std::string ca =
      !farm_options_.relay_ca_file.empty() ? farm_options_.relay_ca_file : farm_options_.ca_file;
  // A supervised farm's members share the Edge's key: pinned to it, as the
  // farm port is, unless a CA was given.
  std::string pin = farm_options_.supervised && ca.empty() ? farm_options_.tls_cert_file : "";
  std::string error;
  tls::SslCtxPtr ctx = tls::makeClientContext(ca, "", "", {"http/1.1"}, &error, pin);
  if (!ctx) {
    log::warn("tunnel relays over https will fail: no trust for the other members",
              {{"error", log::str(error)}});
  }
  tunnel_->setRelay(nodeId(cfg), std::shared_ptr<SSL_CTX>(ctx.release(), SSL_CTX_free));
  // Where the others reach this member: as configured, else its TLS port
  // (the plain port redirects when TLS is on) at the address the control
  // plane sees it connect from.
  std::string url = farm_options_.relay_url;
  if (url.empty() && !cfg.listeners.empty()) {
    const config::CompiledListener* main = &cfg.listeners[0];
    for (const auto& l : cfg.listeners) {
      if (l.tls) {
        main = &l;
        break;
      }
    }
    url = std::string(main->tls ? "https" : "http") + "://:" + std::to_string(main->port);
  }
  farm_->setTunnelRelay(
      url,
      [tunnel = tunnel_](const google::protobuf::RepeatedPtrField<edge::v1::TunnelView>& views) {
        std::vector<filters::tunnel::RemoteTunnel> remote;
        remote.reserve(views.size());
        for (const auto& v : views) {
          filters::tunnel::RemoteTunnel r;
          r.info.id = v.tunnel_id();
          r.info.worker_id = v.worker_id();
          r.info.client_name = v.client_name();
          r.info.models.assign(v.models().begin(), v.models().end());
          r.info.max_concurrent = v.max_concurrent();
          r.info.connected_unix_ms = static_cast<uint64_t>(v.connected_unix_ms());
          r.info.last_poll_unix_ms = static_cast<uint64_t>(v.last_poll_unix_ms());
          r.info.in_flight = v.in_flight();
          r.info.queued = v.queued();
          r.info.parked = v.parked_polls();
          r.member_id = v.member_id();
          r.relay_url = v.relay_url();
          remote.push_back(std::move(r));
        }
        tunnel->setDirectory(std::move(remote));
      });
}

void Server::fillUsage(edge::v1::UsageReport* report) {
  // The tunnels this member holds: the control plane's directory. Bounded
  // (a report is one gRPC message): the first models of each, and no more
  // tunnels past kMaxTunnelReportBytes.
  size_t bytes = 0;
  for (const auto& t : tunnel_->list()) {
    if (bytes > kMaxTunnelReportBytes) break;
    auto* v = report->add_tunnels();
    v->set_tunnel_id(t.id);
    v->set_worker_id(t.worker_id);
    v->set_client_name(t.client_name);
    for (size_t i = 0; i < t.models.size() && i < kMaxDirectoryModels; ++i) {
      v->add_models(t.models[i]);
    }
    v->set_max_concurrent(t.max_concurrent);
    v->set_connected_unix_ms(static_cast<int64_t>(t.connected_unix_ms));
    v->set_last_poll_unix_ms(static_cast<int64_t>(t.last_poll_unix_ms));
    v->set_in_flight(static_cast<uint32_t>(t.in_flight));
    v->set_queued(static_cast<uint32_t>(t.queued));
    v->set_parked_polls(static_cast<uint32_t>(t.parked));
    bytes += v->ByteSizeLong();
  }
  auto state = state_.rateLimitState();
  if (!state) return;
  uint64_t now = filters::ratelimit::nowSeconds();
  report->set_window_seconds(state->windowSeconds());
  report->set_global_requests(state->global.count(now));
  // Ceilings in force where explicit: with them the control plane knows
  // the most this member can hold until it reports again. Under the
  // offline policy they are not what is enforced: it says so instead.
  bool offline = state->farm_offline.load();
  report->set_offline(offline);
  if (int64_t c = state->global_ceiling.load(); c >= 0 && !offline)
    report->set_global_request_ceiling(c);
  report->set_global_refused(state->global_refused.exchange(0));
  auto add = [](google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* to,
                const std::string& key, uint64_t n) {
    auto* kc = to->Add();
    kc->set_key(key);
    kc->set_count(n);
  };
  state->ips.forEach([&](const std::string& ip, filters::ratelimit::Entry& e) {
    if (uint64_t n = e.requests.count(now)) add(report->mutable_ip_requests(), ip, n);
    if (int64_t c = e.ceiling.load(); c >= 0 && !offline)
      add(report->mutable_ip_request_ceilings(), ip, c);
    if (uint64_t r = e.refused.exchange(0)) add(report->mutable_ip_refused(), ip, r);
  });
  state->keys.forEach([&](const std::string& id, filters::ratelimit::Entry& e) {
    if (uint64_t n = e.requests.count(now)) add(report->mutable_key_requests(), id, n);
    if (int64_t c = e.ceiling.load(); c >= 0 && !offline)
      add(report->mutable_key_request_ceilings(), id, c);
    if (uint64_t r = e.refused.exchange(0)) add(report->mutable_key_refused(), id, r);
    if (uint64_t t = e.tokens.count(now)) add(report->mutable_key_tokens(), id, t);
    if (int64_t f = e.in_flight.load(); f > 0)
      add(report->mutable_key_in_flight(), id, static_cast<uint64_t>(f));
  });
  addUpstreamViews(*config(), main_.nowMs(), report->mutable_upstreams());
}

config::RuntimeConfigSharedPtr Server::build(const edge::v1::Snapshot& base, std::string* error) {
  edge::v1::Snapshot snap = base;
  pinListeners(&snap);
  // Standalone: the embedded store's clients and the local session key
  // join the file's snapshot. In a farm the control plane already did that.
  if (!session_key_.empty() && !farm_) snap.mutable_auth()->add_session_signing_keys(session_key_);
  if (store_ && !farm_) {
    int64_t now = static_cast<int64_t>(time(nullptr));
    controlplane::addClientKeys(store_->listClients(), now, snap.mutable_auth());
    std::vector<controlplane::LoggedOutSession> logged_out;
    std::string why;
    if (store_->listLoggedOutSessions(now, &logged_out, &why)) {
      controlplane::addLoggedOutSessions(logged_out, snap.mutable_auth());
    } else {
      log::error("stored session logouts not read", {{"error", log::str(why)}});
    }
    if (acme_) acme_->fill(snap.mutable_acme());
    // Session ticket keys, kept across rebuilds (a farm's come from the
    // control plane).
    if (snap.session_tickets().has_rotation()) {
      int64_t rotation = snap.session_tickets().rotation().seconds();
      tickets_.rotateIfDue(now, rotation);
      tickets_.fill(snap.mutable_session_tickets());
      if (ticket_timer_ && rotation > 0)
        ticket_timer_->enable(tickets_.secondsToNext(now, rotation) * 1000);
    }
    // OCSP answers for what is served (file certificates and ACME's).
    if (stapler_) stapler_->watchAndFill(&snap);
    if (!plugins_dir_.empty()) {
      std::vector<std::string> warnings;
      controlplane::addRunnablePlugins(plugins_dir_, store_->listPlugins(), snap.mutable_plugins(),
                                       &warnings);
      for (const auto& w : warnings) log::warn(w);
    }
  }
  // The rate limiter's counters outlive configs; a new window or table
  // size starts them afresh. Swapped before compiling: the filters made
  // below hold the state they count in.
  auto state = state_.rateLimitState();
  uint32_t window = static_cast<uint32_t>(snap.rate_limits().window().seconds());
  auto rl = filters::ratelimit::compileConfig(snap.rate_limits());
  if (!state || state->windowSeconds() != window || state->maxIpEntries() != rl->max_ip_entries) {
    if (state)
      log::warn("rate limit window or table size changed; counters start afresh",
                {{"window_seconds", log::num(window)}});
    state = std::make_shared<filters::ratelimit::State>(window, rl->max_ip_entries);
  }
  compiling_auth_ = std::make_shared<const filters::auth::AuthConfig>(snap.auth());
  compiling_limits_ = rl;
  compiling_state_ = state;
  auto cfg = config::compile(
      snap, hosts_, error,
      [this](const std::string& host, uint16_t port, upstream::AddressList* out, std::string* why) {
        return dns_.lookup(host, port, out, why);
      },
      &filters_);
  compiling_auth_ = nullptr;
  compiling_limits_ = nullptr;
  compiling_state_ = nullptr;
  if (!cfg) return nullptr;
  if (state != state_.rateLimitState()) {
    std::atomic_store(&state_.rate_limit_state, state);
    if (farm_) farm_->setRateLimitState(state);
  }
  return cfg;
}

void Server::registerFilters() {
  // Each maker reads its settings from the snapshot being compiled; the
  // rate limits compiled from it, and the counters they use, are the ones
  // build() settled on just before (main thread only).
  filters_.add("ratelimit.ip", [this](const config::FilterFactoryContext& ctx,
                                      http::FilterFactory* out, std::string*) {
    *out = filters::ratelimit::makeIpFactory(compiling_limits_, compiling_state_);
    return true;
  });
  filters_.add(
      "auth", [this](const config::FilterFactoryContext&, http::FilterFactory* out, std::string*) {
        *out = filters::auth::makeFactory(compiling_auth_, compiling_limits_, compiling_state_);
        return true;
      });
  filters_.add("ratelimit", [this](const config::FilterFactoryContext& ctx,
                                   http::FilterFactory* out, std::string*) {
    *out = filters::ratelimit::makeFactory(compiling_limits_, compiling_state_);
    return true;
  });
  filters_.add("usage", [this](const config::FilterFactoryContext& ctx, http::FilterFactory* out,
                               std::string*) {
    *out = filters::usage::makeFactory(compiling_limits_, compiling_state_);
    return true;
  });
  // The plugins the config enables: their code written out and their
  // processes described for the workers, which start them on switching.
  filters_.add("plugins", [this](const config::FilterFactoryContext& ctx, http::FilterFactory* out,
                                 std::string* error) {
    std::shared_ptr<filters::plugins::PluginsConfig> plugins;
    if (!plugin_runtime_.compile(ctx.config.snapshot.plugins(), &plugins, error)) return false;
    ctx.worker_settings->set(filters::plugins::kPluginsConfigKey, std::move(plugins));
    *out = filters::plugins::makeFactory();
    return true;
  });
  // The tool loop: after the usage filter, which then counts the final
  // answer with every round's tokens summed.
  filters_.add("tools",
               [](const config::FilterFactoryContext&, http::FilterFactory* out, std::string*) {
                 *out = filters::tools::makeFactory();
                 return true;
               });
  // Terminal handlers.
  filters_.add(std::string(config::kRouterFilter),
               [](const config::FilterFactoryContext& ctx, http::FilterFactory* out, std::string*) {
                 const config::CompiledRoute& r = *ctx.route;
                 *out = router::makeFactory(
                     r.cluster, r.timeout_ms ? r.timeout_ms : ctx.config.request_timeout_ms);
                 return true;
               });
  filters_.add(std::string(config::kAdminApiFilter),
               [this](const config::FilterFactoryContext&, http::FilterFactory* out, std::string*) {
                 *out = [this](http::FilterChainBuilder& chain) {
                   chain.addDecoderFilter(std::make_unique<AdminApiFilter>(admin()));
                 };
                 return true;
               });
  filters_.add(std::string(config::kWebchatFilter),
               [](const config::FilterFactoryContext& ctx, http::FilterFactory* out, std::string*) {
                 const config::RuntimeConfig* cfg = &ctx.config;
                 *out = [cfg](http::FilterChainBuilder& chain) {
                   chain.addDecoderFilter(std::make_unique<WebchatFilter>(*cfg));
                 };
                 return true;
               });
  filters_.add(
      std::string(config::kUsageApiFilter),
      [this](const config::FilterFactoryContext& ctx, http::FilterFactory* out, std::string*) {
        const config::RuntimeConfig* cfg = &ctx.config;
        auto state = compiling_state_;
        *out = [cfg, state](http::FilterChainBuilder& chain) {
          chain.addDecoderFilter(std::make_unique<UsageApiFilter>(*cfg, state));
        };
        return true;
      });
  filters_.add(std::string(config::kTunnelFilter), [this](const config::FilterFactoryContext& ctx,
                                                          http::FilterFactory* out, std::string*) {
    const auto& t = ctx.config.snapshot.tunnel();
    auto ms = [](const google::protobuf::Duration& d, uint64_t fallback) {
      uint64_t v =
          static_cast<uint64_t>(d.seconds()) * 1000 + static_cast<uint64_t>(d.nanos()) / 1000000;
      return v ? v : fallback;
    };
    filters::tunnel::TunnelLimits limits;
    limits.poll_timeout_ms = ms(t.poll_timeout(), limits.poll_timeout_ms);
    limits.queue_timeout_ms = ms(t.queue_timeout(), limits.queue_timeout_ms);
    limits.first_byte_timeout_ms = ms(t.first_byte_timeout(), limits.first_byte_timeout_ms);
    if (t.queue_depth()) limits.queue_depth = t.queue_depth();
    if (t.max_answer_bytes()) limits.max_answer_bytes = t.max_answer_bytes();
    if (t.tunnels_per_key()) limits.tunnels_per_key = t.tunnels_per_key();
    if (t.max_concurrent()) limits.max_concurrent = t.max_concurrent();
    // A forward's body is a request like any other (the route allows more
    // only for a worker's answer).
    if (uint64_t b = ctx.config.snapshot.limits().max_request_body_bytes()) {
      limits.max_forward_bytes = b;
    }
    // The tunnels outlive configs; a new config changes their limits.
    tunnel_->setLimits(limits);
    *out = filters::tunnel::makeFactory(tunnel_);
    return true;
  });
  filters_.add(std::string(config::kSessionFilter), [this](const config::FilterFactoryContext&,
                                                           http::FilterFactory* out, std::string*) {
    *out = filters::auth::makeSessionFactory(compiling_auth_, compiling_limits_, compiling_state_);
    return true;
  });
  filters_.add(std::string(config::kBuiltinFilter), [this](const config::FilterFactoryContext& ctx,
                                                           http::FilterFactory* out, std::string*) {
    const config::RuntimeConfig* cfg = &ctx.config;
    edge::v1::BuiltinHandler handler = ctx.route->builtin;
    *out = [this, cfg, handler](http::FilterChainBuilder& chain) {
      chain.addDecoderFilter(std::make_unique<BuiltinFilter>(state_, *cfg, handler));
    };
    return true;
  });
}

void Server::checkMemory() {
  overload_timer_->enable(kOverloadCheckMs);
  uint64_t limit = config()->max_rss_bytes;
  uint64_t rss = residentBytes();
  state_.rss_bytes.store(rss, std::memory_order_relaxed);
  bool over = limit && rss > limit;
  // Back under at 95%: no flapping at the line.
  bool was = state_.memory_pressure.load(std::memory_order_relaxed);
  if (!over && was && limit && rss > limit / 20 * 19) return;
  if (over == was) return;
  state_.memory_pressure.store(over, std::memory_order_relaxed);
  if (over) {
    log::warn(
        "overloaded: resident memory over limits.max_rss_mb; refusing new connections and router "
        "requests, "
        "closing idle connections",
        {{"rss_mb", log::num(static_cast<long long>(rss >> 20))},
         {"limit_mb", log::num(static_cast<long long>(limit >> 20))}});
    for (auto& w : workers_) w->shedIdle();
  } else {
    log::info("overload over: resident memory back under limits.max_rss_mb",
              {{"rss_mb", log::num(static_cast<long long>(rss >> 20))}});
  }
}

void Server::applyConfig(config::RuntimeConfigSharedPtr cfg, std::function<void()> done) {
  {
    std::lock_guard<std::mutex> lock(config_mutex_);
    config_ = cfg;
  }
  auto remaining = std::make_shared<std::atomic<size_t>>(workers_.size());
  for (auto& w : workers_) {
    w->setConfig(cfg, [this, remaining, done] {
      if (remaining->fetch_sub(1) == 1 && done) main_.post(done);
    });
  }
  health_->update(cfg->clusters);
}

bool Server::prepareSupervisedFarm(const std::string& data_dir, std::string* error) {
  config::FarmOptions& f = farm_options_;
  if (!config::planFarm(f, config::systemFarmProbe(), &farm_plan_, error)) return false;
  if (!pki::farmToken(f.secret_file, f.tls_key_file, &f.member_token, error)) return false;
  f.control_planes = farm_plan_.targets;
  f.planned_members = static_cast<uint32_t>(farm_plan_.members.size());
  if (f.node_id.empty()) f.node_id = farm_plan_.self;
  std::string members;
  for (const auto& m : farm_plan_.members) members += (members.empty() ? "" : ",") + m;
  log::info("farm: members meet at the primary's control plane",
            {{"self", log::str(farm_plan_.self)},
             {"primary", log::str(farm_plan_.primary)},
             {"members", log::str(members)},
             {"control_plane", log::str(farm_plan_.targets.front())}});
  if (!farm_plan_.is_primary) return true;

  ControlPlaneChild::Spec spec;
  spec.binary = findControlPlaneBinary(f.controlplane_path, error);
  if (spec.binary.empty()) return false;
  std::string cp_dir = data_dir + "/controlplane";
  if ((mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) ||
      (mkdir(cp_dir.c_str(), 0700) != 0 && errno != EEXIST)) {
    *error = "data_dir " + cp_dir + ": " + strerror(errno);
    return false;
  }
  spec.args = {"--listen",     farm_plan_.listen,       "--data-dir",
               cp_dir,         "--member-token-fd",     "3",
               "--parent-pid", std::to_string(getpid())};
  if (!f.tls_cert_file.empty()) {
    spec.args.insert(spec.args.end(), {"--tls-cert", f.tls_cert_file, "--tls-key", f.tls_key_file});
  }
  spec.args.push_back("--");
  for (auto& a : config::commandLineArgs(cli_)) spec.args.push_back(std::move(a));
  spec.token = f.member_token;
  spec.api_key = cli_.api_key;
  spec.listen = farm_plan_.listen;
  control_plane_ = std::make_unique<ControlPlaneChild>(main_, std::move(spec));
  return true;
}

bool Server::prepareFarm(const std::string& data_dir, std::string* error) {
  if (mkdir(data_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    *error = "data_dir " + data_dir + ": " + strerror(errno);
    return false;
  }
  farm_snapshot_path_ = data_dir + "/farm-snapshot.pb";
  // Static stability across restarts: start from the farm's last good
  // snapshot if there is one; the control plane's push replaces it.
  std::ifstream in(farm_snapshot_path_, std::ios::binary);
  if (in) {
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    edge::v1::Snapshot last;
    if (last.ParseFromString(bytes)) {
      // Listeners and local paths stay as this process was started with.
      last.clear_listeners();
      *last.mutable_listeners() = base_snapshot_.listeners();
      last.set_data_dir(data_dir);
      *last.mutable_access_log() = base_snapshot_.access_log();
      last.set_worker_threads(base_snapshot_.worker_threads());
      base_snapshot_ = last;
      log::info("farm: starting from the last snapshot the control plane sent",
                {{"version", log::str(last.version())}});
    }
  }
  std::string node_id = farm_options_.node_id;
  std::vector<std::string> addresses;
  for (const auto& l : base_snapshot_.listeners()) {
    addresses.push_back(l.address().address() + ":" + std::to_string(l.address().port()));
  }
  if (node_id.empty()) {
    char host[256] = {0};
    gethostname(host, sizeof host - 1);
    node_id = std::string(host) + ":" +
              (addresses.empty() ? "0" : addresses[0].substr(addresses[0].rfind(':') + 1));
  }
  farm_ = std::make_unique<FarmClient>(
      main_, farm_options_, node_id, addresses,
      [this](const edge::v1::Snapshot& snap, std::string* err) {
        return applyFarmSnapshot(snap, err);
      },
      [this](edge::v1::DiscoveryRequest* req) {
        fillUsage(req->mutable_usage());
        fillLogouts(req);
      });
  return true;
}

void Server::reload() {
  if (control_plane_) {
    log::info("SIGHUP: passed to the farm's control plane, which re-reads the config");
    control_plane_->reload();
    return;
  }
  if (farm_) {
    log::info(
        "SIGHUP: in a farm the configuration comes from the control plane; nothing to re-read");
    return;
  }
  if (cli_.config_file.empty()) {
    log::info("SIGHUP: no config file; re-reading certificate files given by flags");
  }
  config::LoadResult loaded;
  std::string error;
  config::RuntimeConfigSharedPtr next;
  if (!config::load(cli_, &loaded, &error)) {
    state_.reloads_failed.fetch_add(1);
    log::error("reload failed; keeping the running config", {{"error", log::str(error)}});
    return;
  }
  // Plugins first: the config built below runs their code as it now is.
  std::string plugins_error;
  if (!loaded.plugins_dir.empty() &&
      !controlplane::syncPluginDirLogged(loaded.plugins_dir, *store_, &plugins_error)) {
    // The plugins' state is kept as it was; the rest of the config applies.
    log::error("plugins directory not re-read", {{"error", log::str(plugins_error)}});
  }
  std::string previous_plugins_dir = plugins_dir_;
  plugins_dir_ = loaded.plugins_dir;
  next = build(loaded.snapshot, &error);
  if (!next) {
    plugins_dir_ = previous_plugins_dir;
    state_.reloads_failed.fetch_add(1);
    log::error("reload failed; keeping the running config", {{"error", log::str(error)}});
    return;
  }
  for (const auto& w : loaded.warnings) log::warn(w);
  base_snapshot_ = loaded.snapshot;
  applyConfig(next);
  state_.reloads_ok.fetch_add(1);
  // tls.acme changed (or ACME was turned on or off): the orderer starts
  // again with the new settings; its first build replaces the one above.
  if (!loaded.acme.sameAs(acme_settings_)) {
    stopAcme();
    acme_settings_ = config::AcmeSettings{};
    if (loaded.acme.enabled && !startAcme(loaded.acme, &error))
      log::error("ACME not started", {{"error", log::str(error)}});
  }
  std::string fp;
  for (const auto& l : next->listeners) {
    if (l.tls) fp = l.tls->fingerprint();
  }
  log::info("config reloaded",
            {{"version", log::str(next->version())}, {"certificate_sha256", log::str(fp)}});
}

void Server::startDrain() {
  if (state_.draining.exchange(true)) return;
  auto cfg = config();
  log::info("draining", {{"deadline_ms", log::num(static_cast<long long>(cfg->drain_timeout_ms))}});
  // No new lookups: one still out when the loop closes would hold the exit.
  if (dns_timer_) dns_timer_->disable();
  if (control_plane_) control_plane_->noMoreRestarts();
  for (auto& w : workers_) w->drain();
  drain_timer_ = main_.createTimer([this] {
    log::warn("drain deadline reached; closing remaining connections");
    main_.exit();
  });
  drain_timer_->enable(cfg->drain_timeout_ms);
}

void Server::workerDrained() {
  main_.post([this] {
    if (++workers_drained_ == workers_.size()) {
      log::info("drained");
      main_.exit();
    }
  });
}

int Server::run() {
  config::LoadResult loaded;
  std::string error;
  if (!config::load(cli_, &loaded, &error)) {
    log::error("config error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  log::Level level = log::Level::Info;
  if (!loaded.log_level.empty() && !log::parseLevel(loaded.log_level, &level)) {
    fprintf(stderr, "eldric-edge: --log-level must be debug, info, warn or error\n");
    return 2;
  }
  log::setLevel(level);
  base_snapshot_ = loaded.snapshot;
  const std::string& data_dir = base_snapshot_.data_dir();
  farm_options_ = loaded.farm;
  local_snapshot_ = loaded.snapshot;
  state_.mode = farm_options_.enabled ? "farm" : "single";
  if (farm_options_.enabled) {
    if ((farm_options_.supervised && !prepareSupervisedFarm(data_dir, &error)) ||
        !prepareFarm(data_dir, &error)) {
      fprintf(stderr, "eldric-edge: %s\n", error.c_str());
      return 2;
    }
  } else {
    store_ = controlplane::Store::open(data_dir, &error);
  }
  if (!store_ && !farm_) {
    log::error("store error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: data_dir %s: %s (set --data-dir or \"data_dir\")\n",
            data_dir.c_str(), error.c_str());
    return 2;
  }
  plugins_dir_ = loaded.plugins_dir;
  if (store_ && !plugins_dir_.empty() &&
      !controlplane::syncPluginDirLogged(plugins_dir_, *store_, &error)) {
    log::error("plugins error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  if (!farm_ && !loadSessionKey(data_dir, &session_key_, &error)) {
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  auto cfg = build(base_snapshot_, &error);
  if (!cfg) {
    log::error("config error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  for (const auto& w : loaded.warnings) log::warn(w);

  access_log_path_ = cfg->snapshot.access_log().path();
  if (access_log_path_ == "-") {
    access_log_fd_ = 1;
  } else if (!access_log_path_.empty()) {
    access_log_fd_ =
        open(access_log_path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (access_log_fd_ < 0) {
      fprintf(stderr, "eldric-edge: access_log %s: %s\n", access_log_path_.c_str(),
              strerror(errno));
      return 2;
    }
  }

  uint32_t n = cfg->snapshot.worker_threads();
  if (n == 0) n = std::max(1u, std::thread::hardware_concurrency());
  state_.start_ms = static_cast<uint64_t>(time(nullptr)) * 1000;
  if (!bindListeners(*cfg, n, &error)) {
    log::error("listen error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  if (!farm_) {
    auto ocsp_transport = makeAcmeTransport(main_, "", &error);
    if (!ocsp_transport) {
      fprintf(stderr, "eldric-edge: %s\n", error.c_str());
      return 2;
    }
    stapler_ = std::make_unique<controlplane::acme::OcspStapler>(std::move(ocsp_transport), [this] {
      main_.post([this] {
        std::string why;
        if (!rebuild(&why))
          log::error("rebuilding the snapshot for OCSP failed", {{"error", log::str(why)}});
      });
    });
    stapler_->start();
  }
  if (loaded.acme.enabled && !farm_ && !startAcme(loaded.acme, &error)) {
    log::error("acme error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  // Compiled again with the listeners as bound (a port the kernel picked,
  // the redirect's Location port): the config stays immutable.
  cfg = build(base_snapshot_, &error);
  if (!cfg) {
    log::error("config error", {{"error", log::str(error)}});
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  for (uint32_t i = 0; i < n; ++i) workers_.push_back(std::make_unique<Worker>(*this, i, cfg));
  {
    std::lock_guard<std::mutex> lock(config_mutex_);
    config_ = cfg;
  }
  health_ = std::make_unique<upstream::HealthChecker>(main_);
  health_->update(cfg->clusters);

  // Handles live on the heap and are freed by their close callbacks, which
  // run when the main dispatcher is torn down.
  auto* sighup = new uv_signal_t;
  auto* sigterm = new uv_signal_t;
  auto* sigint = new uv_signal_t;
  for (uv_signal_t* sig : {sighup, sigterm, sigint}) {
    uv_signal_init(main_.loop(), sig);
    sig->data = this;
  }
  uv_signal_start(
      sighup, [](uv_signal_t* s, int) { static_cast<Server*>(s->data)->reload(); }, SIGHUP);
  uv_signal_start(
      sigterm, [](uv_signal_t* s, int) { static_cast<Server*>(s->data)->startDrain(); }, SIGTERM);
  uv_signal_start(
      sigint, [](uv_signal_t* s, int) { static_cast<Server*>(s->data)->startDrain(); }, SIGINT);
  signal(SIGPIPE, SIG_IGN);

  for (uint32_t i = 0; i < n; ++i) workers_[i]->start(worker_fds_[i]);
  // Without this the per-IP table grows with every address ever seen.
  // Tunnels whose worker stopped polling are closed.
  tunnel_timer_ = main_.createTimer([this] {
    tunnel_->reap(Dispatcher::monotonicNs() / 1000000);
    tunnel_timer_->enable(kTunnelReapMs);
  });
  tunnel_timer_->enable(kTunnelReapMs);
  sweep_timer_ = main_.createTimer([this] {
    if (auto st = state_.rateLimitState()) {
      uint64_t now = filters::ratelimit::nowSeconds();
      size_t removed = st->ips.sweep(now) + st->keys.sweep(now) + st->auth_failures.sweep(now);
      if (removed)
        log::debug("rate-limit entries swept",
                   {{"removed", log::num(static_cast<long long>(removed))}});
    }
    // A restart must not bring logged-out sessions back.
    persistLogouts(true);
    sweep_timer_->enable(kSweepIntervalMs);
  });
  sweep_timer_->enable(kSweepIntervalMs);
  overload_timer_ = main_.createTimer([this] { checkMemory(); });
  overload_timer_->enable(kOverloadCheckMs);
  if (!farm_) {
    // A rebuild rotates the session ticket key when due; it also re-arms this.
    ticket_timer_ = main_.createTimer([this] {
      std::string why;
      if (!rebuild(&why))
        log::error("rebuilding for a session ticket key rotation failed",
                   {{"error", log::str(why)}});
    });
    int64_t rotation = base_snapshot_.session_tickets().rotation().seconds();
    if (base_snapshot_.session_tickets().has_rotation() && rotation > 0)
      ticket_timer_->enable(tickets_.secondsToNext(time(nullptr), rotation) * 1000);
  }
  dns_timer_ = main_.createTimer([this] { refreshDns(); });
  dns_timer_->enable(dnsNames(*cfg, nullptr));
  if (farm_) {
    farm_->setIdentity(nodeId(*cfg), listenAddresses(*cfg));
    startTunnelRelay(*cfg);
    farm_->setRateLimitState(state_.rateLimitState());
    farm_->setMembersFile(farm_snapshot_path_.substr(0, farm_snapshot_path_.rfind('/')) +
                          "/farm-members");
    if (control_plane_) {
      // The first target is this member's own farm port.
      farm_->watchForOtherPrimaries({farm_plan_.targets.begin() + 1, farm_plan_.targets.end()},
                                    kOtherPrimaryFirstCheckMs, kOtherPrimaryCheckMs);
    }
    state_.farm_view = [this] {
      FarmView v = farm_->view();
      if (farm_options_.supervised) {
        v.supervised = true;
        v.primary = farm_plan_.primary;
        v.is_primary = farm_plan_.is_primary;
        if (control_plane_) {
          v.control_plane_pid = control_plane_->pid();
          v.control_plane_starts = control_plane_->starts();
        }
      }
      return v;
    };
    farm_->start();
  }
  std::string ports;
  for (const auto& l : cfg->listeners) {
    ports += ",\"" + l.name + "_port\":" + std::to_string(l.port);
  }
  log::info(
      "ready",
      {{"workers", log::num(n)},
       {"version", log::str(cfg->version())},
       {"api_keys", log::num(cfg->snapshot.auth().api_keys_size())},
       {"require_api_key", cfg->snapshot.auth().require_api_key() ? "true" : "false"},
       {"routers", log::num(cfg->cluster("routers")
                                ? static_cast<long long>(cfg->cluster("routers")->hosts.size())
                                : 0)}});
  // A machine-readable line with the bound ports (tests use port 0).
  std::string ready = "{\"event\":\"ready\"" + ports + "}\n";
  if (write(2, ready.data(), ready.size()) < 0) {
  }

  if (control_plane_) control_plane_->start();
  main_.run();
  farm_.reset();
  control_plane_.reset();  // stops it (the members serve on)
  stopAcme();
  stapler_.reset();

  for (auto& w : workers_) w->stop();
  for (auto& w : workers_) w->join();
  persistLogouts(false);
  health_.reset();
  for (uv_signal_t* sig : {sighup, sigterm, sigint}) {
    uv_close(reinterpret_cast<uv_handle_t*>(sig),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_signal_t*>(h); });
  }
  log::info("exit");
  return 0;
}

}  // namespace eldric::server

// ---------------------------------------------------------------------------
// Admin API over the embedded store (standalone mode). The REST semantics
// live in controlplane/core/admin_rest, shared with the control plane.

namespace eldric::server {

void Server::appendTunnelMetrics(std::string& out) {
  auto& st = tunnel_->stats();
  size_t tunnels = 0, parked = 0, queued = 0, in_flight = 0;
  for (const auto& t : tunnel_->list()) {
    ++tunnels;
    parked += t.parked;
    queued += t.queued;
    in_flight += t.in_flight;
  }
  auto line = [&out](const char* name, const char* help, const char* type, const std::string& v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + " " + v + "\n";
  };
  line("eldric_edge_tunnels", "NAT tunnels open.", "gauge", std::to_string(tunnels));
  line("eldric_edge_tunnel_parked_polls", "Worker polls waiting for a request.", "gauge",
       std::to_string(parked));
  line("eldric_edge_tunnel_queued", "Forwarded requests waiting for a poll.", "gauge",
       std::to_string(queued));
  line("eldric_edge_tunnel_in_flight", "Requests handed to workers, not answered yet.", "gauge",
       std::to_string(in_flight));
  // A counter family by outcome.
  auto outcomes = [&out](const char* name, const char* help,
                         std::initializer_list<std::pair<const char*, uint64_t>> values) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    for (const auto& [outcome, v] : values) {
      out += std::string(name) + "{outcome=\"" + outcome + "\"} " + std::to_string(v) + "\n";
    }
  };
  outcomes("eldric_edge_tunnel_forwarded_total", "Requests forwarded through tunnels, by outcome.",
           {{"ok", st.forwarded_ok.load()},
            {"failed", st.forwarded_failed.load()},
            {"queue_full", st.queue_full.load()},
            {"no_poll", st.no_poll.load()},
            {"no_answer", st.no_answer.load()}});
  outcomes("eldric_edge_tunnel_relays_total",
           "Forwards relayed to the farm member that holds the tunnel, by outcome.",
           {{"started", st.relayed.load()}, {"failed", st.relay_failed.load()}});
  line("eldric_edge_tunnels_reaped_total", "Tunnels closed because their worker stopped polling.",
       "counter", std::to_string(st.reaped.load()));
}

namespace {

// /api/v1/plugins/{id}[/{action}]: the id and action.
bool pluginPath(const std::string& path, std::string* id, std::string* action) {
  static constexpr std::string_view kPrefix = "/api/v1/plugins/";
  if (path.compare(0, kPrefix.size(), kPrefix) != 0) return false;
  std::string rest = path.substr(kPrefix.size());
  size_t slash = rest.find('/');
  *id = rest.substr(0, slash);
  *action = slash == std::string::npos ? std::string() : rest.substr(slash + 1);
  return !id->empty();
}

}  // namespace

void Server::handle(const std::string& method, const std::string& path, std::string body,
                    const std::string& caller, const std::string& credential, Dispatcher& worker,
                    std::function<void(Reply)> done) {
  // The credential is copied only where it is passed on (a farm member).
  main_.post([this, method, path, body = std::move(body), caller,
              credential = farm_ ? credential : std::string(), &worker, done] {
    if (farm_) {
      // A farm's state lives in the control plane: carry the call there.
      // What only this member knows is its own: a plugin's runtime status
      // is added to the control plane's answer, and valves the plugin
      // running here would refuse are refused before they are stored.
      std::string plugin_id, action;
      bool plugin_path = pluginPath(path, &plugin_id, &action);
      if (plugin_path && action == "valves" && method == "PUT") {
        std::string why, field;
        if (!filters::plugins::validateValves(plugin_runtime_.valvesSchema(plugin_id), body, &why,
                                              &field)) {
          Reply reply{400, why, "invalid_valves"};
          worker.post([done, reply] { done(reply); });
          return;
        }
      }
      bool add_runtime = plugin_path && action.empty() && method == "GET";
      farm_->handleRest(method, path, body, caller, credential,
                        [this, &worker, done, add_runtime, plugin_id](int status, std::string b,
                                                                      std::string code) {
                          if (add_runtime && status == 200 && b.size() > 2 && b.back() == '}') {
                            std::string runtime = plugin_runtime_.statusJson(plugin_id, true);
                            if (!runtime.empty()) b.insert(b.size() - 1, ",\"runtime\":" + runtime);
                          }
                          Reply reply{status, std::move(b), std::move(code)};
                          worker.post([done, reply] { done(reply); });
                        });
      return;
    }
    bool changed = false;
    Reply reply = executeAdmin(method, path, body, caller, &changed);
    auto respond = [&worker, done, reply] { worker.post([done, reply] { done(reply); }); };
    if (!changed) {
      respond();
      return;
    }
    // The change is committed; answer only once every worker enforces it.
    std::string error;
    if (!rebuild(&error, respond)) {
      log::error("rebuilding the snapshot after an admin change failed",
                 {{"error", log::str(error)}});
      respond();
    }
  });
}

bool Server::rebuild(std::string* error, std::function<void()> done) {
  auto cfg = build(base_snapshot_, error);
  if (!cfg) return false;
  applyConfig(cfg, std::move(done));
  return true;
}

void Server::refreshDns() {
  // The cache already holds a new address whose rebuild failed (a
  // certificate file unreadable at that moment, say): try again, or the
  // next refresh, seeing no change, would leave the old address in use.
  std::string error;
  if (dns_rebuild_pending_ && rebuild(&error)) dns_rebuild_pending_ = false;
  std::vector<std::string> names;
  uint64_t interval = dnsNames(*config(), &names);
  dns_.refresh(names, [this](std::vector<upstream::DnsCache::Change> changes) {
    for (const auto& c : changes) {
      log::info("upstream address changed",
                {{"host", log::str(c.host)}, {"from", log::str(c.from)}, {"to", log::str(c.to)}});
    }
    std::string error;
    dns_rebuild_pending_ = !rebuild(&error);
    if (dns_rebuild_pending_) {
      log::error(
          "rebuilding the snapshot after an upstream address change failed; retried at the next "
          "refresh",
          {{"error", log::str(error)}});
    }
  });
  dns_timer_->enable(interval);
}

AdminBackend::Reply Server::executeAdmin(const std::string& method, const std::string& path,
                                         const std::string& body, const std::string& caller,
                                         bool* changed) {
  controlplane::AdminContext ctx;
  ctx.store = store_.get();
  ctx.config_auth = &base_snapshot_.auth();
  ctx.rotation_overlap_seconds = base_snapshot_.auth().rotation_overlap().seconds();
  auto state = state_.rateLimitState();
  if (state) {
    ctx.usage_json = [state](const std::string& client_id) {
      uint64_t now = filters::ratelimit::nowSeconds();
      auto e = state->keys.get(client_id, now);
      return "{\"requests_in_window\":" + std::to_string(e->requests.count(now)) +
             ",\"tokens_in_window\":" + std::to_string(e->tokens.count(now)) +
             ",\"in_flight\":" + std::to_string(e->in_flight.load()) + "}";
    };
  }
  // GET /api/v1/farm on a standalone Edge: itself, serving its version.
  ctx.mode = "single";
  ctx.farm_status = [this](edge::v1::FarmStatus* out) {
    auto cfg = config();
    if (!cfg) return;
    out->set_current_version(cfg->version());
    auto* m = out->add_members();
    m->set_node_id(nodeId(*cfg));
    for (const auto& a : listenAddresses(*cfg)) m->add_listen_addresses(a);
    m->set_build_version("eldric-edge 0.1.0");
    m->set_acked_version(cfg->version());
    addUpstreamViews(*cfg, main_.nowMs(), m->mutable_upstreams());
  };
  ctx.plugin_runtime = [this](const std::string& id, bool detailed) {
    return plugin_runtime_.statusJson(id, detailed);
  };
  ctx.check_valves = [this](const std::string& id, const std::string& valves, std::string* error,
                            std::string* field) {
    return filters::plugins::validateValves(plugin_runtime_.valvesSchema(id), valves, error, field);
  };
  ctx.certificates_json = [this] {
    auto cfg = config();
    return controlplane::acme::certificatesJson(cfg ? cfg->snapshot : base_snapshot_, acme_.get(),
                                                static_cast<int64_t>(time(nullptr)));
  };
  if (acme_) ctx.renew_certificates = [this](std::string* why) { return acme_->renewNow(why); };
  controlplane::RestReply r = controlplane::handleAdminRest(ctx, method, path, body, changed);
  // The path names the client or plugin; bodies (keys, valves) are never logged.
  if (*changed) {
    log::info(
        "admin state changed",
        {{"method", log::str(method)}, {"path", log::str(path)}, {"caller", log::str(caller)}});
  }
  return Reply{r.status, std::move(r.body), std::move(r.error_code)};
}

void Server::stopAcme() {
  // The manager's thread may be waiting on the main loop (this thread)
  // for its self-check: release it first, or the join below would wait
  // for the check's deadline.
  if (acme_checker_) acme_checker_->interrupt();
  acme_.reset();
  acme_checker_.reset();
}

bool Server::startAcme(const config::AcmeSettings& settings, std::string* error) {
  auto transport = makeAcmeTransport(main_, settings.ca_file, error);
  if (!transport) return false;
  // The self-check before the CA is asked: this Edge's own HTTP port
  // answers each token (a wildcard bind is reached on loopback).
  std::string check_base;
  for (const auto& b : bound_listeners_) {
    if (b.name != "http") continue;
    std::string host = b.address == "0.0.0.0" ? "127.0.0.1" : b.address == "::" ? "::1" : b.address;
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    check_base = "http://" + host + ":" + std::to_string(b.port) + "/.well-known/acme-challenge/";
  }
  std::shared_ptr<controlplane::acme::Transport> checker = makeAcmeTransport(main_, "", error);
  if (!checker) return false;
  acme_checker_ = checker;
  controlplane::acme::Hooks hooks;
  hooks.changed = [this] {
    main_.post([this] {
      std::string why;
      if (!rebuild(&why))
        log::error("rebuilding the snapshot for ACME failed", {{"error", log::str(why)}});
    });
  };
  hooks.served = [check_base, checker](
                     const std::vector<std::pair<std::string, std::string>>& challenges,
                     std::string* why) {
    if (check_base.empty()) {
      *why = "no plaintext HTTP listener";
      return false;
    }
    for (const auto& c : challenges) {
      controlplane::acme::HttpResponse res;
      std::string err;
      if (!checker->fetch({"GET", check_base + c.first, ""}, &res, &err) || res.status != 200 ||
          res.body != c.second) {
        *why = err.empty() ? "the HTTP port answered " + std::to_string(res.status) : err;
        return false;
      }
    }
    return true;
  };
  acme_settings_ = settings;
  acme_ = std::make_unique<controlplane::acme::Manager>(settings, base_snapshot_.data_dir(),
                                                        std::move(transport), std::move(hooks));
  return acme_->start(error);
}

std::vector<std::string> Server::listenAddresses(const config::RuntimeConfig& cfg) const {
  std::vector<std::string> out;
  for (const auto& l : cfg.listeners) {
    bool v6 = l.address.find(':') != std::string::npos;
    out.push_back((v6 ? "[" + l.address + "]" : l.address) + ":" + std::to_string(l.port));
  }
  return out;
}

std::string Server::nodeId(const config::RuntimeConfig& cfg) const {
  if (!farm_options_.node_id.empty()) return farm_options_.node_id;
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + ":" +
         (cfg.listeners.empty() ? "0" : std::to_string(cfg.listeners[0].port));
}

}  // namespace eldric::server
