#include "dataplane/upstream/dns_cache.h"

#include <netdb.h>
#include <netinet/in.h>
#include <uv.h>

#include <cstring>
#include <unordered_set>

#include "dataplane/common/address.h"
#include "dataplane/common/log.h"
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

// The first address of a lookup, port 0, zero-padded (so that two are
// compared with memcmp).
void copyAddress(const sockaddr* from, sockaddr_storage* to) {
  memset(to, 0, sizeof *to);
  memcpy(to, from, from->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in));
  setPort(to, 0);
}

std::string formatIp(const sockaddr_storage& a) {
  std::string s = network::formatAddress(reinterpret_cast<const sockaddr*>(&a));
  if (s.size() > 2 && s.compare(s.size() - 2, 2, ":0") == 0) s.resize(s.size() - 2);
  if (s.size() > 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
  return s;
}

}  // namespace

bool resolveNow(const std::string& host, uint16_t port, sockaddr_storage* out, std::string* error) {
  if (network::parseIpAddress(host, port, out)) return true;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  if (rc != 0 || !res) {
    *error = rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc);
    if (res) freeaddrinfo(res);
    return false;
  }
  copyAddress(res->ai_addr, out);
  setPort(out, port);
  freeaddrinfo(res);
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
  if (round_) round_->cache = nullptr;
}

bool DnsCache::lookup(const std::string& host, uint16_t port, sockaddr_storage* out, std::string* error) {
  if (network::parseIpAddress(host, port, out)) return true;
  auto it = entries_.find(host);
  if (it != entries_.end()) {
    *out = it->second.addr;
    setPort(out, port);
    return true;
  }
  if (!resolveNow(host, port, out, error)) return false;
  Entry e;
  copyAddress(reinterpret_cast<const sockaddr*>(out), &e.addr);
  entries_.emplace(host, e);
  return true;
}

void DnsCache::refresh(const std::vector<std::string>& names, std::function<void(std::vector<Change>)> changed) {
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
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
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
          const sockaddr* addr = status == 0 && res ? res->ai_addr : nullptr;
          if (DnsCache* cache = q->round->cache) {
            cache->record(q->host, status == 0 && !res ? UV_EAI_NONAME : status, addr);
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
    }
  }
  finishOne(round);
}

void DnsCache::finishOne(const std::shared_ptr<Round>& round) {
  if (--round->pending > 0) return;
  if (round_ == round) round_.reset();
  if (!round->changes.empty() && round->changed) round->changed(std::move(round->changes));
}

void DnsCache::record(const std::string& host, int status, const sockaddr* addr) {
  auto it = entries_.find(host);
  if (it == entries_.end() || !round_) return;
  Entry& e = it->second;
  if (!addr) {
    if (!e.failing) {
      log::warn("upstream host name lookup failed; keeping its last address",
                {{"host", log::str(host)}, {"address", log::str(formatIp(e.addr))},
                 {"error", log::str(uv_strerror(status))}});
    }
    e.failing = true;
    return;
  }
  if (e.failing) log::info("upstream host name lookup works again", {{"host", log::str(host)}});
  e.failing = false;
  sockaddr_storage fresh;
  copyAddress(addr, &fresh);
  if (memcmp(&fresh, &e.addr, sizeof fresh) != 0) {
    round_->changes.push_back({host, formatIp(e.addr), formatIp(fresh)});
    e.addr = fresh;
  }
}

}  // namespace eldric::upstream
