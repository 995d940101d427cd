#include "controlplane/core/farm_limits.h"

#include <gtest/gtest.h>

#include <deque>
#include <random>

namespace eldric::controlplane {
namespace {

TEST(AllocateCeilings, EqualLoadsSplitEqually) {
  auto c = allocateCeilings(150, {{10, 10, 50}, {10, 10, 50}, {10, 10, 50}});
  EXPECT_EQ(c, (std::vector<uint64_t>{50, 50, 50}));
}

TEST(AllocateCeilings, NeverRaisesAboveTheBoundsWithoutHeadroom) {
  // An idle member still holds its default 50: the busy one (50 admitted,
  // 40 refused) cannot be raised yet; the idle ones are lowered to a sliver.
  auto c = allocateCeilings(150, {{50, 90, 50}, {0, 0, 50}, {0, 0, 50}});
  EXPECT_EQ(c[0], 50u);
  EXPECT_LE(c[1], 2u);
  EXPECT_LE(c[2], 2u);
  // Once they confirmed, the busy one gets nearly everything.
  c = allocateCeilings(150, {{50, 90, 50}, {0, 0, c[1]}, {0, 0, c[2]}});
  EXPECT_GE(c[0], 145u);
  EXPECT_LE(c[0] + c[1] + c[2], 150u);
}

TEST(AllocateCeilings, ALateComerWithDemandTakesCapacityBackFromAHolder) {
  // A holds the whole limit; B starts refusing: B's target is its share of
  // demand, A is lowered below its count (it admits again only as its
  // window slides), and B is raised as that headroom appears.
  auto c = allocateCeilings(100, {{100, 100, 100}, {0, 100, 0}});
  EXPECT_LE(c[0], 51u);
  EXPECT_EQ(c[1], 0u);                                     // no headroom yet
  c = allocateCeilings(100, {{50, 50, 50}, {0, 100, 0}});  // A's window slid
  EXPECT_GE(c[1], 40u);
  EXPECT_LE(std::max<uint64_t>(c[0], 50) + c[1], 100u);
}

TEST(AllocateCeilings, ALimitSmallerThanTheMembersStillReachesSomebody) {
  auto c = allocateCeilings(2, {{0, 3, 0}, {0, 3, 0}, {0, 3, 0}});
  EXPECT_EQ(c[0] + c[1] + c[2], 2u);
}

TEST(AllocateCeilings, OverTheLimitNeverRaises) {
  auto c = allocateCeilings(100, {{60, 60, 70}, {50, 50, 60}});
  EXPECT_LE(c[0], 70u);
  EXPECT_LE(c[1], 60u);
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
      l.demand = l.count + rng() % 50;
      l.bound = l.count + rng() % (limit / n + 2);
      bounds += l.bound;
    }
    auto c = allocateCeilings(limit, loads);
    uint64_t worst = 0;
    for (size_t i = 0; i < n; ++i) worst += std::max(c[i], loads[i].bound);
    ASSERT_LE(worst, std::max(limit, bounds)) << "round " << round;
  }
}

// The whole protocol with delays: members admit into true sliding windows
// while below their ceilings, count refusals, report late (in order, as on
// one gRPC stream), get pushes late (in order); whole windows may empty at
// once. At no moment may the farm's true total pass the limit; and demand
// gets served.
struct Push {
  uint64_t arrival;
  uint64_t seq;
  bool known;
  FarmCeilings::Ceilings ceilings;
};

struct SimMember {
  std::string id;
  std::deque<uint64_t> admitted;  // steps of admissions still in the window
  uint64_t refused = 0;
  uint64_t total_admitted = 0;
  bool has_ceiling = false;
  uint64_t ceiling = 0;
  uint32_t members;
  uint64_t applied_seq = 0;
  std::deque<Push> inbox;
  uint64_t last_report_arrival = 0;
};

struct SimResult {
  uint64_t max_total = 0;
  std::vector<uint64_t> admitted;
};

