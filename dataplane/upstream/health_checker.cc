#include "dataplane/upstream/health_checker.h"

#include "common/log.h"
#include "dataplane/http/http1_client_codec.h"
#include "dataplane/network/connection.h"

namespace eldric::upstream {

struct HealthChecker::Check : public network::ConnectionCallbacks,
                              public http::ClientCodecCallbacks {
  Dispatcher& dispatcher;
  HostSharedPtr host;
  ClusterInfoSharedPtr cluster;
  TimerPtr interval;
  TimerPtr timeout;
  network::Connection* conn = nullptr;
  http::Http1ClientCodec codec{*this};
  uint64_t started_ns = 0;
  int status = 0;
  bool finished = true;
  uint32_t address_index = 0;  // the address of the connection in hand
  size_t addresses_tried = 0;  // in this check

  Check(Dispatcher& d, HostSharedPtr h, ClusterInfoSharedPtr c)
      : dispatcher(d), host(std::move(h)), cluster(std::move(c)) {
    interval = dispatcher.createTimer([this] { run(); });
    timeout = dispatcher.createTimer([this] { done(false, "timed out"); });
    interval->enable(0);
  }
  ~Check() override {
    if (conn) conn->close(network::CloseType::NoFlush);
  }

  void run() {
    finished = false;
    addresses_tried = 0;
    started_ns = Dispatcher::monotonicNs();
    timeout->enable(cluster->health_timeout_ms);
    probe();
  }

  // One connection to the host's current address; a refused one moves on
  // to its next address within the same check (a name such as localhost
  // may have a router on one of its two addresses only).
  void probe() {
    status = 0;
    ++addresses_tried;
    address_index = host->addressIndex();
    conn = network::Connection::connect(dispatcher, host->address(address_index),
                                        cluster->health_timeout_ms, network::ConnectionOptions());
    conn->setCallbacks(this);
    codec.beginResponse(false);
    Buffer req;
    req.add("GET " + cluster->health_path + " HTTP/1.1\r\nhost: " + host->authority() +
            "\r\nuser-agent: eldric-edge-health\r\nconnection: close\r\n\r\n");
    conn->write(req);
  }

  void done(bool ok, const std::string& detail) {
    if (finished) return;
    finished = true;
    timeout->disable();
    if (conn) {
      network::Connection* c = conn;
      conn = nullptr;
      c->close(network::CloseType::NoFlush);
    }
    uint64_t latency_us = (Dispatcher::monotonicNs() - started_ns) / 1000;
    host->setCheckResult(static_cast<uint64_t>(time(nullptr)) * 1000, latency_us, detail);
    bool was = host->healthy();
    if (ok) {
      host->checkFailures = 0;
      if (!was && ++host->checkSuccesses >= cluster->healthy_threshold) {
        host->setHealthy(true);
        log::info("upstream healthy", {{"upstream", log::str(host->url())}});
      }
    } else {
      host->checkSuccesses = 0;
      if (was && ++host->checkFailures >= cluster->unhealthy_threshold) {
        host->setHealthy(false);
        log::warn("upstream unhealthy",
                  {{"upstream", log::str(host->url())}, {"reason", log::str(detail)}});
      }
    }
    interval->enable(cluster->health_interval_ms);
  }

  void onData(Buffer& data) override { codec.dispatch(data); }
  void onEvent(network::ConnectionEvent e) override {
    if (e == network::ConnectionEvent::ConnectFailed) {
      conn = nullptr;
      if (!finished && host->tryNextAddress(address_index) &&
          addresses_tried < host->addresses().size()) {
        probe();
        return;
      }
      done(false, "connect failed");
    } else if (e == network::ConnectionEvent::RemoteClose) {
      conn = nullptr;
      if (status != 0 && codec.onEof()) return;
      done(false, status ? "closed mid-response" : "closed before responding");
    }
  }
  void onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) override {
    status = headers->status;
    if (end_stream) finish();
  }
  void onResponseData(Buffer& data, bool end_stream) override {
    data.clear();
    if (end_stream) finish();
  }
  void onResponseError(const std::string& reason) override { done(false, reason); }
  void finish() {
    bool ok = status == 200;
    done(ok, ok ? "ok" : "status " + std::to_string(status));
  }
};

HealthChecker::HealthChecker(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
HealthChecker::~HealthChecker() = default;

void HealthChecker::update(const std::vector<ClusterInfoSharedPtr>& clusters) {
  std::vector<std::unique_ptr<Check>> next;
  for (const auto& cluster : clusters) {
    if (cluster->health_path.empty()) continue;
    for (const auto& host : cluster->hosts) {
      next.push_back(std::make_unique<Check>(dispatcher_, host, cluster));
    }
  }
  // Old checks go with their timers; hosts no longer configured keep their
  // last state but are no longer probed.
  checks_.swap(next);
  struct Holder : DeferredDeletable {
    std::vector<std::unique_ptr<Check>> old;
  };
  auto h = std::make_unique<Holder>();
  h->old = std::move(next);
  dispatcher_.deferredDelete(std::move(h));
}

}  // namespace eldric::upstream
