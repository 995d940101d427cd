#pragma once

// Farm usage: what the control plane makes of the members' usage reports.
// The limits a report is bounded by, the bounding itself, and the sums the
// farm-usage push is built from. No gRPC: plain messages and maps.

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <unordered_map>

#include "controlplane/core/farm_limits.h"
#include "eldric/edge/v1/discovery.pb.h"

namespace eldric::controlplane {

// The request limits of the served snapshot, as the members enforce them:
// what the farm's ceilings are shared out of.
struct FarmLimits {
  uint64_t tier[3] = {0, 0, 0};                          // by FarmCeilings::Tier
  std::unordered_map<std::string, uint64_t> client_rpm;  // per-client overrides
  // What a member's usage report is bounded to (see boundReport): the
  // clients the snapshot names, their token limits, the IP table's size.
  std::unordered_map<std::string, uint64_t> client_tpm;  // every client; 0: the tier default
  uint64_t tokens_tier = 0;
  size_t max_ip_entries = 100000;  // rate_limits.max_ip_entries' default
  uint64_t of(FarmCeilings::Tier t, const std::string& key) const {
    if (t == FarmCeilings::kKey) {
      auto it = client_rpm.find(key);
      if (it != client_rpm.end()) return it->second;
    }
    return tier[t];
  }
};

// `usage` bounded to what the member can plausibly have admitted under the
// served limits (see farm_usage.cc). Returns how many entries or counts it
// cut.
size_t boundReport(const FarmLimits& limits, edge::v1::UsageReport* usage);

// The members' reports summed, by tier.
struct Totals {
  uint64_t global = 0;
  std::map<std::string, uint64_t> ip, req, tok;
};

void addCounts(const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& counts,
               std::map<std::string, uint64_t>* into);

// Writes `total` minus `own` (own's entries are part of total).
void writeDifference(const std::map<std::string, uint64_t>& total,
                     const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* own,
                     google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* out);

}  // namespace eldric::controlplane
