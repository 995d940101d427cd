#pragma once

// IP address helpers shared by the data plane and the config loader (which
// the control plane links too, so this depends on nothing but libc).

#include <sys/socket.h>

#include <cstdint>
#include <string>

namespace eldric::network {

// Formats an address as "ip:port" ("[::1]:443" for IPv6).
std::string formatAddress(const sockaddr* addr);
// Parses an IP literal ("10.0.0.1", "::1", "[::1]") and port into `out`.
// Returns false if it is not an IP literal.
bool parseIpAddress(const std::string& ip, uint16_t port, sockaddr_storage* out);
// Splits "host:port" or "[v6]:port" (brackets removed from `host`). The
// port is required and from 1 to 65535; a bare IPv6 literal is refused.
bool splitHostPort(const std::string& target, std::string* host, uint16_t* port);
// Whether `addr` is a loopback address (127.0.0.0/8, ::1).
bool isLoopback(const sockaddr* addr);
// Whether `host` is loopback without a name lookup: "localhost", or a
// loopback IP literal (IPv6 with or without brackets). A name that merely
// starts with "127." is not.
bool isLoopbackHost(const std::string& host);

}  // namespace eldric::network

namespace eldric::network {

// An http:// or https:// URL, split for a client.
struct Url {
  bool https = false;
  std::string host;  // an IPv6 literal without its brackets
  uint16_t port = 80;
  std::string path = "/";  // what follows the authority, "/" when nothing does
};

// Parses "http[s]://host[:port][/path]" (port 80 or 443 by default).
// Returns false with `*error` saying what is wrong, worded to follow the
// URL in a message ("has no host", "has a bad port", ...).
bool parseUrl(const std::string& text, Url* out, std::string* error);

}  // namespace eldric::network
