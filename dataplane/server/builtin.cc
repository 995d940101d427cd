#include "dataplane/server/builtin.h"

#include <sys/resource.h>
#include <time.h>

#include <cinttypes>
#include <cstdio>

#include "common/address.h"
#include "common/log.h"
#include "dataplane/config/runtime_config.h"
#include "dataplane/http/reply.h"
#include "dataplane/server/server.h"
#include "dataplane/stats/stats.h"
#include "filters/auth/auth_filter.h"
#include "filters/usage/usage_filter.h"

namespace eldric::server {
namespace {

constexpr const char* kVersion = "0.1.0";

uint64_t wallMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

void appendHost(std::string& out, const upstream::Host& h, uint64_t now_ms) {
  out += "{\"url\":";
  log::appendJsonString(out, h.url());
  // Where the URL's host resolves now (re-resolved every dns_refresh_ms).
  out += ",\"address\":";
  log::appendJsonString(out, network::formatAddress(h.address()));
  // Every address of the name; new connections go to the next one when
  // one refuses.
  out += ",\"addresses\":[";
  for (size_t i = 0; i < h.addresses().size(); ++i) {
    if (i) out += ",";
    log::appendJsonString(
        out, network::formatAddress(reinterpret_cast<const sockaddr*>(&h.addresses()[i])));
  }
  out += "],\"healthy\":";
  out += h.available(now_ms) ? "true" : "false";
  out += ",\"health_check\":";
  out += h.healthy() ? "\"passing\"" : "\"failing\"";
  out += ",\"ejected\":";
  out += h.ejected(now_ms) ? "true" : "false";
  out += ",\"latency_ms\":";
  char buf[32];
  snprintf(buf, sizeof buf, "%.3f", static_cast<double>(h.lastLatencyUs()) / 1000.0);
  out += buf;
  out += ",\"in_flight\":" + std::to_string(h.in_flight.load(std::memory_order_relaxed));
  out += ",\"requests_total\":" + std::to_string(h.requests_total.load(std::memory_order_relaxed));
  out += ",\"failures_total\":" + std::to_string(h.failures_total.load(std::memory_order_relaxed));
  out += ",\"last_check\":";
  log::appendJsonString(out, h.lastCheckDetail());
  out += "}";
}

// One Prometheus histogram series summed over the workers' shards.
// `labels` is empty or `name="value"` pairs without braces.
template <typename H, typename Field>
void appendHistogram(std::string& out, stats::Registry& reg, const char* name,
                     const std::string& labels, Field field) {
  uint64_t buckets[H::kBucketCount + 1] = {0};
  uint64_t sum_us = 0;
  reg.forEachWorker([&](stats::WorkerStats& w) {
    const H& h = field(w);
    for (size_t b = 0; b <= H::kBucketCount; ++b) buckets[b] += h.buckets[b].value();
    sum_us += h.sum_us.value();
  });
  stats::appendPrometheusHistogram(out, name, labels, H::kBounds, buckets, H::kBucketCount,
                                   static_cast<double>(sum_us) / 1e6);
}

}  // namespace

http::FilterHeadersStatus BuiltinFilter::decodeHeaders(http::RequestHeaders&, bool end_stream) {
  if (!end_stream) return http::FilterHeadersStatus::Continue;  // answered once the body is read
  respond();
  return http::FilterHeadersStatus::StopIteration;
}

http::FilterDataStatus BuiltinFilter::decodeData(Buffer& data, bool end_stream) {
  data.clear();
  if (end_stream) respond();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

void BuiltinFilter::reply(int status, const char* content_type, std::string body) {
  http::sendReply(*callbacks_, status, content_type, std::move(body));
}

void BuiltinFilter::respond() {
  switch (handler_) {
    case edge::v1::BUILTIN_HANDLER_HEALTH: {
      int status = 200;
      std::string body = healthJson(&status);
      reply(status, "application/json", std::move(body));
      return;
    }
    case edge::v1::BUILTIN_HANDLER_UPSTREAMS:
      reply(200, "application/json", upstreamsJson());
      return;
    case edge::v1::BUILTIN_HANDLER_METRICS:
      reply(200, "text/plain; version=0.0.4; charset=utf-8", metricsText());
      return;
    default:
      callbacks_->sendLocalReply(
          http::ErrorReply{500, "unknown built-in handler", "server_error", "internal"});
  }
}

std::string BuiltinFilter::healthJson(int* status) {
  const auto& cfg = config_;
  uint64_t now = callbacks_->dispatcher().nowMs();
  const upstream::ClusterInfo* routers = cfg.cluster("routers");
  size_t healthy = 0, total = 0;
  std::string list = "[";
  if (routers) {
    for (const auto& h : routers->hosts) {
      if (total++) list += ",";
      if (h->available(now)) ++healthy;
      appendHost(list, *h, now);
    }
  }
  list += "]";
  bool draining = state_.draining.load();
  const char* overall =
      healthy == total && total > 0 ? "ok" : (healthy > 0 ? "degraded" : "unavailable");
  if (draining) overall = "draining";
  *status = (healthy > 0 && !draining) ? 200 : 503;
  std::string out = "{\"status\":\"";
  out += overall;
  // With keys required, an anonymous caller (a load balancer's probe) learns
  // up or down and nothing else: router addresses, versions and the farm
  // are for admin keys, as on /api/v1/upstreams.
  const auto& id = callbacks_->streamInfo().identity;
  if (cfg.snapshot.auth().require_api_key() && !(id && id->hasScope(edge::v1::SCOPE_ADMIN))) {
    out += "\"}";
    return out;
  }
  out += "\",\"service\":\"eldric-edge\",\"version\":\"";
  out += kVersion;
  out += "\",\"mode\":";
  log::appendJsonString(out, state_.mode);
  out += ",\"snapshot_version\":";
  log::appendJsonString(out, cfg.version());
  out += ",\"uptime_seconds\":" + std::to_string((wallMs() - state_.start_ms) / 1000);
  out += ",\"routers_healthy\":" + std::to_string(healthy);
  out += ",\"routers_total\":" + std::to_string(total);
  out += ",\"routers\":" + list;
  // What each TLS listener serves; an ACME listener still on its stand-in
  // says why (it does not make the Edge unhealthy: clients that pin the
  // stand-in are not expected, and the CA may answer on the next try).
  out += ",\"tls\":[";
  bool first_cert = true;
  for (const auto& l : cfg.listeners) {
    for (const auto& c : l.certificates) {
      out += first_cert ? "{\"listener\":" : ",{\"listener\":";
      first_cert = false;
      log::appendJsonString(out, l.name);
      out += ",\"source\":";
      log::appendJsonString(out, c.source);
      out += ",\"subject\":";
      log::appendJsonString(out, c.subject);
      out += ",\"not_after\":" + std::to_string(c.not_after);
      if (!l.acme_pending.empty()) {
        out += ",\"acme_pending\":";
        log::appendJsonString(out, l.acme_pending);
      }
      out += "}";
    }
  }
  out += "]";
  // A plugin in trouble shows here; it does not make the Edge unhealthy.
  if (state_.plugins_health) out += ",\"plugins\":" + state_.plugins_health();
  if (state_.farm_view) {
    // Losing the control plane does not make the Edge unhealthy: it serves
    // on with the last good snapshot. Said here, not in the status code.
    FarmView f = state_.farm_view();
    out += ",\"control_plane\":{\"connected\":";
    out += f.connected ? "true" : "false";
    out += ",\"target\":";
    log::appendJsonString(out, f.target);
    out += ",\"snapshot_version\":";
    log::appendJsonString(out, f.acked_version);
    out += ",\"last_rejected\":";
    log::appendJsonString(out, f.last_nack);
    out += ",\"farm_members\":" + std::to_string(f.members);
    out += ",\"offline_policy\":";
    log::appendJsonString(out, f.offline_policy);
    if (f.supervised) {
      out += ",\"primary\":";
      log::appendJsonString(out, f.primary);
      out += ",\"this_member_is_primary\":";
      out += f.is_primary ? "true" : "false";
      if (!f.other_primary.empty()) {
        out += ",\"other_primary\":";
        log::appendJsonString(out, f.other_primary);
      }
      if (f.is_primary) {
        out += ",\"process\":{\"running\":";
        out += f.control_plane_pid ? "true" : "false";
        out += ",\"pid\":" + std::to_string(f.control_plane_pid) +
               ",\"starts\":" + std::to_string(f.control_plane_starts) + "}";
      }
    }
    out += f.connected
               ? "}"
               : ",\"note\":\"control plane unreachable: serving with the last good snapshot\"}";
  }
  out += "}";
  return out;
}

std::string BuiltinFilter::upstreamsJson() {
  const auto& cfg = config_;
  uint64_t now = callbacks_->dispatcher().nowMs();
  std::string out = "{\"clusters\":[";
  bool first_cluster = true;
  for (const auto& c : cfg.clusters) {
    if (!first_cluster) out += ",";
    first_cluster = false;
    out += "{\"name\":";
    log::appendJsonString(out, c->name);
    out += ",\"upstreams\":[";
    bool first = true;
    for (const auto& h : c->hosts) {
      if (!first) out += ",";
      first = false;
      appendHost(out, *h, now);
    }
    out += "]}";
  }
  out += "]}";
  return out;
}

std::string BuiltinFilter::metricsText() {
  const auto& cfg = config_;
  auto& reg = stats::Registry::get();
  std::vector<std::string> routes = reg.routeNames();
  std::string out;
  out.reserve(16 * 1024);
  char line[2048];

  // Requests by route and status.
  out +=
      "# HELP eldric_edge_http_requests_total HTTP requests answered, by route and status code.\n";
  out += "# TYPE eldric_edge_http_requests_total counter\n";
  std::vector<uint64_t> sums(stats::kMaxStatus - stats::kMinStatus + 1);
  for (size_t r = 0; r < routes.size(); ++r) {
    if (routes[r].empty()) continue;
    std::fill(sums.begin(), sums.end(), 0);
    reg.forEachWorker([&](stats::WorkerStats& w) {
      for (size_t s = 0; s < sums.size(); ++s) sums[s] += w.requests[r][s].value();
    });
    for (size_t s = 0; s < sums.size(); ++s) {
      if (!sums[s]) continue;
      snprintf(line, sizeof line,
               "eldric_edge_http_requests_total{route=\"%s\",code=\"%zu\"} %" PRIu64 "\n",
               routes[r].c_str(), s + stats::kMinStatus, sums[s]);
      out += line;
    }
  }

  out +=
      "# HELP eldric_edge_http_request_duration_seconds Time from request start to response end.\n";
  out += "# TYPE eldric_edge_http_request_duration_seconds histogram\n";
  for (size_t r = 0; r < routes.size(); ++r) {
    if (routes[r].empty()) continue;
    appendHistogram<stats::Histogram>(
        out, reg, "eldric_edge_http_request_duration_seconds", "route=\"" + routes[r] + "\"",
        [r](stats::WorkerStats& w) -> const stats::Histogram& { return w.latency[r]; });
  }
  out +=
      "# HELP eldric_edge_event_loop_busy_seconds Time a worker's event loop spent running "
      "callbacks in one iteration (from its first callback after waking to its next wait). A "
      "long one delays every connection on that worker.\n"
      "# TYPE eldric_edge_event_loop_busy_seconds histogram\n";
  appendHistogram<stats::LoopHistogram>(
      out, reg, "eldric_edge_event_loop_busy_seconds", "",
      [](stats::WorkerStats& w) -> const stats::LoopHistogram& { return w.loop_busy; });

  auto counter = [&](const char* name, const char* help, const char* type,
                     stats::Counter stats::WorkerStats::*field) {
    uint64_t v = 0;
    reg.forEachWorker([&](stats::WorkerStats& w) { v += (w.*field).value(); });
    snprintf(line, sizeof line, "# HELP %s %s\n# TYPE %s %s\n%s %" PRIu64 "\n", name, help, name,
             type, name, v);
    out += line;
  };
  using W = stats::WorkerStats;
  counter("eldric_edge_downstream_connections_total", "Client connections accepted.", "counter",
          &W::downstream_cx_total);
  counter("eldric_edge_downstream_connections_active", "Client connections open now.", "gauge",
          &W::downstream_cx_active);
  counter("eldric_edge_downstream_connections_rejected_total",
          "Client connections refused over the per-worker limit.", "counter",
          &W::downstream_cx_rejected);
  counter("eldric_edge_downstream_received_bytes_total",
          "Bytes received from clients (on the wire).", "counter", &W::downstream_bytes_rx);
  counter("eldric_edge_downstream_sent_bytes_total", "Bytes sent to clients (on the wire).",
          "counter", &W::downstream_bytes_tx);
  counter("eldric_edge_tls_handshakes_total", "TLS handshakes completed.", "counter",
          &W::tls_handshakes);
  counter("eldric_edge_tls_handshake_errors_total", "TLS handshakes that failed.", "counter",
          &W::tls_handshake_errors);
  counter("eldric_edge_http_codec_errors_total", "Malformed requests refused by the HTTP codec.",
          "counter", &W::codec_errors);
  counter("eldric_edge_http_header_timeouts_total",
          "Connections closed for not sending headers in time.", "counter", &W::header_timeouts);
  counter("eldric_edge_http_body_timeouts_total",
          "Requests answered 408 for not sending their body in time.", "counter",
          &W::body_timeouts);
  counter("eldric_edge_downstream_requests_reset_total",
          "Requests whose client went away before the response ended.", "counter",
          &W::downstream_rq_reset);
  counter("eldric_edge_upstream_requests_total", "Requests sent to upstreams (attempts).",
          "counter", &W::upstream_rq_total);
  counter("eldric_edge_upstream_retries_total", "Attempts retried on another upstream.", "counter",
          &W::upstream_rq_retry);
  counter("eldric_edge_upstream_connections_total", "Upstream connections opened.", "counter",
          &W::upstream_cx_total);
  counter("eldric_edge_upstream_connect_failures_total",
          "Upstream connects that failed or timed out.", "counter", &W::upstream_cx_connect_fail);
  counter("eldric_edge_upstream_timeouts_total", "Requests that hit the request timeout.",
          "counter", &W::upstream_rq_timeout);
  counter("eldric_edge_upstream_resets_total", "Upstream responses cut off mid-way.", "counter",
          &W::upstream_rq_reset);

  {
    // Seconds until each served certificate expires (negative once it has).
    int64_t wall = static_cast<int64_t>(wallMs() / 1000);
    out +=
        "# HELP eldric_tls_certificate_expiry_seconds Seconds until the certificate a TLS "
        "listener serves expires.\n# TYPE eldric_tls_certificate_expiry_seconds gauge\n";
    for (const auto& l : cfg.listeners) {
      for (const auto& c : l.certificates) {
        if (c.not_after == 0) continue;
        out += "eldric_tls_certificate_expiry_seconds{listener=\"" + l.name + "\",source=\"" +
               c.source + "\"} " + std::to_string(c.not_after - wall) + "\n";
      }
    }
  }
  uint64_t now = callbacks_->dispatcher().nowMs();
  out += "# HELP eldric_edge_upstream_healthy Whether an upstream takes traffic (1) or not (0).\n";
  out += "# TYPE eldric_edge_upstream_healthy gauge\n";
  for (const auto& c : cfg.clusters) {
    for (const auto& h : c->hosts) {
      snprintf(line, sizeof line,
               "eldric_edge_upstream_healthy{cluster=\"%s\",upstream=\"%s\"} %d\n", c->name.c_str(),
               h->url().c_str(), h->available(now) ? 1 : 0);
      out += line;
    }
  }
  out += "# HELP eldric_edge_upstream_in_flight Requests in flight to an upstream.\n";
  out += "# TYPE eldric_edge_upstream_in_flight gauge\n";
  for (const auto& c : cfg.clusters) {
    for (const auto& h : c->hosts) {
      snprintf(line, sizeof line,
               "eldric_edge_upstream_in_flight{cluster=\"%s\",upstream=\"%s\"} %" PRId64 "\n",
               c->name.c_str(), h->url().c_str(), h->in_flight.load(std::memory_order_relaxed));
      out += line;
    }
  }
  out +=
      "# HELP eldric_edge_upstream_health_check_latency_seconds Latency of the last health "
      "check.\n";
  out += "# TYPE eldric_edge_upstream_health_check_latency_seconds gauge\n";
  for (const auto& c : cfg.clusters) {
    for (const auto& h : c->hosts) {
      snprintf(line, sizeof line,
               "eldric_edge_upstream_health_check_latency_seconds{cluster=\"%s\",upstream=\"%s\"} "
               "%.6f\n",
               c->name.c_str(), h->url().c_str(), static_cast<double>(h->lastLatencyUs()) / 1e6);
      out += line;
    }
  }
  // The overload manager: its state and what it refused.
  snprintf(
      line, sizeof line,
      "# HELP eldric_edge_overload_active Whether an overload action is in force, by resource.\n"
      "# TYPE eldric_edge_overload_active gauge\n"
      "eldric_edge_overload_active{resource=\"memory\"} %d\n"
      "eldric_edge_overload_active{resource=\"requests\"} %d\n"
      "# HELP eldric_edge_active_requests Requests in progress, all workers.\n"
      "# TYPE eldric_edge_active_requests gauge\n"
      "eldric_edge_active_requests %lld\n"
      "# HELP eldric_edge_resident_memory_bytes Resident memory as the overload manager last read "
      "it.\n"
      "# TYPE eldric_edge_resident_memory_bytes gauge\n"
      "eldric_edge_resident_memory_bytes %" PRIu64
      "\n"
      "# HELP eldric_edge_overload_refused_total Router requests answered 503 while overloaded.\n"
      "# TYPE eldric_edge_overload_refused_total counter\n"
      "eldric_edge_overload_refused_total %" PRIu64
      "\n"
      "# HELP eldric_edge_overload_idle_closed_total Idle keep-alive connections closed while "
      "overloaded.\n"
      "# TYPE eldric_edge_overload_idle_closed_total counter\n"
      "eldric_edge_overload_idle_closed_total %" PRIu64 "\n",
      state_.memory_pressure.load() ? 1 : 0,
      state_.active_requests.load() > static_cast<int64_t>(config_.max_active_requests) ? 1 : 0,
      static_cast<long long>(state_.active_requests.load()), state_.rss_bytes.load(),
      state_.overload_refused.load(), state_.overload_shed_idle.load());
  out += line;
  if (state_.plugins_metrics) state_.plugins_metrics(out);
  // Who was refused, and why: bounded labels (reasons, tiers, client
  // names from the registry), never a key or an IP.
  auto& as = filters::auth::stats();
  snprintf(line, sizeof line,
           "# HELP eldric_edge_auth_failures_total Requests refused by API key authentication, by "
           "reason.\n"
           "# TYPE eldric_edge_auth_failures_total counter\n"
           "eldric_edge_auth_failures_total{reason=\"missing\"} %" PRIu64
           "\n"
           "eldric_edge_auth_failures_total{reason=\"invalid\"} %" PRIu64
           "\n"
           "eldric_edge_auth_failures_total{reason=\"expired\"} %" PRIu64
           "\n"
           "eldric_edge_auth_failures_total{reason=\"forbidden\"} %" PRIu64
           "\n"
           "eldric_edge_auth_failures_total{reason=\"throttled\"} %" PRIu64 "\n",
           as.missing.load(), as.invalid.load(), as.expired.load(), as.forbidden.load(),
           as.throttled.load());
  out += line;
  if (auto rl = state_.rateLimitState()) {
    snprintf(line, sizeof line,
             "# HELP eldric_edge_rate_limited_total Requests refused with 429, by tier.\n"
             "# TYPE eldric_edge_rate_limited_total counter\n"
             "eldric_edge_rate_limited_total{tier=\"global\"} %" PRIu64
             "\n"
             "eldric_edge_rate_limited_total{tier=\"ip\"} %" PRIu64
             "\n"
             "eldric_edge_rate_limited_total{tier=\"key\"} %" PRIu64
             "\n"
             "eldric_edge_rate_limited_total{tier=\"tokens\"} %" PRIu64
             "\n"
             "eldric_edge_rate_limited_total{tier=\"concurrency\"} %" PRIu64
             "\n"
             "# HELP eldric_edge_streams_cut_total Streams ended at the per-request token cap.\n"
             "# TYPE eldric_edge_streams_cut_total counter\n"
             "eldric_edge_streams_cut_total %" PRIu64 "\n",
             rl->refused_global.load(), rl->refused_ip.load(), rl->refused_key.load(),
             rl->refused_tokens.load(), rl->refused_concurrency.load(), rl->streams_cut.load());
    out += line;
  }
  {
    auto& us = filters::usage::stats();
    out += "# HELP eldric_edge_tokens_total Tokens counted in responses, by client.\n";
    out += "# TYPE eldric_edge_tokens_total counter\n";
    // Per-client figures name the clients: with keys required, for an
    // admin key only (Prometheus can send one: `authorization` in its
    // scrape config); everything else here is aggregate.
    const auto& id = callbacks_->streamInfo().identity;
    bool per_client =
        !config_.snapshot.auth().require_api_key() || (id && id->hasScope(edge::v1::SCOPE_ADMIN));
    std::lock_guard<std::mutex> lock(us.mutex);
    for (const auto& [client, n] : us.tokens_by_client) {
      if (!per_client) break;
      std::string name;
      for (char c : client) {
        if (c == '"' || c == '\\' || c == '\n') continue;  // names are [A-Za-z0-9._-] already
        name.push_back(c);
      }
      snprintf(line, sizeof line, "eldric_edge_tokens_total{client=\"%s\"} %" PRIu64 "\n",
               name.c_str(), n);
      out += line;
    }
  }
  if (state_.farm_view) {
    FarmView f = state_.farm_view();
    auto rl = state_.rateLimitState();
    bool offline = rl && rl->farm_offline.load();
    snprintf(line, sizeof line,
             "# HELP eldric_edge_control_plane_connected Whether the discovery stream is up.\n"
             "# TYPE eldric_edge_control_plane_connected gauge\n"
             "eldric_edge_control_plane_connected %d\n"
             "# HELP eldric_edge_farm_members Farm members reporting usage, this one included.\n"
             "# TYPE eldric_edge_farm_members gauge\n"
             "eldric_edge_farm_members %u\n"
             "# HELP eldric_edge_farm_offline Whether the offline rate-limit policy is in force, "
             "by policy.\n"
             "# TYPE eldric_edge_farm_offline gauge\n"
             "eldric_edge_farm_offline{policy=\"%s\"} %d\n"
             "# HELP eldric_edge_snapshots_total Snapshots from the control plane, by result.\n"
             "# TYPE eldric_edge_snapshots_total counter\n"
             "eldric_edge_snapshots_total{result=\"applied\"} %" PRIu64
             "\n"
             "eldric_edge_snapshots_total{result=\"rejected\"} %" PRIu64 "\n",
             f.connected ? 1 : 0, f.members, f.offline_policy.c_str(), offline ? 1 : 0,
             f.snapshots_applied, f.snapshots_rejected);
    out += line;
  }
  snprintf(line, sizeof line,
           "# HELP eldric_edge_config_reloads_total Config reloads (SIGHUP) by result.\n"
           "# TYPE eldric_edge_config_reloads_total counter\n"
           "eldric_edge_config_reloads_total{result=\"ok\"} %" PRIu64
           "\n"
           "eldric_edge_config_reloads_total{result=\"error\"} %" PRIu64
           "\n"
           "# HELP eldric_edge_start_time_seconds Process start, Unix time.\n"
           "# TYPE eldric_edge_start_time_seconds gauge\n"
           "eldric_edge_start_time_seconds %" PRIu64 "\n",
           state_.reloads_ok.load(), state_.reloads_failed.load(), state_.start_ms / 1000);
  out += line;
  return out;
}

}  // namespace eldric::server
