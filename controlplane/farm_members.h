#pragma once

// The farm's members: what the control plane keeps about each data plane,
// by node id. ControlPlane::Impl updates it from the streams and the usage
// reports (farm_members.cc) and shows it in the farm status.

#include <cstdint>
#include <string>

#include "eldric/edge/v1/discovery.pb.h"

namespace eldric::controlplane {

class DiscoveryStream;

// What the control plane knows about one data plane (by node id).
struct NodeState {
  edge::v1::Node node;
  // The stream it is connected on now; null when disconnected. A node that
  // reconnects before its old stream ended is tracked on the newer one.
  DiscoveryStream* stream = nullptr;
  std::string peer;
  int64_t connected_since_unix_ms = 0;
  int64_t disconnected_steady_ms = 0;
  std::string acked_version;
  std::string nacked_version;
  std::string nack_error;
  bool has_report = false;
  int64_t last_report_unix_ms = 0;
  int64_t last_report_steady_ms = 0;
  edge::v1::UsageReport report;  // as bounded by boundReport
  bool report_cut = false;       // the last one was
};

}  // namespace eldric::controlplane
