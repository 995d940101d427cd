#include "controlplane/core/farm_limits.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>

namespace eldric::controlplane {
namespace {


TEST(AllocateCeilings, EqualLoadsSplitEqually) {
  auto c = allocateCeilings(150, {{10, 50}, {10, 50}, {10, 50}});
  EXPECT_EQ(c, (std::vector<uint64_t>{50, 50, 50}));
}

TEST(AllocateCeilings, NeverRaisesAboveTheBoundsWithoutHeadroom) {
  // An idle member still holds its default 50: the busy one cannot be
  // raised yet, the idle ones are lowered to a sliver.
  auto c = allocateCeilings(150, {{50, 50}, {0, 50}, {0, 50}});
  EXPECT_EQ(c[0], 50u);
  EXPECT_LE(c[1], 2u);
  EXPECT_LE(c[2], 2u);
  // Once they confirmed, the busy one gets nearly everything.
  c = allocateCeilings(150, {{50, 50}, {0, c[1]}, {0, c[2]}});
  EXPECT_GE(c[0], 140u);
  EXPECT_LE(c[0] + 2 + 2, 150u);
}

TEST(AllocateCeilings, OverTheLimitLowersToCounts) {
  auto c = allocateCeilings(100, {{60, 70}, {50, 60}});
  EXPECT_EQ(c, (std::vector<uint64_t>{60, 50}));
}

TEST(AllocateCeilings, SumOfBoundsAndCeilingsStaysUnderTheLimit) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20000; ++round) {
    uint64_t limit = 1 + rng() % 500;
    size_t n = 1 + rng() % 6;
    std::vector<MemberLoad> loads(n);
    uint64_t bounds = 0;
    for (auto& l : loads) {
      l.count = rng() % (limit / n + 2);
      l.bound = l.count + rng() % (limit / n + 2);
      bounds += l.bound;
    }
    auto c = allocateCeilings(limit, loads);
    uint64_t worst = 0;
    for (size_t i = 0; i < n; ++i) {
      EXPECT_GE(c[i], loads[i].count);
      worst += std::max(c[i], loads[i].bound);
    }
    ASSERT_LE(worst, std::max(limit, bounds)) << "round " << round;
  }
}

// The whole protocol with delays: members admit while below their
// ceilings, reports reach the control plane late, pushes reach members
// late (in order per member), windows slide. At no moment may the farm's
// true total pass the limit; and the limit is reached, not split too thin.
struct Push {
  uint64_t arrival;
  uint64_t seq;
  FarmCeilings::Ceilings ceilings;
};

struct SimMember {
  std::string id;
  uint64_t count = 0;
  bool has_ceiling = false;
  uint64_t ceiling = 0;
  uint32_t members = 1;
  uint64_t applied_seq = 0;
  std::deque<Push> inbox;
};

struct SimResult {
  uint64_t max_total = 0;
  uint64_t final_total = 0;
  std::vector<uint64_t> counts;
};

SimResult simulate(uint64_t limit, const std::vector<double>& demand, int steps, uint64_t seed, bool slide,
                   int report_delay = 9, int push_delay = 7) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  FarmCeilings cp;
  std::vector<SimMember> ms(demand.size());
  std::vector<std::string> ids;
  for (size_t i = 0; i < ms.size(); ++i) ids.push_back(ms[i].id = "m" + std::to_string(i));
  std::vector<std::tuple<uint64_t, std::string, FarmCeilings::Report>> reports;
  auto limit_of = [limit](FarmCeilings::Tier t, const std::string&) { return t == FarmCeilings::kKey ? limit : 0; };
  uint64_t seq = 1000;
  SimResult r;
  for (int step = 0; step < steps; ++step) {
    for (size_t i = 0; i < ms.size(); ++i) {
      SimMember& m = ms[i];
      while (!m.inbox.empty() && m.inbox.front().arrival <= static_cast<uint64_t>(step)) {
        const Push& p = m.inbox.front();
        m.members = p.ceilings.members;
        auto it = p.ceilings.ceilings[FarmCeilings::kKey].find("k");
        m.has_ceiling = it != p.ceilings.ceilings[FarmCeilings::kKey].end();
        if (m.has_ceiling) m.ceiling = it->second;
        m.applied_seq = p.seq;
        m.inbox.pop_front();
      }
      uint64_t ceiling = m.has_ceiling ? m.ceiling : defaultCeiling(limit, m.members);
      if (u(rng) < demand[i] && m.count < std::min(limit, ceiling)) m.count++;
      if (slide && m.count > 0 && u(rng) < 0.01) m.count--;
    }
    uint64_t total = 0;
    for (auto& m : ms) total += m.count;
    r.max_total = std::max(r.max_total, total);
    for (auto& m : ms) {
      if (rng() % 10 != 0) continue;
      FarmCeilings::Report rep;
      rep.applied_seq = m.applied_seq;
      rep.members = m.members;
      if (m.count) rep.counts[FarmCeilings::kKey]["k"] = m.count;
      if (m.has_ceiling) rep.ceilings[FarmCeilings::kKey]["k"] = m.ceiling;
      reports.emplace_back(step + rng() % report_delay, m.id, std::move(rep));
    }
    // Reports from one member may even overtake each other: the control
    // plane must cope with any order.
    std::vector<std::tuple<uint64_t, std::string, FarmCeilings::Report>> later;
    for (auto& rep : reports) {
      if (std::get<0>(rep) <= static_cast<uint64_t>(step)) {
        cp.onReport(std::get<1>(rep), std::get<2>(rep));
      } else {
        later.push_back(std::move(rep));
      }
    }
    reports = std::move(later);
    if (rng() % 4 == 0) {
      ++seq;
      auto out = cp.allocate(ids, static_cast<uint32_t>(ms.size()), seq, limit_of);
      for (auto& m : ms) {
        uint64_t at = step + rng() % push_delay;
        if (!m.inbox.empty()) at = std::max(at, m.inbox.back().arrival);
        m.inbox.push_back(Push{at, seq, out[m.id]});
      }
    }
  }
  for (auto& m : ms) {
    r.final_total += m.count;
    r.counts.push_back(m.count);
  }
  return r;
}

