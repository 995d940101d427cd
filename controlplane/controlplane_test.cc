// The control plane in-process on a loopback port, driven by libgrpc++
// clients: the discovery stream (hello, snapshot, ACK/NACK, pushes on
// change, farm usage), the Admin service, TLS and mTLS.

#include <fcntl.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/core/store.h"
#include "controlplane/server.h"
#include "eldric/edge/v1/admin.grpc.pb.h"
#include "eldric/edge/v1/discovery.grpc.pb.h"
#include "gtest/gtest.h"

namespace eldric::controlplane {
namespace {

using edge::v1::DiscoveryRequest;
using edge::v1::DiscoveryResponse;
using namespace std::chrono_literals;

std::string freshDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/cp_test.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  EXPECT_NE(mkdtemp(buf.data()), nullptr);
  return std::string(buf.data());
}

void writeFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

std::string readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

const char kConfig[] = R"({
  // The snapshot's static part, as an Edge would read it.
  "router_urls": ["http://127.0.0.1:1"],
  "tls": {"enabled": false},
  "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"}}
})";
constexpr const char* kAdminKey = "sk-admin-key-for-tests";

// A call context carrying the config's admin key: every Admin RPC needs
// one.
class KeyedContext : public grpc::ClientContext {
 public:
  explicit KeyedContext(const std::string& key = kAdminKey) {
    AddMetadata("authorization", "Bearer " + key);
  }
};

// One discovery stream, read on its own thread into a queue.
class TestStream {
 public:
  explicit TestStream(std::shared_ptr<grpc::Channel> channel, const std::string& farm_token = "")
      : stub_(edge::v1::SnapshotDiscovery::NewStub(channel)) {
    if (!farm_token.empty()) ctx_.AddMetadata("eldric-farm-token", farm_token);
    stream_ = stub_->StreamSnapshots(&ctx_);
    reader_ = std::thread([this] {
      DiscoveryResponse r;
      while (stream_->Read(&r)) {
        std::lock_guard<std::mutex> l(mu_);
        queue_.push_back(r);
        cv_.notify_all();
      }
      std::lock_guard<std::mutex> l(mu_);
      ended_ = true;
      cv_.notify_all();
    });
  }
  ~TestStream() {
    ctx_.TryCancel();
    reader_.join();
  }

  bool send(const DiscoveryRequest& req) { return stream_->Write(req); }
  bool hello(const std::string& id) {
    DiscoveryRequest req;
    req.mutable_node()->set_id(id);
    req.mutable_node()->set_build_version("test-1");
    req.mutable_node()->add_listen_addresses("127.0.0.1:8443");
    return send(req);
  }
  bool ack(const DiscoveryResponse& r) {
    DiscoveryRequest req;
    req.set_version_info(r.version_info());
    req.set_response_nonce(r.nonce());
    return send(req);
  }

  // The next message satisfying `pred`, skipping others; false on timeout.
  bool next(DiscoveryResponse* out, std::chrono::milliseconds timeout,
            const std::function<bool(const DiscoveryResponse&)>& pred) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    std::unique_lock<std::mutex> l(mu_);
    while (true) {
      while (!queue_.empty()) {
        DiscoveryResponse r = std::move(queue_.front());
        queue_.pop_front();
        if (pred(r)) {
          *out = std::move(r);
          return true;
        }
      }
      if (ended_) return false;
      if (cv_.wait_until(l, deadline) == std::cv_status::timeout && queue_.empty()) return false;
    }
  }
  bool nextSnapshot(DiscoveryResponse* out, std::chrono::milliseconds timeout = 5s) {
    return next(out, timeout, [](const DiscoveryResponse& r) { return r.has_snapshot(); });
  }
  // Waits for the stream to end; returns its status.
  grpc::Status finish() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, 5s, [&] { return ended_; });
    l.unlock();
    return stream_->Finish();
  }

 private:
  std::unique_ptr<edge::v1::SnapshotDiscovery::Stub> stub_;
  grpc::ClientContext ctx_;
  std::unique_ptr<grpc::ClientReaderWriter<DiscoveryRequest, DiscoveryResponse>> stream_;
  std::thread reader_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<DiscoveryResponse> queue_;
  bool ended_ = false;
};

// Sends a usage report on a stream every 50 ms until destroyed (the only
// writer on that stream meanwhile).
class Reporter {
 public:
  Reporter(TestStream* s, DiscoveryRequest report) : s_(s), report_(std::move(report)) {
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> l(mu_);
      while (!stop_) {
        DiscoveryRequest r = report_;
        l.unlock();
        s_->send(r);
        l.lock();
        cv_.wait_for(l, 50ms, [&] { return stop_; });
      }
    });
  }
  ~Reporter() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void set(DiscoveryRequest report) {
    std::lock_guard<std::mutex> l(mu_);
    report_ = std::move(report);
  }

 private:
  TestStream* s_;
  DiscoveryRequest report_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

class ControlPlaneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = freshDir();
    options_.listen = "127.0.0.1:0";
    options_.data_dir = dir_ + "/data";
    options_.config_file = dir_ + "/edge.json";
    options_.sync_interval_ms = 100;
    writeFile(options_.config_file, kConfig);
  }
  void TearDown() override {
    if (cp_) cp_->shutdown();
  }

  void start() {
    cp_ = std::make_unique<ControlPlane>(options_);
    std::string error;
    ASSERT_TRUE(cp_->start(&error)) << error;
    ASSERT_GT(cp_->port(), 0);
  }
  void restart() {
    cp_->shutdown();
    cp_.reset();
    start();
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(cp_->port()); }
  std::shared_ptr<grpc::Channel> channel() {
    return grpc::CreateChannel(target(), grpc::InsecureChannelCredentials());
  }
  std::unique_ptr<edge::v1::Admin::Stub> admin() { return edge::v1::Admin::NewStub(channel()); }

  edge::v1::FarmStatus farm() {
    KeyedContext ctx;
    edge::v1::FarmStatus out;
    EXPECT_TRUE(admin()->GetFarmStatus(&ctx, edge::v1::FarmStatusRequest(), &out).ok());
    return out;
  }
  const edge::v1::FarmMember* member(const edge::v1::FarmStatus& s, const std::string& id) {
    for (const auto& m : s.members()) {
      if (m.node_id() == id) return &m;
    }
    return nullptr;
  }
  // Polls GetFarmStatus until `pred` holds for node `id`.
  bool waitForMember(const std::string& id,
                     const std::function<bool(const edge::v1::FarmMember&)>& pred) {
    for (int i = 0; i < 100; ++i) {
      auto s = farm();
      if (auto* m = member(s, id); m && pred(*m)) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  std::string dir_;
  Options options_;
  std::unique_ptr<ControlPlane> cp_;
};

TEST_F(ControlPlaneTest, SnapshotRightAfterHelloThenAck) {
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  EXPECT_EQ(r.version_info(), cp_->currentVersion());
  EXPECT_EQ(r.snapshot().version(), r.version_info());
  EXPECT_FALSE(r.nonce().empty());
  EXPECT_EQ(r.version_info().rfind("cp-0-", 0), 0u) << r.version_info();
  // The config's key, and the farm's session signing key (same on every
  // member, kept in the data dir).
  ASSERT_EQ(r.snapshot().auth().api_keys_size(), 1);
  EXPECT_EQ(r.snapshot().auth().api_keys(0).client_name(), "ops");
  ASSERT_EQ(r.snapshot().auth().session_signing_keys_size(), 1);
  EXPECT_EQ(r.snapshot().auth().session_signing_keys(0),
            readFile(options_.data_dir + "/session.key"));
  struct stat st;
  ASSERT_EQ(stat((options_.data_dir + "/session.key").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  ASSERT_EQ(r.snapshot().clusters_size(), 1);
  EXPECT_EQ(r.snapshot().clusters(0).endpoints(0).url(), "http://127.0.0.1:1");
  // Members learn the interval the control plane pushes at (--sync-interval-ms).
  EXPECT_EQ(r.snapshot().farm().sync_interval().seconds(), 0);
  EXPECT_EQ(r.snapshot().farm().sync_interval().nanos(), 100 * 1000000);

  ASSERT_TRUE(s.ack(r));
  EXPECT_TRUE(waitForMember("edge-a", [&](const edge::v1::FarmMember& m) {
    return m.connected() && m.acked_version() == r.version_info();
  }));
  auto status = farm();
  EXPECT_EQ(status.current_version(), r.version_info());
  const auto* m = member(status, "edge-a");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->build_version(), "test-1");
  ASSERT_EQ(m->listen_addresses_size(), 1);
  EXPECT_EQ(m->listen_addresses(0), "127.0.0.1:8443");
  EXPECT_GT(m->connected_since_unix_ms(), 0);
  EXPECT_TRUE(m->nacked_version().empty());
}

TEST_F(ControlPlaneTest, RegistrationThroughHandleRestIsPushed) {
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse first;
  ASSERT_TRUE(s.nextSnapshot(&first));
  ASSERT_TRUE(s.ack(first));

  KeyedContext ctx;
  edge::v1::RestRequest req;
  req.set_method("POST");
  req.set_path("/api/v1/clients/register");
  req.set_body(R"({"name":"x"})");
  edge::v1::RestReply reply;
  ASSERT_TRUE(admin()->HandleRest(&ctx, req, &reply).ok());
  ASSERT_EQ(reply.status(), 200u) << reply.body();
  const std::string body = reply.body();
  size_t at = body.find("\"api_key\":\"");
  ASSERT_NE(at, std::string::npos) << body;
  std::string key = body.substr(at + 11, body.find('"', at + 11) - (at + 11));

  // The answer went out after the push was queued: it is there at once.
  DiscoveryResponse second;
  ASSERT_TRUE(s.nextSnapshot(&second, 2s));
  EXPECT_NE(second.version_info(), first.version_info());
  EXPECT_NE(second.nonce(), first.nonce());
  EXPECT_EQ(second.version_info(), cp_->currentVersion());
  ASSERT_EQ(second.snapshot().auth().api_keys_size(), first.snapshot().auth().api_keys_size() + 1);
  unsigned char digest[32];
  crypto::sha256(key.data(), key.size(), digest);
  bool found = false;
  for (const auto& k : second.snapshot().auth().api_keys()) {
    if (k.sha256() == std::string(reinterpret_cast<char*>(digest), 32)) {
      found = true;
      EXPECT_EQ(k.client_name(), "x");
    }
  }
  EXPECT_TRUE(found);

  // A REST call that changes nothing pushes nothing.
  KeyedContext ctx2;
  edge::v1::RestRequest list;
  list.set_method("GET");
  list.set_path("/api/v1/clients");
  ASSERT_TRUE(admin()->HandleRest(&ctx2, list, &reply).ok());
  EXPECT_EQ(reply.status(), 200u);
  DiscoveryResponse none;
  EXPECT_FALSE(s.nextSnapshot(&none, 400ms));

  // A refused one answers with the REST status and code.
  KeyedContext ctx3;
  ASSERT_TRUE(admin()->HandleRest(&ctx3, req, &reply).ok());
  EXPECT_EQ(reply.status(), 400u);
  EXPECT_EQ(reply.error_code(), "duplicate_name");
}

TEST_F(ControlPlaneTest, TypedAdminChangesArePushed) {
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  auto stub = admin();

  edge::v1::RegisterClientRequest reg;
  reg.set_name("app");
  reg.add_scopes("inference");
  reg.add_scopes("admin");
  reg.set_requests_per_minute(60);
  edge::v1::ClientWithKey issued;
  {
    KeyedContext ctx;
    ASSERT_TRUE(stub->RegisterClient(&ctx, reg, &issued).ok());
  }
  EXPECT_EQ(issued.api_key().rfind("sk-", 0), 0u);
  EXPECT_EQ(issued.client().name(), "app");
  EXPECT_EQ(issued.client().requests_per_minute(), 60u);
  ASSERT_TRUE(s.nextSnapshot(&r, 2s));
  EXPECT_EQ(r.snapshot().auth().api_keys_size(), 2);

  {
    KeyedContext ctx;
    edge::v1::ClientWithKey dup;
    EXPECT_EQ(stub->RegisterClient(&ctx, reg, &dup).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  }
  {
    KeyedContext ctx;
    edge::v1::ClientList list;
    ASSERT_TRUE(stub->ListClients(&ctx, edge::v1::ListClientsRequest(), &list).ok());
    ASSERT_EQ(list.clients_size(), 2);  // the config's "ops" and "app"
    EXPECT_EQ(list.clients(0).name(), "ops");
    EXPECT_EQ(list.clients(0).source(), "config");
    EXPECT_EQ(list.clients(1).name(), "app");
    EXPECT_EQ(list.clients(1).source(), "api");
  }
  {
    KeyedContext ctx;
    edge::v1::RotateKeyRequest rot;
    rot.set_id("app");
    rot.set_overlap_seconds(0);
    edge::v1::ClientWithKey rotated;
    ASSERT_TRUE(stub->RotateKey(&ctx, rot, &rotated).ok());
    EXPECT_NE(rotated.api_key(), issued.api_key());
  }
  // Overlap 0: the old key is gone from the next snapshot.
  ASSERT_TRUE(s.nextSnapshot(&r, 2s));
  EXPECT_EQ(r.snapshot().auth().api_keys_size(), 2);
  {
    KeyedContext ctx;
    edge::v1::ClientRef ref;
    ref.set_id(issued.client().id());
    edge::v1::Client c;
    ASSERT_TRUE(stub->RevokeClient(&ctx, ref, &c).ok());
    EXPECT_NE(c.revoked_at(), 0);
  }
  ASSERT_TRUE(s.nextSnapshot(&r, 2s));
  EXPECT_EQ(r.snapshot().auth().api_keys_size(), 1);
  {
    KeyedContext ctx;
    edge::v1::ClientRef ref;
    ref.set_id("ops");
    edge::v1::Client c;
    EXPECT_EQ(stub->RevokeClient(&ctx, ref, &c).error_code(),
              grpc::StatusCode::FAILED_PRECONDITION);
  }
  {
    KeyedContext ctx;
    edge::v1::ClientRef ref;
    ref.set_id("nobody");
    edge::v1::Client c;
    EXPECT_EQ(stub->GetClient(&ctx, ref, &c).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

TEST_F(ControlPlaneTest, NackIsRecordedAndNotResent) {
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-bad"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  DiscoveryRequest nack;
  nack.set_response_nonce(r.nonce());
  nack.set_error_detail("tls: cannot load certificate: bad PEM");
  ASSERT_TRUE(s.send(nack));
  ASSERT_TRUE(waitForMember("edge-bad", [&](const edge::v1::FarmMember& m) {
    return m.nacked_version() == r.version_info();
  }));
  auto status = farm();
  const auto* m = member(status, "edge-bad");
  ASSERT_NE(m, nullptr);
  EXPECT_EQ(m->nack_error(), "tls: cannot load certificate: bad PEM");
  EXPECT_TRUE(m->acked_version().empty());
  EXPECT_TRUE(m->connected());
  // The same through the REST API the data planes forward (GET /api/v1/farm).
  {
    KeyedContext ctx;
    edge::v1::RestRequest req;
    req.set_method("GET");
    req.set_path("/api/v1/farm");
    edge::v1::RestReply reply;
    ASSERT_TRUE(admin()->HandleRest(&ctx, req, &reply).ok());
    ASSERT_EQ(reply.status(), 200u) << reply.body();
    EXPECT_NE(reply.body().find("\"mode\":\"farm\""), std::string::npos) << reply.body();
    EXPECT_NE(reply.body().find("\"node_id\":\"edge-bad\""), std::string::npos) << reply.body();
    EXPECT_NE(reply.body().find("\"nack_error\":\"tls: cannot load certificate: bad PEM\""),
              std::string::npos)
        << reply.body();
    EXPECT_NE(reply.body().find("\"acked_version\":null"), std::string::npos) << reply.body();
  }

  // No resend of the rejected version: only farm usage arrives.
  DiscoveryResponse again;
  EXPECT_FALSE(s.nextSnapshot(&again, 500ms));

  // The next change is pushed; ACKing it clears the NACK.
  KeyedContext ctx;
  edge::v1::RegisterClientRequest reg;
  reg.set_name("fix");
  edge::v1::ClientWithKey issued;
  ASSERT_TRUE(admin()->RegisterClient(&ctx, reg, &issued).ok());
  ASSERT_TRUE(s.nextSnapshot(&again, 2s));
  ASSERT_TRUE(s.ack(again));
  EXPECT_TRUE(waitForMember("edge-bad", [&](const edge::v1::FarmMember& m) {
    return m.acked_version() == again.version_info() && m.nacked_version().empty();
  }));
}

TEST_F(ControlPlaneTest, FarmUsageSumsTheOtherMembers) {
  // Members report the clients the snapshot names (ids "cfg_<name>").
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"],
    "tls": {"enabled": false},
    "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"},
             "api_keys": {"sk-usage-test-key-one-000000000000": "one", "sk-usage-test-key-two-000000000000": "two"}}
  })");
  start();
  TestStream a(channel()), b(channel()), c(channel());
  ASSERT_TRUE(a.hello("edge-a"));
  ASSERT_TRUE(b.hello("edge-b"));
  ASSERT_TRUE(c.hello("edge-c"));  // connected, never reports
  DiscoveryResponse r;
  ASSERT_TRUE(a.nextSnapshot(&r));
  ASSERT_TRUE(b.nextSnapshot(&r));
  ASSERT_TRUE(c.nextSnapshot(&r));

  auto report = [](uint64_t global, std::map<std::string, uint64_t> keys, uint64_t tokens) {
    DiscoveryRequest req;
    auto* u = req.mutable_usage();
    u->set_at_unix_ms(1);
    u->set_window_seconds(60);
    u->set_global_requests(global);
    for (const auto& [k, n] : keys) {
      auto* kc = u->add_key_requests();
      kc->set_key(k);
      kc->set_count(n);
    }
    auto* ip = u->add_ip_requests();
    ip->set_key("10.0.0.1");
    ip->set_count(global);
    auto* t = u->add_key_tokens();
    t->set_key("cfg_one");
    t->set_count(tokens);
    auto* up = u->add_upstreams();
    up->set_url("http://127.0.0.1:1");
    up->set_healthy(false);
    return req;
  };
  // A and B report every 50 ms, as data planes do every sync interval.
  Reporter ra(&a, report(5, {{"cfg_one", 2}, {"cfg_two", 3}}, 100));
  auto rb = std::make_unique<Reporter>(&b, report(7, {{"cfg_one", 4}}, 40));

  auto counts = [](const google::protobuf::RepeatedPtrField<edge::v1::KeyedCount>& kcs) {
    std::map<std::string, uint64_t> m;
    for (const auto& kc : kcs) m[kc.key()] = kc.count();
    return m;
  };
  // A sees only B; B sees only A; C (no report) sees both.
  auto usageWith = [&](TestStream& s, uint64_t global) {
    DiscoveryResponse u;
    bool ok = s.next(&u, 5s, [&](const DiscoveryResponse& m) {
      return m.has_farm_usage() && m.farm_usage().global_requests() == global;
    });
    EXPECT_TRUE(ok) << "no farm usage with global " << global;
    EXPECT_FALSE(u.has_snapshot());
    return u.farm_usage();
  };
  // Members: connected or heard from recently (C has not reported yet).
  auto fa = usageWith(a, 7);
  EXPECT_EQ(fa.members(), 3u);
  EXPECT_EQ(counts(fa.key_requests()), (std::map<std::string, uint64_t>{{"cfg_one", 4}}));
  EXPECT_EQ(counts(fa.ip_requests()), (std::map<std::string, uint64_t>{{"10.0.0.1", 7}}));
  EXPECT_EQ(counts(fa.key_tokens()), (std::map<std::string, uint64_t>{{"cfg_one", 40}}));
  EXPECT_GT(fa.at_unix_ms(), 0);

  auto fb = usageWith(b, 5);
  EXPECT_EQ(fb.members(), 3u);
  EXPECT_EQ(counts(fb.key_requests()),
            (std::map<std::string, uint64_t>{{"cfg_one", 2}, {"cfg_two", 3}}));
  EXPECT_EQ(counts(fb.key_tokens()), (std::map<std::string, uint64_t>{{"cfg_one", 100}}));

  auto fc = usageWith(c, 12);
  EXPECT_EQ(fc.members(), 3u);
  EXPECT_EQ(counts(fc.key_requests()),
            (std::map<std::string, uint64_t>{{"cfg_one", 6}, {"cfg_two", 3}}));

  // Absolute counts: a newer report replaces the older one.
  rb->set(report(9, {{"cfg_one", 9}}, 40));
  auto fa2 = usageWith(a, 9);
  EXPECT_EQ(counts(fa2.key_requests()), (std::map<std::string, uint64_t>{{"cfg_one", 9}}));

  // The farm status shows reports and the upstreams as members see them.
  auto status = farm();
  const auto* ma = member(status, "edge-a");
  ASSERT_NE(ma, nullptr);
  EXPECT_GT(ma->last_report_unix_ms(), 0);
  ASSERT_EQ(ma->upstreams_size(), 1);
  EXPECT_FALSE(ma->upstreams(0).healthy());
  EXPECT_EQ(member(status, "edge-c")->last_report_unix_ms(), 0);

  // A member that stops reporting stops counting (3 intervals = 300 ms);
  // still connected, it is still a member.
  rb.reset();
  auto fc_later = usageWith(c, 5);
  EXPECT_EQ(fc_later.members(), 3u);

  // Live usage shows up in the REST client listing too.
  KeyedContext ctx;
  edge::v1::RestRequest req;
  req.set_method("GET");
  req.set_path("/api/v1/clients/ops");
  edge::v1::RestReply reply;
  ASSERT_TRUE(admin()->HandleRest(&ctx, req, &reply).ok());
  EXPECT_NE(reply.body().find("\"requests_in_window\""), std::string::npos) << reply.body();
}

// A report reaches the other members soon after it arrives, not only at
// the next periodic push.
// Farm-wide request limits: the members' ceilings never add up to more
// than the limit, and move to the busy member once the idle one has
// acknowledged giving its share back.
TEST_F(ControlPlaneTest, FarmUsageSharesLimitsOutAsCeilings) {
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"],
    "tls": {"enabled": false},
    "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"}, "api_keys": {"sk-usage-test-key-busy-00000000000": "busy"}},
    "rate_limits": {"global_rpm": 0, "per_ip_rpm": 0, "per_key_rpm": 100, "window_seconds": 60}
  })");
  start();
  TestStream a(channel()), b(channel());
  ASSERT_TRUE(a.hello("edge-a"));
  ASSERT_TRUE(b.hello("edge-b"));
  DiscoveryResponse r;
  ASSERT_TRUE(a.nextSnapshot(&r));
  ASSERT_TRUE(b.nextSnapshot(&r));

  // What each member would report: its count, the seq it applied, its
  // explicit ceiling in force.
  auto report = [](uint64_t count, uint64_t refused, uint64_t seq, const std::string& instance,
                   int64_t ceiling) {
    DiscoveryRequest req;
    auto* u = req.mutable_usage();
    u->set_window_seconds(60);
    u->set_farm_members(2);
    u->set_applied_usage_seq(seq);
    u->set_applied_usage_instance(instance);
    if (count) {
      auto* kc = u->add_key_requests();
      kc->set_key("cfg_busy");
      kc->set_count(count);
    }
    if (refused) {
      auto* kc = u->add_key_refused();
      kc->set_key("cfg_busy");
      kc->set_count(refused);
    }
    if (ceiling >= 0) {
      auto* kc = u->add_key_request_ceilings();
      kc->set_key("cfg_busy");
      kc->set_count(static_cast<uint64_t>(ceiling));
    }
    return req;
  };
  auto ceilingOf = [](const edge::v1::FarmUsage& fu) -> int64_t {
    for (const auto& kc : fu.key_request_ceilings()) {
      if (kc.key() == "cfg_busy") return static_cast<int64_t>(kc.count());
    }
    return -1;
  };
  auto nextUsage = [](TestStream& s, const std::function<bool(const edge::v1::FarmUsage&)>& pred) {
    DiscoveryResponse m;
    bool ok = s.next(&m, 5s, [&](const DiscoveryResponse& x) {
      return x.has_farm_usage() && pred(x.farm_usage());
    });
    EXPECT_TRUE(ok);
    return m.farm_usage();
  };

  // Until a member has reported it gets no ceilings (seq 0).
  auto first = nextUsage(a, [](const edge::v1::FarmUsage&) { return true; });
  EXPECT_EQ(first.seq(), 0u);

  // A is busy at its default share (50) and refusing; B idle at its default
  // (50): no headroom, so A is not raised yet and B is lowered.
  ASSERT_TRUE(a.send(report(50, 40, 0, "", -1)));
  ASSERT_TRUE(b.send(report(0, 0, 0, "", -1)));
  auto fb = nextUsage(
      b, [&](const edge::v1::FarmUsage& fu) { return ceilingOf(fu) >= 0 && ceilingOf(fu) < 50; });
  EXPECT_EQ(fb.members(), 2u);
  EXPECT_NE(fb.seq(), 0u);
  int64_t b_ceiling = ceilingOf(fb);
  auto fa = nextUsage(a, [&](const edge::v1::FarmUsage& fu) { return ceilingOf(fu) >= 0; });
  EXPECT_LE(ceilingOf(fa), 50);

  EXPECT_FALSE(fb.instance().empty());

  // B says it applied that push: A gets the rest, never more in sum.
  ASSERT_TRUE(b.send(report(0, 0, fb.seq(), fb.instance(), b_ceiling)));
  ASSERT_TRUE(a.send(report(50, 40, 0, "", -1)));
  auto fa2 = nextUsage(a, [&](const edge::v1::FarmUsage& fu) { return ceilingOf(fu) > 50; });
  EXPECT_LE(ceilingOf(fa2) + b_ceiling, 100);
  EXPECT_GE(ceilingOf(fa2), 95);
}

