#include "dataplane/upstream/conn_pool.h"

#include <algorithm>

namespace eldric::upstream {
namespace {
template <typename T>
struct Holder : DeferredDeletable {
  std::unique_ptr<T> held;
};
}  // namespace

void ConnPool::Idle::onData(Buffer& data) {
  data.clear();
  conn->close(network::CloseType::NoFlush);
}

void ConnPool::Idle::onEvent(network::ConnectionEvent e) {
  if (e == network::ConnectionEvent::RemoteClose || e == network::ConnectionEvent::LocalClose) {
    conn = nullptr;
    pool->remove(this);
  }
}

ConnPool::~ConnPool() {
  for (auto& [host, list] : idle_) {
    for (auto& idle : list) {
      if (idle->conn) {
        idle->conn->setCallbacks(nullptr);
        idle->conn->close(network::CloseType::NoFlush);
      }
    }
  }
}

network::Connection* ConnPool::acquire(const HostSharedPtr& host) {
  auto it = idle_.find(host.get());
  if (it == idle_.end()) return nullptr;
  auto& list = it->second;
  while (!list.empty()) {
    std::unique_ptr<Idle> idle = std::move(list.back());
    list.pop_back();
    if (!idle->conn) continue;
    network::Connection* conn = idle->conn;
    conn->setCallbacks(nullptr);
    return conn;  // `idle` (and its timer) goes; not inside its callbacks here

  }
  return nullptr;
}

void ConnPool::release(const HostSharedPtr& host, network::Connection* conn, uint32_t max_idle,
                       uint64_t idle_timeout_ms) {
  auto& list = idle_[host.get()];
  hosts_.emplace(host.get(), host);
  if (list.size() >= max_idle) {
    conn->close(network::CloseType::NoFlush);
    return;
  }
  auto idle = std::make_unique<Idle>();
  idle->pool = this;
  idle->host = host.get();
  idle->conn = conn;
  Idle* raw = idle.get();
  idle->timer = dispatcher_.createTimer([raw] {
    if (raw->conn) raw->conn->close(network::CloseType::NoFlush);
  });
  idle->timer->enable(idle_timeout_ms);
  conn->setCallbacks(idle.get());
  list.push_back(std::move(idle));
}

void ConnPool::remove(Idle* idle) {
  auto it = idle_.find(idle->host);
  if (it == idle_.end()) return;
  auto& list = it->second;
  for (auto i = list.begin(); i != list.end(); ++i) {
    if (i->get() == idle) {
      // Called from the Idle's own callbacks: delete it later.
      auto h = std::make_unique<Holder<Idle>>();
      h->held = std::move(*i);
      list.erase(i);
      dispatcher_.deferredDelete(std::move(h));
      return;
    }
  }
}

size_t ConnPool::idleCount() const {
  size_t n = 0;
  for (const auto& [h, list] : idle_) n += list.size();
  return n;
}

}  // namespace eldric::upstream
