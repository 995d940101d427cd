#include "dataplane/upstream/dns_cache.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <uv.h>

#include "common/address.h"
#include "dataplane/event/dispatcher.h"

namespace eldric::upstream {
namespace {

TEST(DnsCacheTest, IpLiteralsAreNeverLookedUpOrCached) {
  Dispatcher d;
  DnsCache cache(d);
  AddressList out;
  std::string error;
  ASSERT_TRUE(cache.lookup("10.1.2.3", 8881, &out, &error));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(network::formatAddress(reinterpret_cast<sockaddr*>(&out[0])), "10.1.2.3:8881");
  ASSERT_TRUE(cache.lookup("::1", 8881, &out, &error));
  EXPECT_EQ(cache.size(), 0u);
}

TEST(DnsCacheTest, ANameIsCachedPerNameWithEachCallersPort) {
  Dispatcher d;
  DnsCache cache(d);
  AddressList a, b;
  std::string error;
  ASSERT_TRUE(cache.lookup("localhost", 8881, &a, &error)) << error;
  ASSERT_TRUE(cache.lookup("localhost", 9000, &b, &error)) << error;
  EXPECT_EQ(cache.size(), 1u);
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(b.empty());
  // Every address of the name (::1 and 127.0.0.1 on a stock Debian), each
  // with the caller's port.
  for (size_t i = 0; i < b.size(); ++i) {
    EXPECT_EQ(a[i].ss_family, b[i].ss_family);
    uint16_t port = b[i].ss_family == AF_INET
                        ? ntohs(reinterpret_cast<sockaddr_in*>(&b[i])->sin_port)
                        : ntohs(reinterpret_cast<sockaddr_in6*>(&b[i])->sin6_port);
    EXPECT_EQ(port, 9000);
  }
}

TEST(DnsCacheTest, AnUnknownNameFailsWithAReason) {
  Dispatcher d;
  DnsCache cache(d);
  AddressList out;
  std::string error;
  EXPECT_FALSE(cache.lookup("no-such-host.invalid", 80, &out, &error));
  EXPECT_FALSE(error.empty());
  EXPECT_EQ(cache.size(), 0u);
}

TEST(DnsCacheTest, ARefreshWithAnUnchangedAddressReportsNothingAndForgetsUnlistedNames) {
  Dispatcher d;
  DnsCache cache(d);
  AddressList out;
  std::string error;
  ASSERT_TRUE(cache.lookup("localhost", 80, &out, &error)) << error;
  bool called = false;
  cache.refresh({"localhost"}, [&](std::vector<DnsCache::Change>) { called = true; });
  EXPECT_TRUE(cache.refreshing());
  for (int i = 0; i < 1000 && cache.refreshing(); ++i) uv_run(d.loop(), UV_RUN_ONCE);
  EXPECT_FALSE(cache.refreshing());
  EXPECT_FALSE(called);
  EXPECT_EQ(cache.size(), 1u);
  cache.refresh({}, [&](std::vector<DnsCache::Change>) { called = true; });
  EXPECT_FALSE(cache.refreshing());
  EXPECT_EQ(cache.size(), 0u);
}

}  // namespace
}  // namespace eldric::upstream
