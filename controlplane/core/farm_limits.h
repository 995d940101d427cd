#pragma once

// Farm-wide request limits, shared out as ceilings.
//
// Each member admits a request while its own sliding-window count for a
// tier's key (the global tier, one IP, one client) is below its ceiling: an
// explicit one from the control plane, or the default floor(limit /
// members). The control plane cannot see a member's count as it is now,
// only as last reported; but between reports a member's count rises only
// through admissions, and admissions stop at the ceiling. So a member holds
// at most max(its reported count, every ceiling it may have had in force
// since that report): its `bound`. As long as the bounds of all members add
// up to at most the limit, so do their counts.
//
// One allocation keeps that true: a member's ceiling may be lowered at
// once (lowering never raises a bound), but raised above its bound only
// out of the headroom left under the sum of the bounds. The ceilings aim
// at each member's share of the limit in proportion to its demand (its
// window count plus the requests it refused since its previous report), so
// a member that starts being busy gets capacity back from one that holds
// it, as fast as the latter's window slides.
//
// A key gets explicit ceilings only while it needs them: some member
// refused it, or some member may hold more than its default. Otherwise all
// members are at their defaults, whose sum is at most the limit, and the
// key costs nothing on the wire (the long tail of client IPs).
//
// What the bookkeeping assumes, and how the control plane ensures it:
// reports of a member arrive in order (one gRPC stream; reports from a
// replaced stream are dropped), a member that says hello is unknown until
// it reports (bound: the whole limit), and a report names the control-plane
// instance whose seq it echoes. Not covered: a member cut off for longer
// than the freshness horizon stops counting here while it applies its
// offline policy, and a member that (re)starts applies that policy until its
// first farm usage; a worker that read a ceiling just before it was lowered
// may admit one more request per key.

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <unordered_map>
#include <vector>

namespace eldric::controlplane {

struct MemberLoad {
  uint64_t count = 0;   // reported window count
  uint64_t demand = 0;  // count + refusals since its previous report
  uint64_t bound = 0;   // the most it can hold now (>= count)
};

// New ceilings, one per member, in the same order. The sum over members of
// max(bound, new ceiling) stays at most max(limit, sum of bounds).
std::vector<uint64_t> allocateCeilings(uint64_t limit, const std::vector<MemberLoad>& members);

// The default ceiling of a tier's key that has no explicit one. The data
// plane's State::effectiveLimit applies the same rule.
inline uint64_t defaultCeiling(uint64_t limit, uint32_t members) {
  return members > 1 ? limit / members : limit;
}

// The control plane's bookkeeping: what each member reported, what it was
// sent since, and the next allocation. Not thread-safe (the control plane
// holds its streams lock).
class FarmCeilings {
 public:
  enum Tier { kGlobal = 0, kIp = 1, kKey = 2 };
  static constexpr size_t kTiers = 3;
  // Per tier: key -> value. The global tier has the one key "".
  using PerTier = std::array<std::unordered_map<std::string, uint64_t>, kTiers>;

  struct Report {
    uint64_t applied_seq = 0;  // 0: nothing of this control plane applied
    uint32_t members = 1;      // the member count it enforces defaults with
    bool offline = false;      // applying its offline policy: bound unknown
    PerTier counts;            // window counts (zero counts may be left out)
    PerTier refused;           // refusals since its previous report
    PerTier ceilings;          // explicit ceilings in force
  };
  struct Ceilings {
    uint32_t members = 1;
    PerTier ceilings;  // explicit; a key left out is at its default
  };
  // 0 turns a tier's key off (no ceiling).
  using LimitFn = std::function<uint64_t(Tier, const std::string& key)>;

  void onReport(const std::string& member, Report report);
  // A member (re)connected: unknown until its next report.
  void forget(const std::string& member);

  // The next ceilings for each of `members` (the members taking part: those
  // with a recent report or a stream), recorded as sent under `seq`.
  // `member_count` is the members count the pushes carry.
  std::map<std::string, Ceilings> allocate(const std::vector<std::string>& members,
                                           uint32_t member_count, uint64_t seq,
                                           const LimitFn& limit_of);

  // What a member can hold at most now for a tier's key.
  uint64_t bound(const std::string& member, Tier tier, const std::string& key,
                 uint64_t limit) const;
  // Whether the control plane has heard from a member since it (re)connected.
  bool known(const std::string& member) const;

 private:
  struct Sent {
    uint64_t seq = 0;
    Ceilings ceilings;
  };
  struct Member {
    Report report;
    std::deque<Sent> sent;  // sent after the report's applied_seq
  };
  static constexpr size_t kMaxUnacked = 64;

  std::unordered_map<std::string, Member> members_;  // known members only
};

}  // namespace eldric::controlplane
