#include "controlplane/core/farm_limits.h"

#include <algorithm>

namespace eldric::controlplane {

std::vector<uint64_t> allocateCeilings(uint64_t limit, const std::vector<MemberLoad>& members) {
  const size_t n = members.size();
  std::vector<uint64_t> out(n, 0);
  if (n == 0) return out;

  // The target: each member's count plus its share of what is left,
  // weighted by count + 1 (no member gets nothing).
  unsigned __int128 counts = 0, weights = 0, bounds = 0;
  for (const auto& m : members) {
    counts += m.count;
    weights += static_cast<unsigned __int128>(m.count) + 1;
    bounds += std::max(m.bound, m.count);
  }
  uint64_t left = counts >= limit ? 0 : static_cast<uint64_t>(limit - counts);
  std::vector<uint64_t> target(n);
  for (size_t i = 0; i < n; ++i) {
    target[i] = members[i].count +
                static_cast<uint64_t>(static_cast<unsigned __int128>(left) * (members[i].count + 1) / weights);
  }

  // Lower at once; raise only out of the headroom under the bounds, in
  // proportion to what each member still wants.
  uint64_t free = bounds >= limit ? 0 : static_cast<uint64_t>(limit - bounds);
  unsigned __int128 wanted = 0;
  for (size_t i = 0; i < n; ++i) {
    uint64_t bound = std::max(members[i].bound, members[i].count);
    if (target[i] > bound) wanted += target[i] - bound;
  }
  for (size_t i = 0; i < n; ++i) {
    uint64_t bound = std::max(members[i].bound, members[i].count);
    if (target[i] <= bound) {
      out[i] = target[i];
      continue;
    }
    uint64_t want = target[i] - bound;
    uint64_t give = wanted <= free ? want : static_cast<uint64_t>(static_cast<unsigned __int128>(free) * want / wanted);
    out[i] = bound + give;
  }
  return out;
}

namespace {

uint64_t valueOr(const std::unordered_map<std::string, uint64_t>& m, const std::string& key, uint64_t dflt) {
  auto it = m.find(key);
  return it == m.end() ? dflt : it->second;
}

}  // namespace

void FarmCeilings::onReport(const std::string& member, Report report) {
  Member& m = members_[member];
  m.has_report = true;
  while (!m.sent.empty() && m.sent.front().seq <= report.applied_seq) m.sent.pop_front();
  m.report = std::move(report);
}

void FarmCeilings::forget(const std::string& member) { members_.erase(member); }

uint64_t FarmCeilings::bound(const std::string& member, Tier tier, const std::string& key, uint64_t limit) const {
  auto it = members_.find(member);
  if (it == members_.end()) return limit;  // never heard of: it may enforce the whole limit
  const Member& m = it->second;
  uint64_t b;
  if (m.has_report) {
    b = std::max(valueOr(m.report.counts[tier], key, 0),
                 valueOr(m.report.ceilings[tier], key, defaultCeiling(limit, m.report.members)));
  } else {
    b = limit;  // what it enforces before its first report is unknown
  }
  for (const Sent& s : m.sent) {
    b = std::max(b, valueOr(s.ceilings.ceilings[tier], key, defaultCeiling(limit, s.ceilings.members)));
  }
  return std::min(b, std::max(limit, valueOr(m.report.counts[tier], key, 0)));
}

std::map<std::string, FarmCeilings::Ceilings> FarmCeilings::allocate(const std::vector<std::string>& members,
                                                                      uint32_t member_count, uint64_t seq,
                                                                      const LimitFn& limit_of) {
  std::map<std::string, Ceilings> out;
  for (const auto& id : members) out[id].members = member_count;

  // The keys in use anywhere in the farm; the others stay at their default.
  for (size_t t = 0; t < kTiers; ++t) {
    Tier tier = static_cast<Tier>(t);
    std::map<std::string, uint64_t> keys;  // key -> limit
    for (const auto& id : members) {
      auto it = members_.find(id);
      if (it == members_.end() || !it->second.has_report) continue;
      for (const auto& [key, count] : it->second.report.counts[t]) {
        if (count == 0 || keys.count(key)) continue;
        uint64_t limit = limit_of(tier, key);
        if (limit) keys.emplace(key, limit);
      }
    }
    std::vector<MemberLoad> loads(members.size());
    for (const auto& [key, limit] : keys) {
      for (size_t i = 0; i < members.size(); ++i) {
        auto it = members_.find(members[i]);
        loads[i].count = it != members_.end() && it->second.has_report
                             ? valueOr(it->second.report.counts[t], key, 0)
                             : 0;
        loads[i].bound = bound(members[i], tier, key, limit);
      }
      std::vector<uint64_t> ceilings = allocateCeilings(limit, loads);
      for (size_t i = 0; i < members.size(); ++i) out[members[i]].ceilings[t][key] = ceilings[i];
    }
  }

  // Until a member says it applied them, these count toward its bound.
  for (auto& [id, c] : out) {
    Member& m = members_[id];
    m.sent.push_back(Sent{seq, c});
    if (m.sent.size() > kMaxUnacked) {
      // A member that stops acknowledging: fold its two oldest pushes into
      // one holding the larger ceiling of each key (defaults made explicit
      // where the other push had one), so its bound stays as high.
      Sent& a = m.sent[0];
      const Sent& b = m.sent[1];
      Ceilings folded;
      folded.members = std::min(a.ceilings.members, b.ceilings.members);
      for (size_t t = 0; t < kTiers; ++t) {
        auto fold = [&](const std::string& key) {
          uint64_t limit = limit_of(static_cast<Tier>(t), key);
          folded.ceilings[t][key] =
              std::max(valueOr(a.ceilings.ceilings[t], key, defaultCeiling(limit, a.ceilings.members)),
                       valueOr(b.ceilings.ceilings[t], key, defaultCeiling(limit, b.ceilings.members)));
        };
        for (const auto& kv : a.ceilings.ceilings[t]) fold(kv.first);
        for (const auto& kv : b.ceilings.ceilings[t]) fold(kv.first);
      }
      a.ceilings = std::move(folded);
      a.seq = b.seq;
      m.sent.erase(m.sent.begin() + 1);
    }
  }
  return out;
}

}  // namespace eldric::controlplane