// A member cannot report more than the served limits let it admit: counts
// are cut to each tier's limit, clients the snapshot does not name are
// dropped, and IP entries stop at rate_limits.max_ip_entries.
TEST_F(ControlPlaneTest, FarmUsageCarriesTheOtherMembersTunnels) {
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"],
    "tls": {"enabled": false},
    "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"}}
  })");
  start();
  TestStream a(channel()), b(channel());
  // A leaves its relay host to the control plane; B names it.
  auto hello = [](const std::string& id, const std::string& relay) {
    DiscoveryRequest req;
    req.mutable_node()->set_id(id);
    req.mutable_node()->set_build_version("test-1");
    req.mutable_node()->set_relay_url(relay);
    return req;
  };
  ASSERT_TRUE(a.send(hello("edge-a", "https://:8443")));
  ASSERT_TRUE(b.send(hello("edge-b", "https://10.9.9.9:443")));
  DiscoveryResponse r;
  ASSERT_TRUE(a.nextSnapshot(&r));
  ASSERT_TRUE(b.nextSnapshot(&r));
  auto report = [](const std::string& tunnel, const std::string& worker) {
    DiscoveryRequest req;
    auto* u = req.mutable_usage();
    u->set_at_unix_ms(1);
    u->set_window_seconds(60);
    auto* t = u->add_tunnels();
    t->set_tunnel_id(tunnel);
    t->set_worker_id(worker);
    t->add_models("m1");
    t->set_parked_polls(2);
    return req;
  };
  Reporter ra(&a, report("aaaa", "gpu-a"));
  Reporter rb(&b, report("bbbb", "gpu-b"));
  auto directory = [](TestStream& s) {
    DiscoveryResponse u;
    EXPECT_TRUE(s.next(&u, 5s, [](const DiscoveryResponse& m) {
      return m.has_farm_usage() && m.farm_usage().tunnels_size() > 0;
    }));
    return u.farm_usage();
  };
  // Each member gets the other's tunnels, not its own.
  auto fa = directory(a);
  ASSERT_EQ(fa.tunnels_size(), 1);
  EXPECT_EQ(fa.tunnels(0).tunnel_id(), "bbbb");
  EXPECT_EQ(fa.tunnels(0).worker_id(), "gpu-b");
  EXPECT_EQ(fa.tunnels(0).member_id(), "edge-b");
  EXPECT_EQ(fa.tunnels(0).relay_url(), "https://10.9.9.9:443");
  EXPECT_EQ(fa.tunnels(0).parked_polls(), 2u);
  auto fb = directory(b);
  ASSERT_EQ(fb.tunnels_size(), 1);
  EXPECT_EQ(fb.tunnels(0).tunnel_id(), "aaaa");
  EXPECT_EQ(fb.tunnels(0).member_id(), "edge-a");
  // The host A left empty is the address its stream came from.
  EXPECT_TRUE(fb.tunnels(0).relay_url() == "https://127.0.0.1:8443" ||
              fb.tunnels(0).relay_url() == "https://[::1]:8443")
      << fb.tunnels(0).relay_url();
}

