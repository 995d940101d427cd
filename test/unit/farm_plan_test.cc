#include "common/config/farm_plan.h"

#include <gtest/gtest.h>

#include <set>

namespace eldric::config {
namespace {

// A machine whose addresses are `local` and whose name is `name`.
FarmProbe fakeMachine(std::set<std::string> local, std::string toward, std::string name) {
  return FarmProbe{[local](const std::string& h) { return local.count(h) > 0; },
                   [toward](const std::string&) { return toward; }, [name] { return name; }};
}

FarmOptions seedFarm(std::vector<std::string> peers, int64_t member_port) {
  FarmOptions f;
  f.supervised = true;
  f.peers = std::move(peers);
  f.member_port = member_port;
  f.bind = "0.0.0.0";
  f.tls_cert_file = "/etc/ssl/edge.pem";
  return f;
}

FarmPlan plan(const FarmOptions& f, const FarmProbe& p) {
  FarmPlan out;
  std::string error;
  EXPECT_TRUE(planFarm(f, p, &out, &error)) << error;
  return out;
}

// The seed's three Edges, each listing the other two by name: they agree
// on the primary without being told (the first name), and each finds it.
TEST(FarmPlanTest, SeedMembersAgreeOnThePrimary) {
  FarmPlan e1 = plan(seedFarm({"edge2:443", "edge3:443"}, 443), fakeMachine({}, "", "edge1"));
  FarmPlan e2 = plan(seedFarm({"edge1:443", "edge3:443"}, 443), fakeMachine({}, "", "edge2"));
  FarmPlan e3 = plan(seedFarm({"edge1:443", "edge2:443"}, 443), fakeMachine({}, "", "edge3"));
  for (const FarmPlan* p : {&e1, &e2, &e3}) {
    EXPECT_EQ(p->primary, "edge1:443");
    ASSERT_EQ(p->members.size(), 3u);
    ASSERT_EQ(p->targets.size(), 3u);
    EXPECT_EQ(p->targets[0], "edge1:8870");
  }
  EXPECT_EQ(e1.self, "edge1:443");
  EXPECT_TRUE(e1.is_primary);
  EXPECT_FALSE(e2.is_primary);
  EXPECT_FALSE(e3.is_primary);
  EXPECT_EQ(e1.listen, "0.0.0.0:8870");
}

// Members on one machine, told apart by port; addresses rather than names:
// a member names itself by the address it reaches the peers from.
TEST(FarmPlanTest, LoopbackMembersNameThemselvesByAddressAndPort) {
  auto lo = fakeMachine({"127.0.0.1"}, "127.0.0.1", "host");
  FarmPlan a = plan(seedFarm({"127.0.0.1:9443", "127.0.0.1:7443"}, 8443), lo);
  FarmPlan b = plan(seedFarm({"127.0.0.1:8443", "127.0.0.1:7443"}, 9443), lo);
  FarmPlan c = plan(seedFarm({"127.0.0.1:8443", "127.0.0.1:9443"}, 7443), lo);
  EXPECT_EQ(a.self, "127.0.0.1:8443");
  EXPECT_EQ(c.self, "127.0.0.1:7443");
  for (const FarmPlan* p : {&a, &b, &c}) EXPECT_EQ(p->primary, "127.0.0.1:7443");
  EXPECT_TRUE(c.is_primary);
  // One address, one farm port: one target.
  ASSERT_EQ(a.targets.size(), 1u);
  EXPECT_EQ(a.targets[0], "127.0.0.1:8870");
  // Bound to one address: named by it, not by the route to the peers.
  FarmOptions bound = seedFarm({"127.0.0.1:9443"}, 8443);
  bound.bind = "127.0.0.2";
  FarmPlan b2 = plan(bound, lo);
  EXPECT_EQ(b2.self, "127.0.0.2:8443");
  EXPECT_EQ(b2.listen, "127.0.0.2:8870");
  ASSERT_EQ(b2.targets.size(), 2u);
}

// One config file for every member: all listed, the primary named.
TEST(FarmPlanTest, SharedFileNamesThePrimary) {
  FarmOptions f = seedFarm({"10.0.0.3:443", "10.0.0.1:443", "10.0.0.2:443"}, 443);
  f.primary = "10.0.0.2:443";
  f.port = 9000;
  FarmPlan on2 = plan(f, fakeMachine({"10.0.0.2"}, "10.0.0.2", "b"));
  FarmPlan on3 = plan(f, fakeMachine({"10.0.0.3"}, "10.0.0.3", "c"));
  EXPECT_EQ(on2.self, "10.0.0.2:443");
  EXPECT_TRUE(on2.is_primary);
  EXPECT_FALSE(on3.is_primary);
  EXPECT_EQ(on3.targets.front(), "10.0.0.2:9000");
  EXPECT_EQ(on3.targets.size(), 3u);
  // --primary on this member.
  f.primary = "self";
  EXPECT_TRUE(plan(f, fakeMachine({"10.0.0.3"}, "10.0.0.3", "c")).is_primary);
  // A name that is no member is refused, and the message lists them.
  f.primary = "10.0.0.9:443";
  FarmPlan out;
  std::string error;
  EXPECT_FALSE(planFarm(f, fakeMachine({"10.0.0.3"}, "10.0.0.3", "c"), &out, &error));
  EXPECT_NE(error.find("10.0.0.1:443, 10.0.0.2:443, 10.0.0.3:443"), std::string::npos) << error;
}

TEST(FarmPlanTest, NodeIdAndIpv6) {
  FarmOptions f = seedFarm({"[fd00::2]:443"}, 443);
  f.bind = "::";
  FarmPlan p = plan(f, fakeMachine({}, "fd00::1", "h"));
  EXPECT_EQ(p.self, "[fd00::1]:443");
  EXPECT_EQ(p.primary, "[fd00::1]:443");
  EXPECT_EQ(p.listen, "[::]:8870");
  f.node_id = "zz:443";
  p = plan(f, fakeMachine({}, "fd00::1", "h"));
  EXPECT_EQ(p.self, "zz:443");
  EXPECT_EQ(p.targets.front(), "[fd00::2]:8870");
  // Without TLS the control plane stays on loopback.
  f.tls_cert_file.clear();
  EXPECT_EQ(plan(f, fakeMachine({}, "", "h")).listen, "127.0.0.1:8870");
}

}  // namespace
}  // namespace eldric::config
