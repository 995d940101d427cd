#pragma once

// Addresses of upstream endpoints given by host name. A name is resolved
// when a snapshot first names it, then again every refresh interval off the
// main loop (uv_getaddrinfo runs in libuv's thread pool), as Envoy's
// STRICT_DNS clusters do: a router that comes back on another address (a
// restarted container, a moved VM) is followed without a reload, and a
// snapshot compiled later (an admin change, a key revocation, a farm push)
// takes the cached addresses instead of waiting on DNS, so a slow or
// failing resolver cannot hold up or refuse it. A failed refresh keeps the
// last addresses. Every address of an answer is kept, in the resolver's
// order (a name such as "localhost" is ::1 and 127.0.0.1, and a router
// often listens on one of them only): the Host tries the next one when a
// connect fails. Main thread only.

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

struct addrinfo;

namespace eldric {
class Dispatcher;
}

namespace eldric::upstream {

// The addresses of one name, each with the port set, in the resolver's
// order, without repeats; at most kMaxAddresses.
using AddressList = std::vector<sockaddr_storage>;
constexpr size_t kMaxAddresses = 8;

// True when both hold the same addresses, in any order (a resolver may
// rotate round-robin records on every answer).
bool sameAddresses(const AddressList& a, const AddressList& b);

// Resolves `host` (an IP literal or a name, blocking) to its addresses,
// with `port` set. On failure returns false with `*error` set.
bool resolveNow(const std::string& host, uint16_t port, AddressList* out, std::string* error);

class DnsCache {
 public:
  explicit DnsCache(Dispatcher& dispatcher) : dispatcher_(dispatcher) {}
  ~DnsCache();
  DnsCache(const DnsCache&) = delete;
  DnsCache& operator=(const DnsCache&) = delete;

  // An IP literal as is; a cached name from the cache; a name seen for the
  // first time is resolved now (blocking) and cached.
  bool lookup(const std::string& host, uint16_t port, AddressList* out, std::string* error);

  struct Change {
    std::string host;
    std::string from;  // formatted addresses ("::1,127.0.0.1"), port left out
    std::string to;
  };
  // Resolves `names` again (names no longer listed are forgotten) and calls
  // `changed` on this loop once they all answered, if any address changed.
  // Does nothing while the previous refresh is still out.
  void refresh(const std::vector<std::string>& names,
               std::function<void(std::vector<Change>)> changed);
  bool refreshing() const { return round_ != nullptr; }
  size_t size() const { return entries_.size(); }

 private:
  struct Entry {
    AddressList addrs;     // port 0
    bool failing = false;  // the last refresh failed (logged once)
  };
  struct Round;
  struct Query;
  // An answer for `host` (null: it failed with `status`), kept in the
  // running round.
  void record(const std::string& host, int status, const addrinfo* answer);
  void finishOne(const std::shared_ptr<Round>& round);

  Dispatcher& dispatcher_;
  std::unordered_map<std::string, Entry> entries_;
  std::shared_ptr<Round> round_;
  std::unordered_set<Query*> queries_;  // started and not yet answered
};

}  // namespace eldric::upstream