TEST_F(ControlPlaneTest, ATunnelTwoMembersClaimIsInNobodysDirectory) {
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"],
    "tls": {"enabled": false},
    "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"}}
  })");
  start();
  TestStream a(channel()), b(channel()), c(channel());
  for (auto* s : {&a, &b, &c}) {
    DiscoveryRequest req;
    req.mutable_node()->set_id(s == &a ? "edge-a" : s == &b ? "edge-b" : "edge-c");
    req.mutable_node()->set_relay_url("https://10.9.9.9:443");
    ASSERT_TRUE(s->send(req));
    DiscoveryResponse r;
    ASSERT_TRUE(s->nextSnapshot(&r));
  }
  auto report = [](std::vector<std::string> ids) {
    DiscoveryRequest req;
    auto* u = req.mutable_usage();
    u->set_at_unix_ms(1);
    u->set_window_seconds(60);
    for (const auto& id : ids) u->add_tunnels()->set_tunnel_id(id);
    return req;
  };
  // B also claims A's tunnel: to draw its relays, or a bug. Neither goes
  // out; B's own other tunnel does.
  Reporter ra(&a, report({"aaaa"}));
  Reporter rb(&b, report({"aaaa", "bbbb"}));
  // Until A's report is in, B's claim of "aaaa" is uncontested and may go
  // out (the reports race): wait for the usage both reports made, in which
  // A's tunnel is nobody's. Were it wrongly kept, this would time out.
  auto ids = [](const DiscoveryResponse& m) {
    std::vector<std::string> out;
    for (const auto& t : m.farm_usage().tunnels()) out.push_back(t.tunnel_id());
    return out;
  };
  DiscoveryResponse u;
  ASSERT_TRUE(c.next(&u, 5s, [&](const DiscoveryResponse& m) {
    return m.has_farm_usage() && ids(m) == std::vector<std::string>{"bbbb"};
  }));
}

