#include "dataplane/server/worker.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/log.h"
#include "dataplane/network/connection.h"
#include "dataplane/server/server.h"

namespace eldric::server {

namespace {
// How long an access log line may wait in its worker's buffer for others
// to be written with it (one write per batch).
constexpr uint64_t kAccessLogFlushMs = 200;
}  // namespace

struct Worker::ListenerHandle {
  uv_tcp_t tcp;
  Worker* worker;
  std::string name;
};

Worker::Worker(Server& server, uint32_t index, config::RuntimeConfigSharedPtr config)
    : server_(server),
      index_(index),
      config_(std::move(config)),
      stats_(std::make_unique<stats::WorkerStats>()) {
  stats::Registry::get().addWorker(stats_.get());
  http1_upstreams_ = std::make_unique<upstream::Http1UpstreamFactory>(dispatcher_, *stats_);
  router_context_.upstreams = http1_upstreams_.get();
  router_context_.stats = stats_.get();
  // Not owned by the slot: the router context lives as long as the worker.
  worker_locals_.set(router::kRouterContextKey, std::shared_ptr<router::RouterContext>(
                                                    std::shared_ptr<void>(), &router_context_));
  plugin_host_ = std::make_unique<filters::plugins::PluginHost>(dispatcher_);
  worker_locals_.set(
      filters::plugins::kPluginHostKey,
      std::shared_ptr<filters::plugins::PluginHost>(std::shared_ptr<void>(), plugin_host_.get()));
  access_log_fd_ = server.accessLogFd();
  dispatcher_.setExpensiveWorkBudget(config_->handshake_budget_ns);
  dispatcher_.setIterationObserver(
      [](void* ctx, uint64_t busy_ns) {
        static_cast<stats::WorkerStats*>(ctx)->loop_busy.record(busy_ns / 1000);
      },
      stats_.get());
}

void Worker::applyPlugins(const config::RuntimeConfigSharedPtr& config) {
  filters::plugins::PluginsConfig* plugins =
      config->worker_settings.get(filters::plugins::kPluginsConfigKey);
  if (!plugins) {
    if (!plugin_host_->empty()) {
      plugin_host_->apply(std::make_shared<const filters::plugins::PluginsConfig>());
    }
    return;
  }
  // The config holds its plugins: the host keeps the config alive.
  plugin_host_->apply(filters::plugins::PluginsConfigSharedPtr(config, plugins));
}

Worker::~Worker() {
  // Stats shards stay registered (the registry is process-wide) and the
  // process exits right after workers stop; leak the shard on purpose.
  stats_.release();
}

void Worker::start(const std::vector<std::pair<int, std::string>>& listen_fds) {
  for (const auto& [fd, name] : listen_fds) {
    auto l = std::make_unique<ListenerHandle>();
    l->worker = this;
    l->name = name;
    uv_tcp_init(dispatcher_.loop(), &l->tcp);
    l->tcp.data = l.get();
    uv_tcp_open(&l->tcp, fd);
    uv_listen(reinterpret_cast<uv_stream_t*>(&l->tcp), 1024, &Worker::onConnection);
    listeners_.push_back(std::move(l));
  }
  http1_upstreams_->onClusters(config_->clusters);
  // On the worker's own loop: its plugin processes belong to it.
  dispatcher_.post([this, config = config_] { applyPlugins(config); });
  // Armed by the first line of a batch (logAccess): a worker with nothing
  // to log, or no access log, never wakes for it.
  access_log_timer_ = dispatcher_.createTimer([this] { flushAccessLog(); });
  thread_ = std::thread([this] { dispatcher_.run(); });
}

void Worker::join() {
  if (thread_.joinable()) thread_.join();
}

void Worker::setConfig(config::RuntimeConfigSharedPtr config, std::function<void()> applied) {
  dispatcher_.post([this, config, applied] {
    config_ = config;
    dispatcher_.setExpensiveWorkBudget(config->handshake_budget_ns);
    http1_upstreams_->onClusters(config->clusters);
    applyPlugins(config);
    if (applied) applied();
  });
}

void Worker::onConnection(uv_stream_t* server, int status) {
  auto* l = static_cast<ListenerHandle*>(server->data);
  l->worker->dispatcher_.markBusy();
  if (status < 0) return;
  l->worker->accept(l);
}

void Worker::countActiveRequest(int delta) {
  server_.state().active_requests.fetch_add(delta, std::memory_order_relaxed);
}

const char* Worker::overloaded() {
  auto& st = server_.state();
  const char* why = nullptr;
  if (st.memory_pressure.load(std::memory_order_relaxed)) {
    why = "memory";
  } else if (st.active_requests.load(std::memory_order_relaxed) >
             static_cast<int64_t>(config_->max_active_requests)) {
    // The stream asking is counted already: more than the limit, not as many.
    why = "requests in progress";
  }
  if (why) st.overload_refused.fetch_add(1, std::memory_order_relaxed);
  return why;
}

void Worker::accept(ListenerHandle* l) {
  const config::CompiledListener* lc = config_->listener(l->name);
  if (!lc) return;
  int error = 0;
  network::Connection* conn = network::Connection::accept(
      dispatcher_, reinterpret_cast<uv_stream_t*>(&l->tcp), lc->tls ? lc->tls->get() : nullptr,
      network::ConnectionOptions(), &error);
  if (!conn) return;
  if (server_.state().memory_pressure.load(std::memory_order_relaxed)) {
    // Over the memory limit: no new connections until back under.
    stats_->downstream_cx_rejected.inc();
    conn->close(network::CloseType::NoFlush);
    return;
  }
  if (config_->max_connections_per_worker &&
      connections_.size() >= config_->max_connections_per_worker) {
    stats_->downstream_cx_rejected.inc();
    conn->close(network::CloseType::NoFlush);
    return;
  }
  // The total across workers: counted before the connection is kept,
  // given back when it closes.
  auto& total = server_.state().connections;
  if (total.fetch_add(1, std::memory_order_relaxed) >= config_->max_connections) {
    total.fetch_sub(1, std::memory_order_relaxed);
    stats_->downstream_cx_rejected.inc();
    conn->close(network::CloseType::NoFlush);
    return;
  }
  auto* cm = new http::ConnectionManager(*this, conn, *lc, lc->tls != nullptr);
  connections_.push_front(cm);
  cm->self_iter = connections_.begin();
  cm->on_closed = [this](http::ConnectionManager* c) {
    server_.state().connections.fetch_sub(1, std::memory_order_relaxed);
    connections_.erase(c->self_iter);
    maybeFinishDrain();
  };
}

void Worker::logAccess(const http::RequestHeaders* request, const http::StreamInfo& info,
                       std::string_view route_name) {
  if (access_log_fd_ < 0) return;
  uint64_t now = Dispatcher::monotonicNs();
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  std::string& out = access_log_buffer_;
  // A line waits at most kAccessLogFlushMs for the rest of its batch.
  if (out.empty() && access_log_timer_ && !access_log_timer_->enabled()) {
    access_log_timer_->enable(kAccessLogFlushMs);
  }
  char buf[160];
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  snprintf(buf, sizeof buf, "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"type\":\"access\"",
           tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
           ts.tv_nsec / 1000000);
  out += buf;
  out += ",\"request_id\":";
  log::appendJsonString(out, info.request_id);
  out += ",\"method\":";
  log::appendJsonString(out, request ? request->method : "");
  // The path only: a query string may carry secrets.
  out += ",\"path\":";
  log::appendJsonString(out, request ? request->pathOnly() : "");
  out += ",\"route\":";
  log::appendJsonString(out, route_name);
  snprintf(buf, sizeof buf,
           ",\"status\":%d,\"bytes_in\":%llu,\"bytes_out\":%llu,\"duration_ms\":%.3f", info.status,
           static_cast<unsigned long long>(info.request_body_bytes),
           static_cast<unsigned long long>(info.response_body_bytes),
           static_cast<double>(now - info.start_ns) / 1e6);
  out += buf;
  if (info.upstream_headers_ns) {
    snprintf(buf, sizeof buf, ",\"upstream_ttfb_ms\":%.3f",
             static_cast<double>(info.upstream_headers_ns - info.request_headers_done_ns) / 1e6);
    out += buf;
  }
  out += ",\"upstream\":";
  log::appendJsonString(out, info.upstream_host);
  if (info.attempts > 1) out += ",\"attempts\":" + std::to_string(info.attempts);
  if (!info.client_name.empty()) {
    out += ",\"client\":";
    log::appendJsonString(out, info.client_name);
  }
  if (info.tool_rounds) {
    out += ",\"tool_rounds\":" + std::to_string(info.tool_rounds) + ",\"tools\":";
    log::appendJsonString(out, info.tools_ran);
  }
  if (!info.error_code.empty()) {
    out += ",\"error\":";
    log::appendJsonString(out, info.error_code);
  }
  out += "}\n";
  if (out.size() > 32 * 1024) flushAccessLog();
}

void Worker::flushAccessLog() {
  if (access_log_buffer_.empty() || access_log_fd_ < 0) return;
  // One write per batch; the fd is O_APPEND (or stdout), shared by workers.
  size_t off = 0;
  while (off < access_log_buffer_.size()) {
    ssize_t n =
        ::write(access_log_fd_, access_log_buffer_.data() + off, access_log_buffer_.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      stats_->access_log_dropped.inc();
      break;
    }
    off += static_cast<size_t>(n);
  }
  access_log_buffer_.clear();
}

void Worker::drain() {
  dispatcher_.post([this] {
    draining_ = true;
    for (auto& l : listeners_) {
      uv_close(reinterpret_cast<uv_handle_t*>(&l->tcp), nullptr);
    }
    // Idle keep-alive connections close now; busy ones after their response.
    std::vector<http::ConnectionManager*> all(connections_.begin(), connections_.end());
    for (auto* cm : all) cm->startDrain();
    maybeFinishDrain();
  });
}

void Worker::shedIdle() {
  dispatcher_.post([this] {
    std::vector<http::ConnectionManager*> all(connections_.begin(), connections_.end());
    for (auto* cm : all) {
      if (cm->closeIfIdle())
        server_.state().overload_shed_idle.fetch_add(1, std::memory_order_relaxed);
    }
  });
}

void Worker::maybeFinishDrain() {
  if (draining_ && !drained_ && connections_.empty()) {
    drained_ = true;
    flushAccessLog();
    server_.workerDrained();
  }
}

void Worker::stop() {
  dispatcher_.post([this] {
    flushAccessLog();
    access_log_timer_.reset();
    // Hard stop (drain deadline): what is left is reset and closed, so each
    // stream's filters and buffers are freed when the loop is torn down.
    std::vector<http::ConnectionManager*> all(connections_.begin(), connections_.end());
    for (auto* cm : all) cm->closeNow();
    http1_upstreams_->clear();
    dispatcher_.exit();
  });
}

}  // namespace eldric::server
