#pragma once

// Per-worker keep-alive pools of plaintext HTTP/1.1 connections to
// upstream hosts. Owned by one worker thread; no locks.

#include <memory>
#include <unordered_map>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/network/connection.h"
#include "dataplane/upstream/host.h"

namespace eldric::upstream {

class ConnPool {
 public:
  explicit ConnPool(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  ~ConnPool();
  // An idle connection to `host`, detached from the pool, or null.
  network::Connection* acquire(const HostSharedPtr& host);
  // Returns a healthy connection after a complete response; the pool keeps
  // at most `max_idle` per host and closes it after `idle_timeout_ms`. A
  // retired host's connection is closed instead.
  void release(const HostSharedPtr& host, network::Connection* conn, uint32_t max_idle,
               uint64_t idle_timeout_ms);
  size_t idleCount() const;
  // Closes the idle connections to retired hosts and forgets those hosts
  // (after a config swap: a router that moved or was removed).
  void dropRetired();

 private:
  // An idle pooled connection. Anything it hears while idle (a close,
  // stray bytes) makes it unusable.
  struct Idle : public network::ConnectionCallbacks {
    ConnPool* pool = nullptr;
    Host* host = nullptr;
    network::Connection* conn = nullptr;
    TimerPtr timer;
    void onData(Buffer& data) override;
    void onEvent(network::ConnectionEvent e) override;
    // Closes the connection without hearing of it (the pool is dropping
    // this entry itself).
    void closeQuietly();
  };
  void remove(Idle* idle);
  // Takes a spare Idle (with its timer) or makes one.
  std::unique_ptr<Idle> newIdle();
  // Keeps `idle` (detached from any connection) for the next release:
  // each request hands its connection back, so an Idle and its timer
  // would otherwise be allocated and freed per request.
  void recycle(std::unique_ptr<Idle> idle);
  static constexpr size_t kMaxSpare = 1024;
  Dispatcher& dispatcher_;
  std::vector<std::unique_ptr<Idle>> spare_;
  std::unordered_map<Host*, std::vector<std::unique_ptr<Idle>>> idle_;
  std::unordered_map<Host*, HostSharedPtr> hosts_;  // keeps keys alive
};

}  // namespace eldric::upstream
