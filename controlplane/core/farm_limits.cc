#include "controlplane/core/farm_limits.h"

#include <algorithm>
#include <numeric>
#include <set>

namespace eldric::controlplane {

std::vector<uint64_t> allocateCeilings(uint64_t limit, const std::vector<MemberLoad>& members) {
  const size_t n = members.size();
  std::vector<uint64_t> out(n, 0);
  if (n == 0) return out;
  using u128 = unsigned __int128;

  // Targets: the limit in proportion to demand + 1, largest remainders
  // first, so the targets add up to exactly the limit (a limit smaller
  // than the member count still reaches somebody).
  u128 weights = 0;
  for (const auto& m : members) weights += static_cast<u128>(std::max(m.demand, m.count)) + 1;
  std::vector<uint64_t> target(n);
  std::vector<std::pair<uint64_t, size_t>> remainders(n);
  uint64_t given = 0;
  for (size_t i = 0; i < n; ++i) {
    u128 share = static_cast<u128>(limit) * (std::max(members[i].demand, members[i].count) + 1);
    target[i] = static_cast<uint64_t>(share / weights);
    remainders[i] = {static_cast<uint64_t>(share % weights), i};
    given += target[i];
  }
  std::sort(remainders.begin(), remainders.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  for (size_t k = 0; given < limit && k < n; ++k, ++given) target[remainders[k].second]++;

  // Lower at once; raise only out of the headroom under the bounds, in
  // proportion to what each member still wants.
  u128 bounds = 0;
  for (const auto& m : members) bounds += std::max(m.bound, m.count);
  uint64_t free = bounds >= limit ? 0 : static_cast<uint64_t>(limit - bounds);
  u128 wanted = 0;
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
    uint64_t give =
        wanted <= free ? want : static_cast<uint64_t>(static_cast<u128>(free) * want / wanted);
    out[i] = bound + give;
  }
  return out;
}

namespace {

uint64_t valueOr(const std::unordered_map<std::string, uint64_t>& m, const std::string& key,
                 uint64_t dflt) {
  auto it = m.find(key);
  return it == m.end() ? dflt : it->second;
}

}  // namespace

void FarmCeilings::onReport(const std::string& member, Report report) {
  Member& m = members_[member];
  while (!m.sent.empty() && m.sent.front().seq <= report.applied_seq) m.sent.pop_front();
  m.report = std::move(report);
}

void FarmCeilings::forget(const std::string& member) { members_.erase(member); }

bool FarmCeilings::known(const std::string& member) const { return members_.count(member) != 0; }

uint64_t FarmCeilings::bound(const std::string& member, Tier tier, const std::string& key,
                             uint64_t limit) const {
  auto it = members_.find(member);
  if (it == members_.end()) return limit;  // not heard from: it may enforce the whole limit
  const Member& m = it->second;
  uint64_t count = valueOr(m.report.counts[tier], key, 0);
  if (m.report.offline) return std::max(limit, count);  // its offline policy: up to the limit
  uint64_t b = std::max(
      count, valueOr(m.report.ceilings[tier], key, defaultCeiling(limit, m.report.members)));
  for (const Sent& s : m.sent) {
    b = std::max(
        b, valueOr(s.ceilings.ceilings[tier], key, defaultCeiling(limit, s.ceilings.members)));
  }
  return std::min(b, std::max(limit, count));
}

std::map<std::string, FarmCeilings::Ceilings> FarmCeilings::allocate(
    const std::vector<std::string>& members, uint32_t member_count, uint64_t seq,
    const LimitFn& limit_of) {
  std::map<std::string, Ceilings> out;
  for (const auto& id : members) out[id].members = member_count;

  for (size_t t = 0; t < kTiers; ++t) {
    Tier tier = static_cast<Tier>(t);
    // Candidates: keys some member counted, refused, or holds (or was sent)
    // an explicit ceiling for.
    std::set<std::string> keys;
    for (const auto& id : members) {
      auto it = members_.find(id);
      if (it == members_.end()) continue;
      const Member& m = it->second;
      for (const auto* map : {&m.report.counts[t], &m.report.refused[t], &m.report.ceilings[t]}) {
        for (const auto& kv : *map) keys.insert(kv.first);
      }
      for (const Sent& s : m.sent) {
        for (const auto& kv : s.ceilings.ceilings[t]) keys.insert(kv.first);
      }
    }
    std::vector<MemberLoad> loads(members.size());
    for (const auto& key : keys) {
      uint64_t limit = limit_of(tier, key);
      if (!limit) continue;
      uint64_t dflt = defaultCeiling(limit, member_count);
      bool needed = false;
      for (size_t i = 0; i < members.size(); ++i) {
        auto it = members_.find(members[i]);
        MemberLoad& l = loads[i];
        l.count = 0;
        uint64_t refused = 0;
        if (it != members_.end()) {
          l.count = valueOr(it->second.report.counts[t], key, 0);
          refused = valueOr(it->second.report.refused[t], key, 0);
        }
        l.demand = l.count + refused;
        l.bound = bound(members[i], tier, key, limit);
        // Everyone at (or under) the default and nobody refused: the
        // defaults add up to at most the limit, no explicit ceiling needed.
        if (refused > 0 || l.bound > dflt) needed = true;
      }
      if (!needed) continue;
      std::vector<uint64_t> ceilings = allocateCeilings(limit, loads);
      for (size_t i = 0; i < members.size(); ++i) out[members[i]].ceilings[t][key] = ceilings[i];
    }
  }

  // Until a member says it applied them, these count toward its bound.
  for (auto& [id, c] : out) {
    auto it = members_.find(id);
    if (it == members_.end()) continue;  // unknown: its bound is the limit anyway
    Member& m = it->second;
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
          folded.ceilings[t][key] = std::max(
              valueOr(a.ceilings.ceilings[t], key, defaultCeiling(limit, a.ceilings.members)),
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
