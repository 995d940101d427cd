#pragma once

// The seed's farm (`--mode farm --peers edge2:443,edge3:443`, no
// --control-plane): which member is the primary, what this member calls
// itself, and where every member finds the control plane the primary runs.
//
// The rule, computed the same way on every member:
//   - The members are the peers plus this member. A member names itself as
//     the peers name it: a peer entry that is this machine (a local
//     address, or a name that resolves to one) with this member's port;
//     else farm.node_id / --node-id; else, when the peers are IP
//     addresses, the address it is bound to (--bind), or if bound to all,
//     the local address this machine reaches the first peer from, and when
//     they are names, the host name; with this member's port (HTTPS, or
//     HTTP with --no-tls).
//   - The primary is the member marked (--primary / farm.primary: true on
//     it, or farm.primary: "<name>" on every member); if none is marked,
//     the member whose name sorts first (byte order).
//   - Every member, the primary included, subscribes to the primary's
//     farm port (host of its name, farm.port); the other members' farm
//     ports follow in the target list, so a member whose idea of the
//     primary is wrong still finds the one that answers.

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/config/loader.h"

namespace eldric::config {

// The gRPC metadata every member's call carries to a supervised farm's
// control plane: hex HMAC-SHA256 of the members' shared secret (see
// pki::farmToken in common/pki/pki.h). Never logged.
constexpr char kFarmTokenMetadata[] = "eldric-farm-token";

struct FarmPlan {
  std::string self;                  // this member's name (host:port)
  std::string primary;               // the primary's name
  bool is_primary = false;           // this member runs the control plane
  std::vector<std::string> members;  // every member's name, sorted
  // host:farm_port for the data plane's channel: the primary's first.
  std::vector<std::string> targets;
  // Where this member's control plane listens when it is the primary.
  std::string listen;
};

// How the plan looks at this machine (real probes in production, fakes in
// tests).
struct FarmProbe {
  // Whether `host` (a name or an IP literal, IPv6 without brackets) is
  // this machine.
  std::function<bool(const std::string& host)> is_local;
  // The local address used to reach `peer_ip` (an IP literal), as an IP
  // literal; empty if there is no route.
  std::function<std::string(const std::string& peer_ip)> local_address_toward;
  std::function<std::string()> host_name;
};

// The probes of this machine: getifaddrs, getaddrinfo, a connected UDP
// socket's getsockname, gethostname.
FarmProbe systemFarmProbe();

// Plans a supervised farm from `farm` (loader-validated: supervised, peers
// well formed). False with `*error` set when the marked primary is not a
// member.
bool planFarm(const FarmOptions& farm, const FarmProbe& probe, FarmPlan* out, std::string* error);

}  // namespace eldric::config
