#include "dataplane/upstream/host.h"

#include <gtest/gtest.h>

#include <map>

#include "dataplane/network/connection.h"

namespace eldric::upstream {
namespace {

HostSharedPtr makeHost(const std::string& url, uint16_t port) {
  sockaddr_storage addr;
  network::parseIpAddress("127.0.0.1", port, &addr);
  return std::make_shared<Host>(url, "127.0.0.1", port, addr);
}

TEST(HostTest, PassiveEjectionAfterConsecutiveFailures) {
  auto h = makeHost("http://a", 1);
  EXPECT_FALSE(h->recordFailure(1000, 3, 500));
  EXPECT_FALSE(h->recordFailure(1000, 3, 500));
  EXPECT_TRUE(h->recordFailure(1000, 3, 500));
  EXPECT_FALSE(h->available(1200));
  EXPECT_TRUE(h->available(1500));
  h->recordFailure(2000, 3, 500);
  h->recordSuccess();  // resets the streak
  h->recordFailure(2000, 3, 500);
  h->recordFailure(2000, 3, 500);
  EXPECT_TRUE(h->available(2000));
}

TEST(LoadBalancerTest, PrefersFewerInFlightAndSkipsUnavailable) {
  ClusterInfo c;
  c.hosts = {makeHost("http://a", 1), makeHost("http://b", 2)};
  c.hosts[0]->in_flight = 10;
  std::map<Host*, int> picks;
  for (int i = 0; i < 200; ++i) picks[chooseHost(c, 0, nullptr)]++;
  // Two hosts, two probes: the less loaded one always wins.
  EXPECT_EQ(picks[c.hosts[1].get()], 200);
  c.hosts[1]->setHealthy(false);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(chooseHost(c, 0, nullptr), c.hosts[0].get());
  // Excluding the only available host falls back to the other one rather
  // than failing.
  EXPECT_EQ(chooseHost(c, 0, c.hosts[0].get()), c.hosts[1].get());
}

TEST(LoadBalancerTest, SpreadsEvenlyWhenIdle) {
  ClusterInfo c;
  for (int i = 0; i < 4; ++i) c.hosts.push_back(makeHost("http://h" + std::to_string(i), 1 + i));
  std::map<Host*, int> picks;
  for (int i = 0; i < 4000; ++i) picks[chooseHost(c, 0, nullptr)]++;
  for (auto& h : c.hosts) {
    EXPECT_GT(picks[h.get()], 600);
    EXPECT_LT(picks[h.get()], 1400);
  }
}

TEST(HostRegistryTest, KeepsAHostUntilItsAddressChangesOrItIsDropped) {
  HostRegistry reg;
  sockaddr_storage one, two;
  network::parseIpAddress("127.0.0.1", 80, &one);
  network::parseIpAddress("127.0.0.2", 80, &two);
  auto a = reg.get("http://r:80", "r", 80, one);
  EXPECT_EQ(reg.get("http://r:80", "r", 80, one), a);  // health carries over
  auto moved = reg.get("http://r:80", "r", 80, two);
  EXPECT_NE(moved, a);
  EXPECT_FALSE(a->retired());  // not before the compile succeeded
  auto other = reg.get("http://s:80", "s", 80, one);
  reg.retainOnly({"http://r:80"});
  EXPECT_TRUE(a->retired());  // pools close its connections
  EXPECT_FALSE(moved->retired());
  EXPECT_TRUE(other->retired());
  EXPECT_FALSE(moved->retired());
  EXPECT_NE(reg.get("http://s:80", "s", 80, one), other);  // forgotten
}

}  // namespace
}  // namespace eldric::upstream