TEST_F(ControlPlaneTest, UsageReportsAreBoundedToTheServedLimits) {
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"],
    "tls": {"enabled": false},
    "auth": {"admin_keys": {"sk-admin-key-for-tests": "ops"}, "api_keys": {"sk-usage-test-key-one-000000000000": "one"}},
    "rate_limits": {"global_rpm": 1000, "per_ip_rpm": 10, "per_key_rpm": 100, "per_key_tpm": 5000,
                    "window_seconds": 60, "max_ip_entries": 100}
  })");
  start();
  TestStream a(channel()), b(channel());
  ASSERT_TRUE(a.hello("edge-a"));
  ASSERT_TRUE(b.hello("edge-b"));
  DiscoveryResponse r;
  ASSERT_TRUE(a.nextSnapshot(&r));
  ASSERT_TRUE(b.nextSnapshot(&r));
  DiscoveryRequest report;
  auto* u = report.mutable_usage();
  u->set_window_seconds(60);
  u->set_global_requests(1000000000000ull);
  for (const char* key : {"cfg_one", "cl_ghost"}) {
    auto* kc = u->add_key_requests();
    kc->set_key(key);
    kc->set_count(1000000000ull);
    kc = u->add_key_tokens();
    kc->set_key(key);
    kc->set_count(1000000000ull);
  }
  for (int i = 0; i < 150; ++i) {
    auto* ip = u->add_ip_requests();
    ip->set_key("10.0.0." + std::to_string(i));
    ip->set_count(1000000);
  }
  ASSERT_TRUE(b.send(report));
  ASSERT_TRUE(a.next(&r, 5s, [](const DiscoveryResponse& m) {
    return m.has_farm_usage() && m.farm_usage().global_requests() > 0;
  }));
  const auto& fu = r.farm_usage();
  EXPECT_EQ(fu.global_requests(), 1000u);
  ASSERT_EQ(fu.key_requests_size(), 1);
  EXPECT_EQ(fu.key_requests(0).key(), "cfg_one");
  EXPECT_EQ(fu.key_requests(0).count(), 100u);
  ASSERT_EQ(fu.key_tokens_size(), 1);
  EXPECT_EQ(fu.key_tokens(0).count(), 5000u);
  EXPECT_EQ(fu.ip_requests_size(), 100);
  for (const auto& ip : fu.ip_requests()) EXPECT_EQ(ip.count(), 10u);
}

