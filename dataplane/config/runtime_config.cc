#include "dataplane/config/runtime_config.h"

#include <algorithm>
#include <cstring>

#include "common/pki/pki.h"
#include "dataplane/network/connection.h"
#include "dataplane/stats/stats.h"

namespace eldric::config {
namespace {

// The longest rate-limit window a snapshot may set: the config file's
// limit (rate_limits.window_seconds, 1 to 3600).
constexpr int64_t kMaxRateLimitWindowSeconds = 3600;

uint64_t ms(const google::protobuf::Duration& d, uint64_t fallback) {
  if (d.seconds() == 0 && d.nanos() == 0) return fallback;
  return static_cast<uint64_t>(d.seconds()) * 1000 + static_cast<uint64_t>(d.nanos()) / 1000000;
}

}  // namespace

const CompiledListener* RuntimeConfig::listener(std::string_view name) const {
  for (const auto& l : listeners) {
    if (l.name == name) return &l;
  }
  return nullptr;
}

const upstream::ClusterInfo* RuntimeConfig::cluster(std::string_view name) const {
  for (const auto& c : clusters) {
    if (c->name == name) return c.get();
  }
  return nullptr;
}

const std::string* RuntimeConfig::acmeKeyAuthorization(std::string_view token) const {
  auto it = acme_challenges.find(token);
  return it == acme_challenges.end() ? nullptr : &it->second;
}

const CompiledRoute* RuntimeConfig::match(std::string_view path, std::string_view method,
                                          bool* wrong_method) const {
  *wrong_method = false;
  for (const auto& r : routes) {
    bool hit = r.exact ? path == r.path : path.substr(0, r.path.size()) == r.path;
    if (!hit) continue;
    if (!r.allows(method)) {
      *wrong_method = true;
      return &r;
    }
    return &r;
  }
  return nullptr;
}

namespace {

// Each route's chain: kHttpFilters (one factory each, shared by every
// route), then the route's terminal handler.
bool buildFilterChains(const FilterRegistry& filters, RuntimeConfig& cfg, std::string* error) {
  std::vector<http::FilterFactory> shared;
  for (std::string_view name : kHttpFilters) {
    const FilterFactoryMaker* maker = filters.find(name);
    if (!maker) {
      *error = "no filter named \"" + std::string(name) + "\" is registered";
      return false;
    }
    http::FilterFactory factory;
    if (!(*maker)(FilterFactoryContext{cfg, nullptr, &cfg.worker_settings}, &factory, error)) {
      return false;
    }
    shared.push_back(std::move(factory));
  }
  for (auto& route : cfg.routes) {
    std::string_view name = terminalFilterName(route);
    route.handler = name;
    const FilterFactoryMaker* maker = filters.find(name);
    if (!maker) {
      *error = "route \"" + route.name + "\": no handler named \"" + std::string(name) +
               "\" is registered";
      return false;
    }
    http::FilterFactory terminal;
    if (!(*maker)(FilterFactoryContext{cfg, &route}, &terminal, error)) return false;
    route.filter_chain = shared;
    route.filter_chain.push_back(std::move(terminal));
  }
  return true;
}

}  // namespace

RuntimeConfigSharedPtr compile(const edge::v1::Snapshot& snapshot, upstream::HostRegistry& hosts,
                               std::string* error, const Resolver& resolve,
                               const FilterRegistry* filters) {
  // The rate limiter keeps a counter per second of its window, allocated
  // when the config is applied (filters/ratelimit/sliding_window.cc): a
  // window of 4e9 seconds from a control plane asked for 32 GB and took
  // the process down. Refused here like any other bad field.
  int64_t window_s = snapshot.rate_limits().window().seconds();
  if (window_s < 0 || window_s > kMaxRateLimitWindowSeconds) {
    *error = "rate_limits.window: " + std::to_string(window_s) + " s is outside 0 to " +
             std::to_string(kMaxRateLimitWindowSeconds) + " s";
    return nullptr;
  }

  auto cfg = std::make_shared<RuntimeConfig>();
  cfg->snapshot = snapshot;

  const auto& limits = snapshot.limits();
  if (limits.max_request_header_bytes())
    cfg->codec_limits.max_header_bytes = limits.max_request_header_bytes();
  if (limits.max_request_headers()) cfg->codec_limits.max_headers = limits.max_request_headers();
  if (limits.max_request_body_bytes())
    cfg->codec_limits.max_body_bytes = limits.max_request_body_bytes();
  cfg->header_timeout_ms = ms(limits.header_timeout(), cfg->header_timeout_ms);
  cfg->idle_timeout_ms = ms(limits.idle_timeout(), cfg->idle_timeout_ms);
  cfg->request_timeout_ms = ms(limits.request_timeout(), cfg->request_timeout_ms);
  cfg->drain_timeout_ms = ms(limits.drain_timeout(), cfg->drain_timeout_ms);
  cfg->max_connections_per_worker = limits.max_connections_per_worker();
  cfg->body_timeout_ms = ms(limits.body_timeout(), cfg->body_timeout_ms);
  if (limits.max_connections()) cfg->max_connections = limits.max_connections();
  if (limits.max_active_requests()) cfg->max_active_requests = limits.max_active_requests();
  cfg->max_rss_bytes = limits.max_rss_bytes();
  if (limits.has_handshake_budget()) {
    const auto& b = limits.handshake_budget();
    cfg->handshake_budget_ns =
        static_cast<uint64_t>(std::max<int64_t>(0, b.seconds())) * 1000000000ull +
        static_cast<uint64_t>(std::max<int32_t>(0, b.nanos()));
  }

  for (const auto& l : snapshot.listeners()) {
    CompiledListener cl;
    cl.name = l.name();
    cl.address = l.address().address();
    cl.port = l.address().port();
    cl.redirect_to_https = l.role() == edge::v1::Listener::ROLE_REDIRECT_TO_HTTPS;
    cl.redirect_port = l.redirect_port();
    cl.secure = l.has_tls();
    if (l.has_tls()) {
      // tls.mode "acme": the issued certificate, or a stand-in until then.
      edge::v1::TlsContext acme_tls;
      const edge::v1::TlsContext* tls_config = &l.tls();
      if (l.tls().acme()) {
        acme_tls = l.tls();
        acme_tls.clear_certificates();
        const auto& acme = snapshot.acme();
        if (!acme.certificate().certificate_chain_pem().empty()) {
          *acme_tls.add_certificates() = acme.certificate();
        } else {
          if (!tls::standInCertificate(acme_tls.add_certificates(), error)) return nullptr;
          cl.acme_pending = acme.status().empty() ? "no certificate issued yet" : acme.status();
        }
        tls_config = &acme_tls;
      }
      cl.tls = tls::ServerContext::create(*tls_config, snapshot.session_tickets(), error);
      if (!cl.tls) return nullptr;
      for (const auto& c : tls_config->certificates()) {
        pki::CertificateInfo info;
        std::string why;
        CompiledListener::Certificate entry;
        entry.source = !l.tls().acme() ? "file" : cl.acme_pending.empty() ? "acme" : "stand-in";
        if (pki::inspectChain(c.certificate_chain_pem(), &info, &why)) {
          entry.subject = info.subject;
          entry.not_after = info.not_after;
        }
        cl.certificates.push_back(std::move(entry));
      }
      if (uint64_t age = static_cast<uint64_t>(l.tls().hsts_max_age().seconds()); age > 0) {
        cl.hsts = "max-age=" + std::to_string(age) +
                  (l.tls().hsts_include_subdomains() ? "; includeSubDomains" : "");
      }
    }
    cfg->listeners.push_back(std::move(cl));
  }
  for (const auto& c : snapshot.acme().challenges())
    cfg->acme_challenges[c.token()] = c.key_authorization();
  // A redirect with no port of its own points at the HTTPS listener's.
  for (auto& l : cfg->listeners) {
    const CompiledListener* https = cfg->listener("https");
    if (l.redirect_to_https && l.redirect_port == 0 && https) l.redirect_port = https->port;
  }

  std::vector<std::string> urls;
  for (const auto& c : snapshot.clusters()) {
    auto info = std::make_shared<upstream::ClusterInfo>();
    info->name = c.name();
    info->index = hosts.clusterIndex(c.name());
    info->connect_timeout_ms = ms(c.connect_timeout(), info->connect_timeout_ms);
    if (c.has_health_check()) {
      const auto& hc = c.health_check();
      info->health_path = hc.path();
      info->health_interval_ms = ms(hc.interval(), info->health_interval_ms);
      info->health_timeout_ms = ms(hc.timeout(), info->health_timeout_ms);
      if (hc.unhealthy_threshold()) info->unhealthy_threshold = hc.unhealthy_threshold();
      if (hc.healthy_threshold()) info->healthy_threshold = hc.healthy_threshold();
    }
    if (c.has_outlier_detection()) {
      info->outlier_consecutive_failures = c.outlier_detection().consecutive_failures();
      info->outlier_ejection_ms =
          ms(c.outlier_detection().ejection_time(), info->outlier_ejection_ms);
    }
    if (c.max_idle_connections_per_endpoint())
      info->max_idle_per_host = c.max_idle_connections_per_endpoint();
    info->idle_connection_timeout_ms =
        ms(c.idle_connection_timeout(), info->idle_connection_timeout_ms);
    info->max_retries = c.max_retries();
    info->dns_refresh_ms = ms(c.dns_refresh_interval(), info->dns_refresh_ms);
    for (const auto& e : c.endpoints()) {
      upstream::AddressList addrs;
      std::string why;
      if (!resolve(e.host(), static_cast<uint16_t>(e.port()), &addrs, &why)) {
        *error = "cluster \"" + c.name() + "\": cannot resolve " + e.url() + ": " + why;
        return nullptr;
      }
      info->hosts.push_back(hosts.get(e.url(), e.host(), static_cast<uint16_t>(e.port()), addrs));
      urls.push_back(e.url());
    }
    cfg->clusters.push_back(std::move(info));
  }

  for (const auto& r : snapshot.routes()) {
    CompiledRoute cr;
    cr.name = r.name();
    cr.stats_index = stats::Registry::get().routeIndex(r.name());
    if (r.path_match_case() == edge::v1::Route::kExactPath) {
      cr.exact = true;
      cr.path = r.exact_path();
    } else {
      cr.path = r.path_prefix();
    }
    cr.methods.assign(r.methods().begin(), r.methods().end());
    cr.timeout_ms = ms(r.timeout(), 0);
    cr.body_timeout_ms = ms(r.body_timeout(), 0);
    cr.required_scope = r.required_scope();
    cr.keeps_credential = r.builtin() == edge::v1::BUILTIN_HANDLER_TUNNEL;
    if (r.builtin() == edge::v1::BUILTIN_HANDLER_TUNNEL) {
      // A worker's answer is one POST body, bounded by tunnel.max_answer_kb
      // (the tunnel filter's limit, whose default this is), not by
      // limits.max_body_kb.
      uint64_t answer = snapshot.tunnel().max_answer_bytes();
      cr.max_body_bytes = answer ? answer : kDefaultTunnelAnswerBytes;
    }
    cr.rate_limited = r.rate_limited();
    cr.count_tokens = r.count_tokens();
    if (r.action_case() == edge::v1::Route::kCluster) {
      for (const auto& c : cfg->clusters) {
        if (c->name == r.cluster()) cr.cluster = c;
      }
      if (!cr.cluster) {
        *error = "route \"" + r.name() + "\": unknown cluster \"" + r.cluster() + "\"";
        return nullptr;
      }
      cr.to_upstream = true;
    } else if (r.action_case() == edge::v1::Route::kBuiltin) {
      cr.builtin = r.builtin();
    } else {
      *error = "route \"" + r.name() + "\": no action";
      return nullptr;
    }
    cfg->routes.push_back(std::move(cr));
  }
  if (filters && !buildFilterChains(*filters, *cfg, error)) return nullptr;
  hosts.retainOnly(urls);
  return cfg;
}

}  // namespace eldric::config
