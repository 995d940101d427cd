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

}  // namespace eldric::network