// Admin calls need an admin key in the call's metadata; a member's
// certificate (or no credential at all) is not enough.
TEST_F(ControlPlaneTest, AdminCallsNeedAnAdminKey) {
  start();
  edge::v1::FarmStatus out;
  {
    grpc::ClientContext ctx;
    grpc::Status st = admin()->GetFarmStatus(&ctx, edge::v1::FarmStatusRequest(), &out);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(st.error_message().find("admin API key"), std::string::npos) << st.error_message();
  }
  {
    KeyedContext ctx("sk-not-a-key-of-this-farm-000000000");
    EXPECT_EQ(admin()->GetFarmStatus(&ctx, edge::v1::FarmStatusRequest(), &out).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    edge::v1::RestRequest req;
    req.set_method("POST");
    req.set_path("/api/v1/clients/register");
    req.set_body(R"({"name":"sneaky","scopes":["admin"]})");
    req.set_caller_client("ops");  // a claim, not a credential
    edge::v1::RestReply reply;
    EXPECT_EQ(admin()->HandleRest(&ctx, req, &reply).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // An inference key is known but may not administer.
  edge::v1::ClientWithKey app;
  {
    KeyedContext ctx;
    edge::v1::RegisterClientRequest req;
    req.set_name("app");
    ASSERT_TRUE(admin()->RegisterClient(&ctx, req, &app).ok());
  }
  {
    KeyedContext ctx(app.api_key());
    EXPECT_EQ(admin()->GetFarmStatus(&ctx, edge::v1::FarmStatusRequest(), &out).error_code(),
              grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    KeyedContext ctx;
    edge::v1::ClientList list;
    ASSERT_TRUE(admin()->ListClients(&ctx, edge::v1::ListClientsRequest(), &list).ok());
    for (const auto& c : list.clients()) EXPECT_NE(c.name(), "sneaky");
  }
}

TEST_F(ControlPlaneTest, AReportIsForwardedWithoutWaitingForTheInterval) {
  options_.sync_interval_ms = 2000;
  start();
  TestStream a(channel()), b(channel());
  ASSERT_TRUE(a.hello("edge-a"));
  ASSERT_TRUE(b.hello("edge-b"));
  DiscoveryResponse r;
  ASSERT_TRUE(a.nextSnapshot(&r));
  ASSERT_TRUE(b.nextSnapshot(&r));
  DiscoveryRequest report;
  report.mutable_usage()->set_global_requests(7);
  auto sent = std::chrono::steady_clock::now();
  ASSERT_TRUE(b.send(report));
  ASSERT_TRUE(a.next(&r, 5s, [](const DiscoveryResponse& m) {
    return m.has_farm_usage() && m.farm_usage().global_requests() == 7;
  }));
  auto took = std::chrono::steady_clock::now() - sent;
  // Report-driven pushes are interval/8 = 250 ms apart at most.
  EXPECT_LT(took, 1000ms);
}

TEST_F(ControlPlaneTest, PluginsStateRoundTrip) {
  {
    std::string error;
    auto store = Store::open(options_.data_dir, &error);
    ASSERT_NE(store, nullptr) << error;
    PluginRecord p;
    p.id = "pii";
    p.name = "PII redactor";
    p.type = "filter";
    ASSERT_TRUE(store->upsertPlugin(p, &error)) << error;
  }
  start();
  auto stub = admin();
  {
    KeyedContext ctx;
    edge::v1::PluginList list;
    ASSERT_TRUE(stub->ListPlugins(&ctx, edge::v1::ListPluginsRequest(), &list).ok());
    ASSERT_EQ(list.plugins_size(), 1);
    EXPECT_EQ(list.plugins(0).id(), "pii");
    EXPECT_EQ(list.plugins(0).name(), "PII redactor");
    EXPECT_EQ(list.plugins(0).type(), "filter");
    EXPECT_FALSE(list.plugins(0).enabled());
  }
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  {
    KeyedContext ctx;
    edge::v1::SetPluginEnabledRequest req;
    req.set_id("pii");
    req.set_enabled(true);
    edge::v1::Plugin p;
    ASSERT_TRUE(stub->SetPluginEnabled(&ctx, req, &p).ok());
    EXPECT_TRUE(p.enabled());
  }
  // A plugin change is a state change: a new version is pushed.
  DiscoveryResponse r2;
  ASSERT_TRUE(s.nextSnapshot(&r2, 2s));
  EXPECT_NE(r2.version_info(), r.version_info());
  {
    KeyedContext ctx;
    edge::v1::PluginRef ref;
    ref.set_id("pii");
    edge::v1::Valves v;
    ASSERT_TRUE(stub->GetValves(&ctx, ref, &v).ok());
    EXPECT_EQ(v.json(), "{}");
  }
  {
    KeyedContext ctx;
    edge::v1::SetValvesRequest req;
    req.set_plugin_id("pii");
    req.set_json(R"({ "mask": "*", "fields": ["email"] })");
    edge::v1::Valves v;
    ASSERT_TRUE(stub->SetValves(&ctx, req, &v).ok());
    EXPECT_EQ(v.json(), R"({"mask":"*","fields":["email"]})");
  }
  {
    KeyedContext ctx;
    edge::v1::PluginRef ref;
    ref.set_id("pii");
    edge::v1::Valves v;
    ASSERT_TRUE(stub->GetValves(&ctx, ref, &v).ok());
    EXPECT_EQ(v.json(), R"({"mask":"*","fields":["email"]})");
  }
  for (const char* bad : {"[1,2]", "\"x\"", "{", "null"}) {
    KeyedContext ctx;
    edge::v1::SetValvesRequest req;
    req.set_plugin_id("pii");
    req.set_json(bad);
    edge::v1::Valves v;
    EXPECT_EQ(stub->SetValves(&ctx, req, &v).error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << bad;
  }
  {
    KeyedContext ctx;
    edge::v1::SetValvesRequest req;
    req.set_plugin_id("nope");
    req.set_json("{}");
    edge::v1::Valves v;
    EXPECT_EQ(stub->SetValves(&ctx, req, &v).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    KeyedContext ctx;
    edge::v1::PluginRef ref;
    ref.set_id("nope");
    edge::v1::Valves v;
    EXPECT_EQ(stub->GetValves(&ctx, ref, &v).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    KeyedContext ctx;
    edge::v1::SetPluginEnabledRequest req;
    req.set_id("nope");
    edge::v1::Plugin p;
    EXPECT_EQ(stub->SetPluginEnabled(&ctx, req, &p).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  // Durable: all there after a restart.
  restart();
  stub = admin();
  KeyedContext ctx;
  edge::v1::PluginList list;
  ASSERT_TRUE(stub->ListPlugins(&ctx, edge::v1::ListPluginsRequest(), &list).ok());
  ASSERT_EQ(list.plugins_size(), 1);
  EXPECT_TRUE(list.plugins(0).enabled());
}

TEST_F(ControlPlaneTest, VersionIsStableAcrossRestartsAndFollowsTheConfig) {
  start();
  {
    KeyedContext ctx;
    edge::v1::RegisterClientRequest reg;
    reg.set_name("app");
    edge::v1::ClientWithKey issued;
    ASSERT_TRUE(admin()->RegisterClient(&ctx, reg, &issued).ok());
  }
  std::string v1 = cp_->currentVersion();
  EXPECT_EQ(v1.rfind("cp-1-", 0), 0u) << v1;
  restart();
  EXPECT_EQ(cp_->currentVersion(), v1);

  // SIGHUP with the same file: nothing to push.
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  std::string error;
  ASSERT_TRUE(cp_->reload(&error)) << error;
  EXPECT_FALSE(s.nextSnapshot(&r, 300ms));

  // A changed file: a new version, pushed.
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1", "http://127.0.0.1:2"],
    "tls": {"enabled": false}
  })");
  ASSERT_TRUE(cp_->reload(&error)) << error;
  ASSERT_TRUE(s.nextSnapshot(&r, 2s));
  EXPECT_NE(r.version_info(), v1);
  EXPECT_EQ(r.snapshot().clusters(0).endpoints_size(), 2);

  // A broken file keeps the old config.
  writeFile(options_.config_file, "{ \"router_urls\": 5 }");
  EXPECT_FALSE(cp_->reload(&error));
  EXPECT_NE(error.find("router_urls"), std::string::npos) << error;
  EXPECT_EQ(cp_->currentVersion(), r.version_info());
}

TEST_F(ControlPlaneTest, HelloWithoutNodeIdIsRefused) {
  start();
  TestStream s(channel());
  DiscoveryRequest req;
  req.set_version_info("x");
  ASSERT_TRUE(s.send(req));
  grpc::Status st = s.finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("node.id"), std::string::npos);
}

// The stream is a raw method (the server parses requests itself): bytes
// that are no DiscoveryRequest end it with INVALID_ARGUMENT.
TEST_F(ControlPlaneTest, UnparsableRequestIsRefused) {
  start();
  grpc::GenericStub stub(channel());
  grpc::CompletionQueue cq;
  KeyedContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  auto next = [&](intptr_t want) {
    void* tag = nullptr;
    bool ok = false;
    auto r = cq.AsyncNext(&tag, &ok, std::chrono::system_clock::now() + 5s);
    return r == grpc::CompletionQueue::GOT_EVENT && reinterpret_cast<intptr_t>(tag) == want;
  };
  auto call = stub.PrepareCall(&ctx, "/eldric.edge.v1.SnapshotDiscovery/StreamSnapshots", &cq);
  call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(next(1));
  // Field 1 as a length-delimited value 127 bytes long, with 2 present.
  grpc::Slice junk(std::string("\x0a\x7f\x01\x02"));
  grpc::ByteBuffer request(&junk, 1);
  call->Write(request, reinterpret_cast<void*>(2));
  ASSERT_TRUE(next(2));
  grpc::Status status;
  call->Finish(&status, reinterpret_cast<void*>(3));
  ASSERT_TRUE(next(3));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_NE(status.error_message().find("unparsable"), std::string::npos) << status.error_message();
  cq.Shutdown();
  void* tag;
  bool ok;
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ControlPlaneTest, DisconnectIsVisibleAndLateJoinersGetTheCurrentSnapshot) {
  start();
  {
    TestStream s(channel());
    ASSERT_TRUE(s.hello("edge-a"));
    DiscoveryResponse r;
    ASSERT_TRUE(s.nextSnapshot(&r));
  }
  EXPECT_TRUE(
      waitForMember("edge-a", [](const edge::v1::FarmMember& m) { return !m.connected(); }));
  KeyedContext ctx;
  edge::v1::RegisterClientRequest reg;
  reg.set_name("late");
  edge::v1::ClientWithKey issued;
  ASSERT_TRUE(admin()->RegisterClient(&ctx, reg, &issued).ok());
  TestStream s2(channel());
  ASSERT_TRUE(s2.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s2.nextSnapshot(&r));
  EXPECT_EQ(r.version_info(), cp_->currentVersion());
  EXPECT_EQ(r.snapshot().auth().api_keys_size(), 2);
  EXPECT_TRUE(waitForMember("edge-a", [](const edge::v1::FarmMember& m) { return m.connected(); }));
}

// Streams coming and going while changes are pushed: every stream that
// stays ends on the last version, and nothing deadlocks or crashes.
TEST_F(ControlPlaneTest, ManyStreamsUnderChurnAllConverge) {
  start();
  constexpr int kStreams = 40;
  std::vector<std::unique_ptr<TestStream>> streams;
  for (int i = 0; i < kStreams; ++i) {
    streams.push_back(std::make_unique<TestStream>(channel()));
    ASSERT_TRUE(streams.back()->hello("edge-" + std::to_string(i)));
  }
  std::atomic<bool> stop{false};
  std::thread churn([&] {
    int n = 0;
    while (!stop) {
      TestStream t(channel());
      t.hello("churn-" + std::to_string(n++ % 5));
      DiscoveryResponse r;
      t.nextSnapshot(&r, 200ms);
    }
  });
  auto stub = admin();
  for (int i = 0; i < 15; ++i) {
    KeyedContext ctx;
    edge::v1::RegisterClientRequest reg;
    reg.set_name("c" + std::to_string(i));
    edge::v1::ClientWithKey issued;
    ASSERT_TRUE(stub->RegisterClient(&ctx, reg, &issued).ok());
  }
  stop = true;
  churn.join();
  const std::string last = cp_->currentVersion();
  for (auto& s : streams) {
    DiscoveryResponse r;
    ASSERT_TRUE(s->next(&r, 5s, [&](const DiscoveryResponse& m) {
      return m.has_snapshot() && m.version_info() == last;
    }));
    EXPECT_EQ(r.snapshot().auth().api_keys_size(), 16);
  }
  auto status = farm();
  int connected = 0;
  for (const auto& m : status.members()) {
    if (m.node_id().rfind("edge-", 0) == 0 && m.connected()) ++connected;
  }
  EXPECT_EQ(connected, kStreams);
}

TEST_F(ControlPlaneTest, HealthServiceServes) {
  start();
  grpc::GenericStub stub(channel());
  grpc::CompletionQueue cq;
  KeyedContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  grpc::Slice empty;
  grpc::ByteBuffer request(&empty, 1);  // HealthCheckRequest{service: ""}: no bytes
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&ctx, "/grpc.health.v1.Health/Check", request, &cq);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, reinterpret_cast<void*>(1));
  void* tag;
  bool ok;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  ASSERT_TRUE(status.ok()) << status.error_message();
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(response.Dump(&slices).ok());
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  EXPECT_EQ(bytes, std::string("\x08\x01", 2));  // status: SERVING
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
}

TEST_F(ControlPlaneTest, StartErrorsAreClear) {
  writeFile(options_.config_file, "{ \"router_urls\": [] }");
  ControlPlane bad(options_);
  std::string error;
  EXPECT_FALSE(bad.start(&error));
  EXPECT_NE(error.find("routers"), std::string::npos) << error;

  writeFile(options_.config_file, kConfig);
  start();
  Options clash = options_;
  clash.listen = target();
  clash.data_dir = dir_ + "/other";
  ControlPlane second(clash);
  EXPECT_FALSE(second.start(&error));
  EXPECT_NE(error.find("cannot listen"), std::string::npos) << error;
}

TEST_F(ControlPlaneTest, SyncIntervalComesFromTheFileWithoutTheFlag) {
  options_.sync_interval_ms = 0;
  writeFile(options_.config_file, R"({
    "router_urls": ["http://127.0.0.1:1"], "tls": {"enabled": false},
    "farm": {"sync_interval_ms": 1500}
  })");
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  EXPECT_EQ(r.snapshot().farm().sync_interval().seconds(), 1);
  EXPECT_EQ(r.snapshot().farm().sync_interval().nanos(), 500 * 1000000);
}

// One file for the members and the control plane: a member's farm
// settings are not the control plane's concern.
TEST_F(ControlPlaneTest, AFarmMemberConfigIsServed) {
  writeFile(options_.config_file, R"({
    "mode": "farm", "router_urls": ["http://127.0.0.1:1"], "tls": {"enabled": false},
    "farm": {"control_plane": ["127.0.0.1:8870"], "peers": ["a:1"]}
  })");
  start();
  TestStream s(channel());
  ASSERT_TRUE(s.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  EXPECT_EQ(r.snapshot().clusters(0).endpoints(0).url(), "http://127.0.0.1:1");
}

TEST_F(ControlPlaneTest, NoRoutersIsRefused) {
  writeFile(options_.config_file, R"({
    "mode": "farm", "tls": {"enabled": false}, "farm": {"control_plane": ["127.0.0.1:8870"]}
  })");
  ControlPlane cp(options_);
  std::string error;
  EXPECT_FALSE(cp.start(&error));
  EXPECT_NE(error.find("no routers"), std::string::npos) << error;
}

// Started by a farm's primary: the Edge's flags instead of a file, and
// every call must carry the members' token.
TEST_F(ControlPlaneTest, MemberTokenGuardsEveryCall) {
  options_.config_file.clear();
  options_.edge_args = {"--no-tls", "--routers",       "http://127.0.0.1:2", "--mode",
                        "farm",     "--control-plane", "127.0.0.1:1"};
  options_.member_token = std::string(64, 'a');
  start();
  {
    TestStream stranger(channel());
    stranger.hello("edge-x");
    grpc::Status st = stranger.finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_NE(st.error_message().find("farm token"), std::string::npos) << st.error_message();
  }
  {
    TestStream wrong(channel(), std::string(64, 'b'));
    wrong.hello("edge-x");
    EXPECT_EQ(wrong.finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  TestStream member(channel(), std::string(64, 'a'));
  ASSERT_TRUE(member.hello("edge-a"));
  DiscoveryResponse r;
  ASSERT_TRUE(member.nextSnapshot(&r));
  EXPECT_EQ(r.snapshot().clusters(0).endpoints(0).url(), "http://127.0.0.1:2");
  // Admin calls too, before the key is looked at.
  auto stub = edge::v1::Admin::NewStub(channel());
  KeyedContext ctx;
  edge::v1::ClientList list;
  grpc::Status st = stub->ListClients(&ctx, edge::v1::ListClientsRequest(), &list);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST(FlagsTest, ParsesAndRefuses) {
  auto parse = [](std::vector<const char*> args, Options* o, std::string* error) {
    args.insert(args.begin(), "eldric-controlplane");
    return parseCommandLine(static_cast<int>(args.size()), const_cast<char**>(args.data()), o,
                            error);
  };
  Options o;
  std::string error;
  ASSERT_TRUE(parse({"--config", "e.json", "--listen=0.0.0.0:9000", "--sync-interval-ms", "250",
                     "--data-dir", "/tmp/x", "--allow-plaintext"},
                    &o, &error))
      << error;
  EXPECT_EQ(o.listen, "0.0.0.0:9000");
  EXPECT_EQ(o.sync_interval_ms, 250);
  EXPECT_EQ(o.data_dir, "/tmp/x");

  struct Bad {
    std::vector<const char*> args;
    const char* fragment;
  };
  for (const Bad& b : std::vector<Bad>{
           {{}, "--config"},
           {{"--config", "e.json", "--listen", "nope"}, "HOST:PORT"},
           {{"--config", "e.json", "--listen", "1.2.3.4:70000"}, "HOST:PORT"},
           {{"--config", "e.json", "--sync-interval-ms", "5"}, "10 to 3600000"},
           {{"--config", "e.json", "--tls-cert", "c.pem"}, "--tls-key"},
           {{"--config", "e.json", "--client-ca", "ca.pem"}, "needs TLS"},
           {{"--config", "e.json", "--bogus"}, "unknown flag --bogus"},
           {{"--config", "e.json", "--listen", "0.0.0.0:9000"}, "--allow-plaintext"},
           // A name that starts like a loopback address is not one.
           {{"--config", "e.json", "--listen", "127.example.com:9000"}, "--allow-plaintext"},
           {{"--config"}, "needs a value"},
       }) {
    Options x;
    std::string err;
    EXPECT_FALSE(parse(b.args, &x, &err)) << b.fragment;
    EXPECT_NE(err.find(b.fragment), std::string::npos) << err;
  }
  for (const char* loopback : {"[::1]:9000", "localhost:9000", "127.1.2.3:9000"}) {
    Options l;
    EXPECT_TRUE(parse({"--config", "e.json", "--listen", loopback}, &l, &error)) << error;
  }
  Options h;
  EXPECT_TRUE(parse({"--help"}, &h, &error));
  EXPECT_TRUE(h.help);
}

// ---------------------------------------------------------------------------
// TLS and mTLS, with certificates made by the openssl CLI.

class TlsTest : public ControlPlaneTest {
 protected:
  void SetUp() override {
    ControlPlaneTest::SetUp();
    certs_ = dir_ + "/certs";
    ASSERT_EQ(mkdir(certs_.c_str(), 0700), 0);
    writeFile(certs_ + "/server.ext", "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
    writeFile(certs_ + "/client.ext", "extendedKeyUsage=clientAuth\n");
    const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    auto run = [&](const std::string& cmd) {
      std::string full = "cd '" + certs_ + "' && " + cmd + " >/dev/null 2>&1";
      ASSERT_EQ(std::system(full.c_str()), 0) << full;
    };
    for (const char* ca : {"ca", "other-ca"}) {
      run("openssl req -x509" + ec + " -keyout " + ca + ".key -out " + ca +
          ".pem -days 2 -subj /CN=" + ca);
    }
    run("openssl req" + ec + " -keyout server.key -out server.csr -subj /CN=localhost");
    run("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
        "-extfile server.ext -out server.pem");
    for (const char* who : {"client", "stranger"}) {
      std::string signer = std::string(who) == "client" ? "ca" : "other-ca";
      run("openssl req" + ec + " -keyout " + who + ".key -out " + who + ".csr -subj /CN=" + who);
      run("openssl x509 -req -in " + std::string(who) + ".csr -CA " + signer + ".pem -CAkey " +
          signer + ".key -CAcreateserial -days 2 -extfile client.ext -out " + who + ".pem");
    }
    options_.tls_cert = certs_ + "/server.pem";
    options_.tls_key = certs_ + "/server.key";
  }

  std::shared_ptr<grpc::Channel> tlsChannel(const std::string& who) {
    grpc::SslCredentialsOptions o;
    o.pem_root_certs = readFile(certs_ + "/ca.pem");
    if (!who.empty()) {
      o.pem_cert_chain = readFile(certs_ + "/" + who + ".pem");
      o.pem_private_key = readFile(certs_ + "/" + who + ".key");
    }
    return grpc::CreateChannel(target(), grpc::SslCredentials(o));
  }

  grpc::Status listClients(std::shared_ptr<grpc::Channel> ch) {
    auto stub = edge::v1::Admin::NewStub(ch);
    KeyedContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + 5s);
    edge::v1::ClientList out;
    return stub->ListClients(&ctx, edge::v1::ListClientsRequest(), &out);
  }

  std::string certs_;
};

TEST_F(TlsTest, ServerTls) {
  start();
  grpc::Status st = listClients(tlsChannel(""));
  EXPECT_TRUE(st.ok()) << st.error_message();
  // Plaintext to a TLS port fails.
  EXPECT_FALSE(listClients(channel()).ok());
  // The stream works over TLS.
  TestStream s(tlsChannel(""));
  ASSERT_TRUE(s.hello("edge-tls"));
  DiscoveryResponse r;
  ASSERT_TRUE(s.nextSnapshot(&r));
  EXPECT_EQ(r.version_info(), cp_->currentVersion());
}

TEST_F(TlsTest, MutualTlsRefusesClientsWithoutAValidCertificate) {
  options_.client_ca = certs_ + "/ca.pem";
  start();
  grpc::Status st = listClients(tlsChannel("client"));
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(listClients(tlsChannel("")).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(listClients(tlsChannel("stranger")).error_code(), grpc::StatusCode::UNAVAILABLE);

  // A member is the name in its certificate (CN=client): it cannot
  // subscribe as another member.
  TestStream impostor(tlsChannel("client"));
  impostor.hello("edge-other");
  DiscoveryResponse r;
  EXPECT_FALSE(impostor.nextSnapshot(&r, 2s));
  grpc::Status refused_id = impostor.finish();
  EXPECT_EQ(refused_id.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(refused_id.error_message().find("client certificate"), std::string::npos)
      << refused_id.error_message();

  TestStream ok(tlsChannel("client"));
  ASSERT_TRUE(ok.hello("client"));
  ASSERT_TRUE(ok.nextSnapshot(&r));

  TestStream refused(tlsChannel(""));
  refused.hello("edge-nocert");
  EXPECT_FALSE(refused.nextSnapshot(&r, 2s));
  EXPECT_FALSE(refused.finish().ok());
  auto status = [&] {
    auto stub = edge::v1::Admin::NewStub(tlsChannel("client"));
    KeyedContext ctx;
    edge::v1::FarmStatus out;
    EXPECT_TRUE(stub->GetFarmStatus(&ctx, edge::v1::FarmStatusRequest(), &out).ok());
    return out;
  }();
  EXPECT_NE(member(status, "client"), nullptr);
  EXPECT_EQ(member(status, "edge-other"), nullptr);
  EXPECT_EQ(member(status, "edge-nocert"), nullptr);
}

TEST_F(TlsTest, UnreadableCertificateIsAStartError) {
  options_.tls_key = certs_ + "/missing.key";
  ControlPlane bad(options_);
  std::string error;
  EXPECT_FALSE(bad.start(&error));
  EXPECT_NE(error.find("missing.key"), std::string::npos) << error;
}

}  // namespace
}  // namespace eldric::controlplane

namespace eldric::controlplane {
namespace {

TEST(FlagsTest, EdgeFlagsAndMemberToken) {
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  std::string token(64, 'c');
  ASSERT_EQ(write(fds[1], (token + "\n").data(), token.size() + 1),
            static_cast<ssize_t>(token.size() + 1));
  close(fds[1]);
  std::string fd = std::to_string(fds[0]);
  std::vector<const char*> args = {
      "eldric-controlplane", "--member-token-fd", fd.c_str(), "--parent-pid", "1234", "--",
      "--routers",           "http://r:1",        "--peers",  "a:1"};
  Options o;
  std::string error;
  ASSERT_TRUE(
      parseCommandLine(static_cast<int>(args.size()), const_cast<char**>(args.data()), &o, &error))
      << error;
  EXPECT_EQ(o.member_token, token);
  EXPECT_EQ(o.parent_pid, 1234);
  ASSERT_EQ(o.edge_args.size(), 4u);
  EXPECT_EQ(o.edge_args[3], "a:1");
  // The descriptor was closed after reading.
  EXPECT_EQ(fcntl(fds[0], F_GETFD), -1);
  // An empty descriptor gives no token.
  ASSERT_EQ(pipe(fds), 0);
  close(fds[1]);
  fd = std::to_string(fds[0]);
  std::vector<const char*> bad = {"eldric-controlplane", "--member-token-fd", fd.c_str()};
  Options o2;
  EXPECT_FALSE(parseCommandLine(3, const_cast<char**>(bad.data()), &o2, &error));
  EXPECT_NE(error.find("gave no token"), std::string::npos) << error;
}

}  // namespace
}  // namespace eldric::controlplane
