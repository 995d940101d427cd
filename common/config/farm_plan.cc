#include "common/config/farm_plan.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/address.h"

namespace eldric::config {

namespace {

// "host:port" with an IPv6 host in brackets.
std::string joinHostPort(const std::string& host, int64_t port) {
  bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

bool sameAddress(const sockaddr* a, const sockaddr* b) {
  if (a->sa_family != b->sa_family) return false;
  if (a->sa_family == AF_INET) {
    return reinterpret_cast<const sockaddr_in*>(a)->sin_addr.s_addr ==
           reinterpret_cast<const sockaddr_in*>(b)->sin_addr.s_addr;
  }
  if (a->sa_family == AF_INET6) {
    return memcmp(&reinterpret_cast<const sockaddr_in6*>(a)->sin6_addr,
                  &reinterpret_cast<const sockaddr_in6*>(b)->sin6_addr, sizeof(in6_addr)) == 0;
  }
  return false;
}

bool localAddress(const sockaddr* a) {
  if (network::isLoopback(a)) return true;
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return false;
  bool found = false;
  for (ifaddrs* i = list; i && !found; i = i->ifa_next) {
    if (i->ifa_addr && sameAddress(i->ifa_addr, a)) found = true;
  }
  freeifaddrs(list);
  return found;
}

bool systemIsLocal(const std::string& host) {
  if (network::isLoopbackHost(host)) return true;
  sockaddr_storage ip;
  if (network::parseIpAddress(host, 0, &ip)) return localAddress(reinterpret_cast<sockaddr*>(&ip));
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), nullptr, &hints, &res) != 0) return false;
  bool local = false;
  for (addrinfo* r = res; r && !local; r = r->ai_next) local = localAddress(r->ai_addr);
  freeaddrinfo(res);
  return local;
}

std::string systemLocalAddressToward(const std::string& peer_ip) {
  sockaddr_storage to;
  if (!network::parseIpAddress(peer_ip, 9, &to)) return "";
  int fd = socket(to.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  std::string out;
  socklen_t len = to.ss_family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  sockaddr_storage local{};
  socklen_t local_len = sizeof local;
  // A UDP connect sends nothing: it only picks the route and source.
  if (connect(fd, reinterpret_cast<sockaddr*>(&to), len) == 0 &&
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &local_len) == 0) {
    char buf[INET6_ADDRSTRLEN] = {0};
    const void* a =
        local.ss_family == AF_INET
            ? static_cast<const void*>(&reinterpret_cast<sockaddr_in*>(&local)->sin_addr)
            : &reinterpret_cast<sockaddr_in6*>(&local)->sin6_addr;
    if (inet_ntop(local.ss_family, a, buf, sizeof buf)) out = buf;
  }
  close(fd);
  return out;
}

std::string systemHostName() {
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return host;
}

}  // namespace

FarmProbe systemFarmProbe() {
  return FarmProbe{systemIsLocal, systemLocalAddressToward, systemHostName};
}

bool planFarm(const FarmOptions& farm, const FarmProbe& probe, FarmPlan* out, std::string* error) {
  *out = FarmPlan();
  std::vector<std::string> peers;
  for (const auto& p : farm.peers) {
    if (std::find(peers.begin(), peers.end(), p) == peers.end()) peers.push_back(p);
  }
  // This member among the peers, as they name it.
  for (const auto& p : peers) {
    std::string host;
    uint16_t port = 0;
    if (network::splitHostPort(p, &host, &port) && port == farm.member_port &&
        probe.is_local(host)) {
      out->self = p;
      break;
    }
  }
  if (out->self.empty() && !farm.node_id.empty()) out->self = farm.node_id;
  if (out->self.empty()) {
    std::string first_host;
    uint16_t first_port = 0;
    sockaddr_storage ip;
    std::string host;
    std::string bind = farm.bind;
    if (bind.size() > 2 && bind.front() == '[' && bind.back() == ']')
      bind = bind.substr(1, bind.size() - 2);
    bool wildcard = bind.empty() || bind == "0.0.0.0" || bind == "::";
    if (!peers.empty() && network::splitHostPort(peers[0], &first_host, &first_port) &&
        network::parseIpAddress(first_host, 0, &ip)) {
      // Bound to one address: that is where the others reach this member.
      host = !wildcard && network::parseIpAddress(bind, 0, &ip)
                 ? bind
                 : probe.local_address_toward(first_host);
    }
    if (host.empty()) host = probe.host_name();
    out->self = joinHostPort(host, farm.member_port);
  }
  out->members = peers;
  if (std::find(peers.begin(), peers.end(), out->self) == peers.end())
    out->members.push_back(out->self);
  std::sort(out->members.begin(), out->members.end());

  if (farm.primary == "self") {
    out->primary = out->self;
  } else if (!farm.primary.empty()) {
    if (std::find(out->members.begin(), out->members.end(), farm.primary) == out->members.end()) {
      std::string all;
      for (const auto& m : out->members) all += (all.empty() ? "" : ", ") + m;
      *error = "farm.primary \"" + farm.primary + "\" is not a member (the members: " + all +
               "; this one is \"" + out->self + "\")";
      return false;
    }
    out->primary = farm.primary;
  } else {
    out->primary = out->members.front();
  }
  out->is_primary = out->primary == out->self;

  auto target = [&](const std::string& member) {
    std::string host;
    uint16_t port = 0;
    if (!network::splitHostPort(member, &host, &port)) return std::string();
    return joinHostPort(host, farm.port);
  };
  std::vector<std::string> order = {out->primary};
  for (const auto& m : out->members) {
    if (m != out->primary) order.push_back(m);
  }
  for (const auto& m : order) {
    std::string t = target(m);
    if (!t.empty() && std::find(out->targets.begin(), out->targets.end(), t) == out->targets.end())
      out->targets.push_back(t);
  }
  // Without TLS the farm port stays on loopback (the loader allowed that
  // only for a farm on one host).
  std::string bind = farm.tls_cert_file.empty() ? "127.0.0.1" : farm.bind;
  if (bind.size() > 2 && bind.front() == '[' && bind.back() == ']')
    bind = bind.substr(1, bind.size() - 2);
  out->listen = joinHostPort(bind, farm.port);
  return true;
}

}  // namespace eldric::config
