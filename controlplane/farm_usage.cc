#include "controlplane/farm_usage.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace eldric::controlplane {

using edge::v1::UsageReport;

void addCounts(const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& counts,
               std::map<std::string, uint64_t>* into) {
  for (const auto& kc : counts) (*into)[kc.key()] += kc.count();
}

void writeDifference(const std::map<std::string, uint64_t>& total,
                     const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* own,
                     google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>* out) {
  std::unordered_map<std::string, uint64_t> mine;
  if (own) {
    for (const auto& kc : *own) mine[kc.key()] += kc.count();
  }
  for (const auto& [key, count] : total) {
    uint64_t c = count;
    if (!mine.empty()) {
      auto it = mine.find(key);
      if (it != mine.end()) c -= std::min(c, it->second);
    }
    if (c == 0) continue;
    auto* kc = out->Add();
    kc->set_key(key);
    kc->set_count(c);
  }
}

namespace {

// A count no member can reach in one window whatever the limits (one
// request per microsecond for an hour): bounds what a tier that is off
// adds up.
constexpr uint64_t kImplausibleCount = 3600ull * 1000 * 1000;
constexpr int kMaxReportedUpstreams = 1024;

}  // namespace

// `usage` bounded to what the member can plausibly have admitted under the
// served limits: counts no higher than the tier's limit (a member enforces
// at most the whole limit), only clients the snapshot names, no more IP
// entries than the members' own tables hold. A member that reports more
// (a bug, or a member that is not what it claims) cannot inflate the
// farm's counts past the limits, starve a client farm-wide beyond one
// window's worth, or grow the control plane's memory. Returns how many
// entries or counts it cut.
size_t boundReport(const FarmLimits& limits, UsageReport* usage) {
  size_t cut = 0;
  auto clamp = [&](uint64_t count, uint64_t limit) {
    uint64_t most = limit ? limit : kImplausibleCount;
    if (count <= most) return count;
    ++cut;
    return most;
  };
  using List = google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>;
  auto boundKeys = [&](List* list, auto limitOf) {
    List kept;
    for (auto& kc : *list) {
      auto known = limits.client_tpm.find(kc.key());
      if (known == limits.client_tpm.end()) {
        ++cut;
        continue;
      }
      kc.set_count(clamp(kc.count(), limitOf(kc.key(), known->second)));
      *kept.Add() = std::move(kc);
    }
    list->Swap(&kept);
  };
  auto boundIps = [&](List* list, uint64_t limit) {
    if (static_cast<size_t>(list->size()) > limits.max_ip_entries) {
      cut += list->size() - limits.max_ip_entries;
      list->DeleteSubrange(static_cast<int>(limits.max_ip_entries),
                           list->size() - static_cast<int>(limits.max_ip_entries));
    }
    for (auto& kc : *list) kc.set_count(clamp(kc.count(), limit));
  };
  auto requestsOf = [&](const std::string& id, uint64_t) {
    return limits.of(FarmCeilings::kKey, id);
  };
  auto tokensOf = [&](const std::string&, uint64_t tpm) { return tpm ? tpm : limits.tokens_tier; };
  auto anyOf = [](const std::string&, uint64_t) { return uint64_t{0}; };
  usage->set_global_requests(clamp(usage->global_requests(), limits.tier[FarmCeilings::kGlobal]));
  if (usage->has_global_request_ceiling()) {
    usage->set_global_request_ceiling(
        clamp(usage->global_request_ceiling(), limits.tier[FarmCeilings::kGlobal]));
  }
  usage->set_global_refused(clamp(usage->global_refused(), 0));
  boundIps(usage->mutable_ip_requests(), limits.tier[FarmCeilings::kIp]);
  boundIps(usage->mutable_ip_request_ceilings(), limits.tier[FarmCeilings::kIp]);
  boundIps(usage->mutable_ip_refused(), 0);
  boundKeys(usage->mutable_key_requests(), requestsOf);
  boundKeys(usage->mutable_key_request_ceilings(), requestsOf);
  boundKeys(usage->mutable_key_refused(), anyOf);
  boundKeys(usage->mutable_key_tokens(), tokensOf);
  boundKeys(usage->mutable_key_in_flight(), anyOf);
  if (usage->upstreams_size() > kMaxReportedUpstreams) {
    cut += usage->upstreams_size() - kMaxReportedUpstreams;
    usage->mutable_upstreams()->DeleteSubrange(kMaxReportedUpstreams,
                                               usage->upstreams_size() - kMaxReportedUpstreams);
  }
  return cut;
}

}  // namespace eldric::controlplane