// demand(i, step): the probability member i wants a request at `step`.
SimResult simulate(uint64_t limit, size_t n, const std::function<double(size_t, int)>& demand,
                   int steps, uint64_t seed, int window, int report_delay = 9, int push_delay = 7) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u(0, 1);
  FarmCeilings cp;
  std::vector<SimMember> ms(n);
  std::vector<std::string> ids;
  for (size_t i = 0; i < n; ++i) {
    ids.push_back(ms[i].id = "m" + std::to_string(i));
    ms[i].members = static_cast<uint32_t>(n);  // learned before (persisted)
  }
  std::vector<std::tuple<uint64_t, std::string, FarmCeilings::Report>> reports;
  auto limit_of = [limit](FarmCeilings::Tier t, const std::string&) {
    return t == FarmCeilings::kKey ? limit : 0;
  };
  uint64_t seq = 0;
  SimResult r;
  for (int step = 0; step < steps; ++step) {
    for (size_t i = 0; i < n; ++i) {
      SimMember& m = ms[i];
      while (!m.inbox.empty() && m.inbox.front().arrival <= static_cast<uint64_t>(step)) {
        const Push& p = m.inbox.front();
        if (p.known) {
          auto it = p.ceilings.ceilings[FarmCeilings::kKey].find("k");
          m.has_ceiling = it != p.ceilings.ceilings[FarmCeilings::kKey].end();
          if (m.has_ceiling) m.ceiling = it->second;
          m.members = p.ceilings.members;
          m.applied_seq = p.seq;
        }
        m.inbox.pop_front();
      }
      while (!m.admitted.empty() && m.admitted.front() + window <= static_cast<uint64_t>(step)) {
        m.admitted.pop_front();
      }
      uint64_t ceiling = m.has_ceiling ? m.ceiling : defaultCeiling(limit, m.members);
      // demand() is requests per step: its whole part always, its fraction
      // with that probability (bursts when above 1).
      double want = demand(i, step);
      int requests = static_cast<int>(want) + (u(rng) < want - static_cast<int>(want) ? 1 : 0);
      for (int q = 0; q < requests; ++q) {
        if (m.admitted.size() < std::min(limit, ceiling)) {
          m.admitted.push_back(step);
          m.total_admitted++;
        } else {
          m.refused++;
        }
      }
    }
    uint64_t total = 0;
    for (auto& m : ms) total += m.admitted.size();
    r.max_total = std::max(r.max_total, total);
    for (auto& m : ms) {
      if (rng() % 10 != 0) continue;
      FarmCeilings::Report rep;
      rep.applied_seq = m.applied_seq;
      rep.members = m.members;
      if (!m.admitted.empty()) rep.counts[FarmCeilings::kKey]["k"] = m.admitted.size();
      if (m.refused) rep.refused[FarmCeilings::kKey]["k"] = m.refused;
      m.refused = 0;
      if (m.has_ceiling) rep.ceilings[FarmCeilings::kKey]["k"] = m.ceiling;
      uint64_t at = std::max<uint64_t>(step + rng() % report_delay, m.last_report_arrival);
      m.last_report_arrival = at;
      reports.emplace_back(at, m.id, std::move(rep));
    }
    std::stable_sort(reports.begin(), reports.end(),
                     [](const auto& a, const auto& b) { return std::get<0>(a) < std::get<0>(b); });
    size_t k = 0;
    for (; k < reports.size() && std::get<0>(reports[k]) <= static_cast<uint64_t>(step); ++k) {
      cp.onReport(std::get<1>(reports[k]), std::get<2>(reports[k]));
    }
    reports.erase(reports.begin(), reports.begin() + k);
    if (rng() % 4 == 0) {
      ++seq;
      auto out = cp.allocate(ids, static_cast<uint32_t>(n), seq, limit_of);
      for (auto& m : ms) {
        uint64_t at = step + rng() % push_delay;
        if (!m.inbox.empty()) at = std::max(at, m.inbox.back().arrival);
        m.inbox.push_back(Push{at, seq, cp.known(m.id), out[m.id]});
      }
    }
  }
  for (auto& m : ms) r.admitted.push_back(m.total_admitted);
  return r;
}

TEST(FarmCeilings, ThreeBusyMembersNeverPassTheLimitAndReachIt) {
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    auto r = simulate(
        150, 3, [](size_t, int) { return 0.5; }, 3000, seed, 100000);
    ASSERT_LE(r.max_total, 150u) << "seed " << seed;
    EXPECT_GE(r.admitted[0] + r.admitted[1] + r.admitted[2], 145u) << "seed " << seed;
  }
}

