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

void ConnPool::Idle::closeQuietly() {
  if (!conn) return;
  conn->setCallbacks(nullptr);  // no onEvent back into the pool
  conn->close(network::CloseType::NoFlush);
  conn = nullptr;
}

ConnPool::~ConnPool() {
  for (auto& [host, list] : idle_) {
    for (auto& idle : list) idle->closeQuietly();
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
    recycle(std::move(idle));  // not inside its callbacks here
    return conn;
  }
  return nullptr;
}

std::unique_ptr<ConnPool::Idle> ConnPool::newIdle() {
  if (!spare_.empty()) {
    std::unique_ptr<Idle> idle = std::move(spare_.back());
    spare_.pop_back();
    return idle;
  }
  auto idle = std::make_unique<Idle>();
  idle->pool = this;
  Idle* raw = idle.get();
  idle->timer = dispatcher_.createTimer([raw] {
    if (raw->conn) raw->conn->close(network::CloseType::NoFlush);
  });
  return idle;
}

void ConnPool::recycle(std::unique_ptr<Idle> idle) {
  idle->timer->disable();
  idle->conn = nullptr;
  idle->host = nullptr;
  if (spare_.size() < kMaxSpare) {
    spare_.push_back(std::move(idle));
    return;
  }
  // Possibly called from the Idle's own callbacks: delete it later.
  auto h = std::make_unique<Holder<Idle>>();
  h->held = std::move(idle);
  dispatcher_.deferredDelete(std::move(h));
}

void ConnPool::release(const HostSharedPtr& host, network::Connection* conn, uint32_t max_idle,
                       uint64_t idle_timeout_ms) {
  if (host->retired()) {
    conn->close(network::CloseType::NoFlush);
    return;
  }
  auto& list = idle_[host.get()];
  // try_emplace: emplace would build (allocate) a node before finding
  // the key already there, once per request.
  hosts_.try_emplace(host.get(), host);
  if (list.size() >= max_idle) {
    conn->close(network::CloseType::NoFlush);
    return;
  }
  std::unique_ptr<Idle> idle = newIdle();
  idle->host = host.get();
  idle->conn = conn;
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
      // Called from the Idle's own callbacks (its timer's among them): it
      // is kept, not destroyed, so returning into them is safe.
      std::unique_ptr<Idle> held = std::move(*i);
      list.erase(i);
      recycle(std::move(held));
      return;
    }
  }
}

void ConnPool::dropRetired() {
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    if (!it->second->retired()) {
      ++it;
      continue;
    }
    if (auto idle = idle_.find(it->first); idle != idle_.end()) {
      std::vector<std::unique_ptr<Idle>> list = std::move(idle->second);
      idle_.erase(idle);
      for (auto& i : list) {
        i->closeQuietly();
        recycle(std::move(i));
      }
    }
    it = hosts_.erase(it);
  }
}

size_t ConnPool::idleCount() const {
  size_t n = 0;
  for (const auto& [h, list] : idle_) n += list.size();
  return n;
}

}  // namespace eldric::upstream
