#include "dataplane/upstream/host.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <map>
#include <thread>

#include "dataplane/event/dispatcher.h"
#include "dataplane/network/connection.h"
#include "dataplane/upstream/health_checker.h"

namespace eldric::upstream {
namespace {

sockaddr_storage ip(const char* text, uint16_t port) {
  sockaddr_storage addr;
  EXPECT_TRUE(network::parseIpAddress(text, port, &addr));
  return addr;
}

HostSharedPtr makeHost(const std::string& url, uint16_t port) {
  return std::make_shared<Host>(url, "127.0.0.1", port, AddressList{ip("127.0.0.1", port)});
}

TEST(HostTest, MovesToItsNextAddressOnlyFromTheOneThatFailed) {
  Host one("http://a", "a", 1, {ip("127.0.0.1", 1)});
  EXPECT_FALSE(one.tryNextAddress(0));  // nothing else to try
  Host h("http://localhost:1", "localhost", 1, {ip("::1", 1), ip("127.0.0.1", 1)});
  EXPECT_EQ(h.address()->sa_family, AF_INET6);
  uint32_t seen = h.addressIndex();
  EXPECT_TRUE(h.tryNextAddress(seen));
  EXPECT_EQ(h.address()->sa_family, AF_INET);
  // A second caller that failed on the same old address does not move it
  // past the one that may work.
  EXPECT_TRUE(h.tryNextAddress(seen));
  EXPECT_EQ(h.address()->sa_family, AF_INET);
  EXPECT_TRUE(h.tryNextAddress(h.addressIndex()));  // round and round
  EXPECT_EQ(h.address()->sa_family, AF_INET6);
}

// A listening socket on 127.0.0.1 that answers `accepts` health checks
// with 200, from a thread (blocking calls; the test's loop is the Edge's).
class OkServer {
 public:
  explicit OkServer(int accepts) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 8);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this, accepts] {
      for (int i = 0; i < accepts; ++i) {
        int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;
        char buf[1024];
        (void)!read(c, buf, sizeof buf);
        const char ok[] = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
        (void)!write(c, ok, sizeof ok - 1);
        close(c);
      }
    });
  }
  ~OkServer() {
    shutdown(fd_, SHUT_RDWR);
    close(fd_);
    thread_.join();
  }
  uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
};

// A port on 127.0.0.1 that refuses: bound, never listened on.
uint16_t refusingPort(int* fd) {
  *fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(*fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(*fd, reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

TEST(HealthCheckTest, AHostWhoseFirstAddressRefusesIsHealthyOnItsSecond) {
  OkServer server(1);
  int closed_fd;
  uint16_t closed = refusingPort(&closed_fd);
  auto host =
      std::make_shared<Host>("http://localhost:1", "localhost", 1,
                             AddressList{ip("127.0.0.1", closed), ip("127.0.0.1", server.port())});
  auto cluster = std::make_shared<ClusterInfo>();
  cluster->health_path = "/health";
  cluster->unhealthy_threshold = 1;
  cluster->hosts = {host};
  Dispatcher d;
  {
    HealthChecker checker(d);
    checker.update({cluster});
    for (int i = 0; i < 2000 && host->lastCheckDetail().empty(); ++i) uv_run(d.loop(), UV_RUN_ONCE);
    EXPECT_EQ(host->lastCheckDetail(), "ok");
    EXPECT_TRUE(host->healthy());
    EXPECT_EQ(host->addressIndex(), 1u);  // requests go there too from now on
  }
  close(closed_fd);
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
  AddressList one{ip("127.0.0.1", 80)}, two{ip("127.0.0.2", 80)};
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

TEST(HostRegistryTest, TheSameAddressesInAnotherOrderAreTheSameHost) {
  HostRegistry reg;
  auto a = reg.get("http://r:80", "r", 80, {ip("10.0.0.1", 80), ip("10.0.0.2", 80)});
  EXPECT_EQ(reg.get("http://r:80", "r", 80, {ip("10.0.0.2", 80), ip("10.0.0.1", 80)}), a);
  EXPECT_NE(reg.get("http://r:80", "r", 80, {ip("10.0.0.2", 80)}), a);
}

}  // namespace
}  // namespace eldric::upstream