TEST(FarmCeilings, ThreeBusyMembersNeverPassTheLimitAndReachIt) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    auto r = simulate(150, {0.5, 0.5, 0.5}, 3000, seed, false);
    ASSERT_LE(r.max_total, 150u) << "seed " << seed;
    EXPECT_GE(r.final_total, 145u) << "seed " << seed;
  }
}

TEST(FarmCeilings, UnevenLoadAndSlidingWindowsNeverPassTheLimit) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    auto r = simulate(100, {0.9, 0.3, 0.05, 0.0}, 4000, seed, true);
    ASSERT_LE(r.max_total, 100u) << "seed " << seed;
  }
}

TEST(FarmCeilings, ALoneBusyMemberGetsNearlyTheWholeLimit) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    auto r = simulate(300, {1.0, 0.0, 0.0}, 1500, seed, false);
    ASSERT_LE(r.max_total, 300u);
    EXPECT_GE(r.counts[0], 285u) << "seed " << seed;
  }
}

TEST(FarmCeilings, AMemberNeverHeardFromHoldsTheWholeLimit) {
  FarmCeilings cp;
  auto limit_of = [](FarmCeilings::Tier, const std::string&) { return uint64_t{100}; };
  FarmCeilings::Report rep;
  rep.members = 2;
  rep.counts[FarmCeilings::kKey]["k"] = 10;
  cp.onReport("a", rep);
  auto out = cp.allocate({"a", "b"}, 2, 1, limit_of);
  // b may still enforce the whole limit (no report yet): a is not raised.
  EXPECT_LE(out["a"].ceilings[FarmCeilings::kKey]["k"], 50u);
  EXPECT_EQ(cp.bound("b", FarmCeilings::kKey, "k", 100), 100u);
}

TEST(FarmCeilings, UnacknowledgedPushesKeepCountingUntilAcked) {
  FarmCeilings cp;
  auto limit_of = [](FarmCeilings::Tier t, const std::string&) {
    return t == FarmCeilings::kKey ? uint64_t{100} : uint64_t{0};
  };
  FarmCeilings::Report busy, idle;
  busy.members = idle.members = 2;
  busy.counts[FarmCeilings::kKey]["k"] = 50;
  cp.onReport("a", busy);
  cp.onReport("b", idle);
  auto first = cp.allocate({"a", "b"}, 2, 7, limit_of);
  uint64_t b1 = first["b"].ceilings[FarmCeilings::kKey]["k"];
  EXPECT_LT(b1, 50u);  // b lowered toward its share
  // Until b acknowledges seq 7, its bound is still its default 50.
  EXPECT_EQ(cp.bound("b", FarmCeilings::kKey, "k", 100), 50u);
  idle.applied_seq = 7;
  idle.ceilings[FarmCeilings::kKey]["k"] = b1;
  cp.onReport("b", idle);
  EXPECT_EQ(cp.bound("b", FarmCeilings::kKey, "k", 100), b1);
  for (int i = 0; i < 200; ++i) cp.allocate({"a", "b"}, 2, 8 + i, limit_of);  // never acked: folded
  EXPECT_GE(cp.bound("a", FarmCeilings::kKey, "k", 100), 50u);
}

}  // namespace
}  // namespace eldric::controlplane