TEST(FarmCeilings, WindowsThatEmptyAtOnceAndShiftingLoadNeverPassTheLimit) {
  // One member busy first, its window then empties in one step while all
  // three get busy (the review's case), with windows sliding throughout.
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    auto r = simulate(
        150, 3, [](size_t i, int step) { return step < 400 ? (i == 0 ? 1.0 : 0.0) : 0.6; }, 3000,
        seed, 300);
    ASSERT_LE(r.max_total, 150u) << "seed " << seed;
  }
  for (uint64_t seed = 1; seed <= 30; ++seed) {
    auto r = simulate(
        100, 4, [](size_t i, int) { return i == 0   ? 0.9
                                           : i == 1 ? 0.3
                                                    : 0.05; }, 4000, seed, 200);
    ASSERT_LE(r.max_total, 100u) << "seed " << seed;
  }
  // Bursts right when every window has emptied: member 0 filled the limit,
  // went quiet until its window slid out, then everyone bursts at once
  // (20 requests a step) while pushes are still on their way.
  for (uint64_t seed = 1; seed <= 60; ++seed) {
    auto r = simulate(
        150, 3,
        [](size_t i, int step) {
          if (step < 20) return i == 0 ? 10.0 : 0.0;
          if (step < 260 + static_cast<int>(i) * 3) return 0.0;
          return 20.0;
        },
        600, seed, 240);
    ASSERT_LE(r.max_total, 150u) << "seed " << seed;
  }
}

TEST(FarmCeilings, ALoneBusyMemberGetsNearlyTheWholeLimit) {
  for (uint64_t seed = 1; seed <= 10; ++seed) {
    auto r = simulate(
        300, 3, [](size_t i, int) { return i == 0 ? 1.0 : 0.0; }, 1500, seed, 100000);
    EXPECT_GE(r.admitted[0], 285u) << "seed " << seed;
  }
}

TEST(FarmCeilings, ALateComerIsServedWhileAnotherHoldsTheLimit) {
  // Two members with equal demand; B starts halfway. With 200-step windows
  // B must get a fair part of what the windows free.
  for (uint64_t seed = 1; seed <= 5; ++seed) {
    auto r = simulate(
        100, 2, [](size_t i, int step) { return i == 0 || step >= 1000 ? 0.8 : 0.0; }, 3000, seed,
        200);
    ASSERT_LE(r.max_total, 100u);
    EXPECT_GE(r.admitted[1], 200u) << "seed " << seed << " (A admitted " << r.admitted[0] << ")";
  }
}

TEST(FarmCeilings, ASmallLimitIsNotRefusedForever) {
  // limit 2 < 3 members: the defaults are 0, refusals make the control
  // plane share the 2 out.
  auto r = simulate(
      2, 3, [](size_t, int) { return 0.3; }, 2000, 3, 100000);
  EXPECT_EQ(r.admitted[0] + r.admitted[1] + r.admitted[2], 2u);
}

TEST(FarmCeilings, AMemberNeverHeardFromHoldsTheWholeLimit) {
  FarmCeilings cp;
  auto limit_of = [](FarmCeilings::Tier, const std::string&) { return uint64_t{100}; };
  FarmCeilings::Report rep;
  rep.members = 2;
  rep.counts[FarmCeilings::kKey]["k"] = 40;
  rep.refused[FarmCeilings::kKey]["k"] = 10;
  cp.onReport("a", rep);
  auto out = cp.allocate({"a", "b"}, 2, 1, limit_of);
  // b may still enforce the whole limit (no report yet): a is not raised.
  EXPECT_LE(out["a"].ceilings[FarmCeilings::kKey]["k"], 50u);
  EXPECT_FALSE(cp.known("b"));
  EXPECT_EQ(cp.bound("b", FarmCeilings::kKey, "k", 100), 100u);
  // Offline (its own policy): the same.
  rep.offline = true;
  cp.onReport("a", rep);
  EXPECT_EQ(cp.bound("a", FarmCeilings::kKey, "k", 100), 100u);
}

TEST(FarmCeilings, IdleKeysStayAtTheirDefaultsAndCostNothing) {
  FarmCeilings cp;
  auto limit_of = [](FarmCeilings::Tier, const std::string&) { return uint64_t{100}; };
  FarmCeilings::Report rep;
  rep.members = 2;
  for (int i = 0; i < 1000; ++i) rep.counts[FarmCeilings::kIp]["10.0.0." + std::to_string(i)] = 3;
  cp.onReport("a", rep);
  cp.onReport("b", rep);
  auto out = cp.allocate({"a", "b"}, 2, 1, limit_of);
  EXPECT_TRUE(out["a"].ceilings[FarmCeilings::kIp].empty());
}

TEST(FarmCeilings, UnacknowledgedPushesKeepCountingUntilAcked) {
  FarmCeilings cp;
  auto limit_of = [](FarmCeilings::Tier t, const std::string&) {
    return t == FarmCeilings::kKey ? uint64_t{100} : uint64_t{0};
  };
  FarmCeilings::Report busy, idle;
  busy.members = idle.members = 2;
  busy.counts[FarmCeilings::kKey]["k"] = 50;
  busy.refused[FarmCeilings::kKey]["k"] = 30;
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
