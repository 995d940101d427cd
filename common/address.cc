#include "common/address.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cctype>
#include <cstdlib>
#include <cstring>

namespace eldric::network {

bool splitHostPort(const std::string& target, std::string* host, uint16_t* port) {
  std::string port_text;
  if (!target.empty() && target.front() == '[') {
    size_t close = target.find(']');
    if (close == std::string::npos || close + 1 >= target.size() || target[close + 1] != ':') {
      return false;
    }
    *host = target.substr(1, close - 1);
    port_text = target.substr(close + 2);
  } else {
    size_t colon = target.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    *host = target.substr(0, colon);
    // A bare IPv6 literal needs brackets to tell the port apart.
    if (host->find(':') != std::string::npos) return false;
    port_text = target.substr(colon + 1);
  }
  if (port_text.empty() || port_text.size() > 5) return false;
  unsigned long p = 0;
  for (char c : port_text) {
    if (c < '0' || c > '9') return false;
    p = p * 10 + static_cast<unsigned long>(c - '0');
  }
  if (p == 0 || p > 65535) return false;
  *port = static_cast<uint16_t>(p);
  return true;
}

std::string formatAddress(const sockaddr* addr) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (addr->sa_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    return std::string(buf) + ":" + std::to_string(ntohs(a->sin_port));
  }
  auto* a = reinterpret_cast<const sockaddr_in6*>(addr);
  inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
  return "[" + std::string(buf) + "]:" + std::to_string(ntohs(a->sin6_port));
}

bool parseIpAddress(const std::string& ip, uint16_t port, sockaddr_storage* out) {
  memset(out, 0, sizeof *out);
  auto* a4 = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, ip.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    return true;
  }
  auto* a6 = reinterpret_cast<sockaddr_in6*>(out);
  std::string bare = ip;
  if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']')
    bare = bare.substr(1, bare.size() - 2);
  if (inet_pton(AF_INET6, bare.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    return true;
  }
  return false;
}

bool isLoopback(const sockaddr* addr) {
  if (addr->sa_family == AF_INET) {
    return (ntohl(reinterpret_cast<const sockaddr_in*>(addr)->sin_addr.s_addr) >> 24) == 127;
  }
  if (addr->sa_family == AF_INET6) {
    return IN6_IS_ADDR_LOOPBACK(&reinterpret_cast<const sockaddr_in6*>(addr)->sin6_addr);
  }
  return false;
}

bool isLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  sockaddr_storage ip;
  return parseIpAddress(host, 0, &ip) && isLoopback(reinterpret_cast<const sockaddr*>(&ip));
}

bool parseUrl(const std::string& text, Url* out, std::string* error) {
  Url u;
  std::string rest;
  if (text.compare(0, 7, "http://") == 0) {
    rest = text.substr(7);
  } else if (text.compare(0, 8, "https://") == 0) {
    u.https = true;
    u.port = 443;
    rest = text.substr(8);
  } else {
    *error = "must start with http:// or https://";
    return false;
  }
  if (size_t slash = rest.find('/'); slash != std::string::npos) {
    u.path = rest.substr(slash);
    rest.resize(slash);
  }
  std::string port;
  if (!rest.empty() && rest[0] == '[') {
    size_t close = rest.find(']');
    if (close == std::string::npos || (close + 1 < rest.size() && rest[close + 1] != ':')) {
      *error = "has a bad IPv6 address";
      return false;
    }
    u.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) port = rest.substr(close + 2);
  } else if (size_t colon = rest.rfind(':'); colon != std::string::npos) {
    u.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    u.host = rest;
  }
  if (u.host.empty()) {
    *error = "has no host";
    return false;
  }
  for (char c : u.host) {
    if (static_cast<unsigned char>(c) <= ' ' || c == '@' || c == '?' || c == '#' || c == '[' ||
        c == ']' || c == '/' || c == 0x7f) {
      *error = "has a bad host";
      return false;
    }
  }
  for (char c : u.path) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) {
      *error = "has a bad path";
      return false;
    }
  }
  if (!port.empty() || (rest.size() && rest.back() == ':')) {
    char* end = nullptr;
    long n = port.empty() ? 0 : strtol(port.c_str(), &end, 10);
    if (port.empty() || *end || n < 1 || n > 65535 ||
        !isdigit(static_cast<unsigned char>(port[0]))) {
      *error = "has a bad port";
      return false;
    }
    u.port = static_cast<uint16_t>(n);
  }
  *out = std::move(u);
  return true;
}

}  // namespace eldric::network
