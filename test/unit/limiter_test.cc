// The per-IP tables' keys and bounds: IPv6 counted per prefix, a table
// that stops growing at its limit.

#include "filters/ratelimit/limiter.h"

#include <gtest/gtest.h>

namespace eldric::filters::ratelimit {
namespace {

TEST(IpKeyTest, Ipv4IsItself) {
  EXPECT_EQ(ipKey("10.1.2.3", 64), "10.1.2.3");
  EXPECT_EQ(ipKey("not an ip", 64), "not an ip");
}

TEST(IpKeyTest, Ipv6IsItsPrefix) {
  EXPECT_EQ(ipKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 64), "2001:db8:1:2::/64");
  EXPECT_EQ(ipKey("2001:db8:1:2::1", 64), ipKey("2001:db8:1:2:ffff::9", 64));
  EXPECT_NE(ipKey("2001:db8:1:2::1", 64), ipKey("2001:db8:1:3::1", 64));
  EXPECT_EQ(ipKey("2001:db8:1:2::1", 48), "2001:db8:1::/48");
  EXPECT_EQ(ipKey("2001:db8:1:2::1", 128), "2001:db8:1:2::1");
  // An IPv4-mapped address is the IPv4 client it carries.
  EXPECT_EQ(ipKey("::ffff:10.0.0.7", 64), "10.0.0.7");
}

TEST(KeyedTableTest, StopsGrowingAtItsLimit) {
  KeyedTable table(60, 640);  // 10 per shard
  for (int i = 0; i < 100000; ++i)
    table.get("10.0." + std::to_string(i / 256) + "." + std::to_string(i % 256), 1);
  EXPECT_LE(table.size(), 640u);
  EXPECT_GT(table.overflowed(), 99000u);
  // Overflowing keys share one entry: their counts add up.
  auto a = table.get("192.0.2.1", 1);
  auto b = table.get("192.0.2.2", 1);
  EXPECT_EQ(a.get(), b.get());
  // Known keys keep their own.
  auto known = table.get("10.0.0.0", 1);
  EXPECT_NE(known.get(), a.get());
}

}  // namespace
}  // namespace eldric::filters::ratelimit
