#include "dataplane/upstream/dns_cache.h"

#include <netdb.h>
#include <netinet/in.h>
#include <uv.h>

#include <cstring>
#include <unordered_set>

#include "common/address.h"
#include "common/log.h"
#include "dataplane/event/dispatcher.h"

namespace eldric::upstream {
namespace {

void setPort(sockaddr_storage* a, uint16_t port) {
  if (a->ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in*>(a)->sin_port = htons(port);
  } else if (a->ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(a)->sin6_port = htons(port);
  }
}

// An address of a lookup, port 0, zero-padded (so that two are compared
// with memcmp).
void copyAddress(const sockaddr* from, sockaddr_storage* to) {
  memset(to, 0, sizeof *to);
  memcpy(to, from, from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  setPort(to, 0);
}

bool sameAddress(const sockaddr_storage& a, const sockaddr_storage& b) {
  return memcmp(&a, &b, sizeof a) == 0;
}

// Every stream address of an answer, port 0, in order, repeats left out
// (getaddrinfo lists an address once per protocol unless hinted, and
// /etc/hosts may name one twice).
AddressList collect(const addrinfo* answer) {
  AddressList out;
  for (const addrinfo* ai = answer; ai && out.size() < kMaxAddresses; ai = ai->ai_next) {
    if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
    sockaddr_storage a;
    copyAddress(ai->ai_addr, &a);
    bool seen = false;
    for (const auto& b : out) seen = seen || sameAddress(a, b);
    if (!seen) out.push_back(a);
  }
  return out;
}

AddressList withPort(AddressList list, uint16_t port) {
  for (auto& a : list) setPort(&a, port);
  return list;
}

// Every lookup asks for stream sockets of either family.
addrinfo streamHints() {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  return hints;
}

std::string formatIp(const sockaddr_storage& a) {
  std::string s = network::formatAddress(reinterpret_cast<const sockaddr*>(&a));
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ":0") == 0) s.resize(s.size() - 2);
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  return s;
}

std::string formatIps(const AddressList& list) {
  std::string s;
  for (const auto& a : list) s += (s.empty() ? "" : ",") + formatIp(a);
  return s;
}

}  // namespace

bool sameAddresses(const AddressList& a, const AddressList& b) {
  if (a.size() != b.size()) return false;
  for (const auto& x : a) {
    bool found = false;
    for (const auto& y : b) found = found || sameAddress(x, y);
    if (!found) return false;
  }
  return true;
}

bool resolveNow(const std::string& host, uint16_t port, AddressList* out, std::string* error) {
  sockaddr_storage literal;
  if (network::parseIpAddress(host, port, &literal)) {
    *out = {literal};
    return true;
  }
  addrinfo hints = streamHints();
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res) {
    *error = rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc);
    if (res) freeaddrinfo(res);
    return false;
  }
  AddressList found = collect(res);
  freeaddrinfo(res);
  if (found.empty()) {
    *error = "no IPv4 or IPv6 address";
    return false;
  }
  *out = withPort(std::move(found), port);
  return true;
}

// One refresh: the queries still out, and what changed so far. Queries
// hold it; the cache's destructor unhooks it so that a late answer (the
// main loop closing after the cache is gone) finds no cache to write to.
struct DnsCache::Round {
  DnsCache* cache;
  size_t pending = 0;
  std::vector<Change> changes;
  std::function<void(std::vector<Change>)> changed;
};

struct DnsCache::Query {
  uv_getaddrinfo_t req;
  std::shared_ptr<Round> round;
  std::string host;
};

DnsCache::~DnsCache() {
  if (!round_) return;
  round_->cache = nullptr;
  // Lookups not yet started are called back with UV_ECANCELED (and freed)
  // as the loop closes; one already running in the thread pool holds the
  // loop's teardown until the resolver answers or times out.
  for (Query* q : queries_) uv_cancel(reinterpret_cast<uv_req_t*>(&q->req));
}

bool DnsCache::lookup(const std::string& host, uint16_t port, AddressList* out,
                      std::string* error) {
  sockaddr_storage literal;
  if (network::parseIpAddress(host, port, &literal)) {
    *out = {literal};
    return true;
  }
  auto it = entries_.find(host);
  if (it != entries_.end()) {
    *out = withPort(it->second.addrs, port);
    return true;
  }
  if (!resolveNow(host, port, out, error)) return false;
  Entry e;
  e.addrs = withPort(*out, 0);
  entries_.emplace(host, std::move(e));
  return true;
}

void DnsCache::refresh(const std::vector<std::string>& names,
                       std::function<void(std::vector<Change>)> changed) {
  if (round_) return;
  std::unordered_set<std::string> wanted(names.begin(), names.end());
  for (auto it = entries_.begin(); it != entries_.end();) {
    it = wanted.count(it->first) ? std::next(it) : entries_.erase(it);
  }
  if (entries_.empty()) return;
  auto round = std::make_shared<Round>();
  round->cache = this;
  round->changed = std::move(changed);
  // One count for this loop itself, so that a query failing at once cannot
  // end the round before the others were started.
  round->pending = 1;
  round_ = round;
  addrinfo hints = streamHints();
  for (const auto& [host, entry] : entries_) {
    auto* q = new Query;
    q->req.data = q;
    q->round = round;
    q->host = host;
    ++round->pending;
    int rc = uv_getaddrinfo(
        dispatcher_.loop(), &q->req,
        [](uv_getaddrinfo_t* req, int status, addrinfo* res) {
          std::unique_ptr<Query> q(static_cast<Query*>(req->data));
          if (DnsCache* cache = q->round->cache) {
            cache->queries_.erase(q.get());
            cache->record(q->host, status == 0 && !res ? UV_EAI_NONAME : status,
                          status == 0 ? res : nullptr);
            cache->finishOne(q->round);
          }
          if (res) uv_freeaddrinfo(res);
        },
        host.c_str(), nullptr, &hints);
    if (rc != 0) {
      // Not started, so no callback will come: a failed answer now.
      record(host, rc, nullptr);
      --round->pending;
      delete q;
      continue;
    }
    queries_.insert(q);
  }
  finishOne(round);
}

void DnsCache::finishOne(const std::shared_ptr<Round>& round) {
  if (--round->pending > 0) return;
  if (round_ == round) round_.reset();
  if (!round->changes.empty() && round->changed) round->changed(std::move(round->changes));
}

void DnsCache::record(const std::string& host, int status, const addrinfo* answer) {
  auto it = entries_.find(host);
  if (it == entries_.end() || !round_) return;
  Entry& e = it->second;
  if (!answer) {
    if (!e.failing) {
      log::warn("upstream host name lookup failed; keeping its last addresses",
                {{"host", log::str(host)},
                 {"address", log::str(formatIps(e.addrs))},
                 {"error", log::str(uv_strerror(status))}});
    }
    e.failing = true;
    return;
  }
  if (e.failing) log::info("upstream host name lookup works again", {{"host", log::str(host)}});
  e.failing = false;
  // A name with several addresses (round-robin records, a service of
  // several pods) may list them in another order each time: the host
  // changes (and its pooled connections go) only when the set does.
  AddressList now = collect(answer);
  if (now.empty() || sameAddresses(now, e.addrs)) return;
  round_->changes.push_back({host, formatIps(e.addrs), formatIps(now)});
  e.addrs = std::move(now);
}

}  // namespace eldric::upstream
