#include "common/config/loader.h"

#include <gtest/gtest.h>

#include "dataplane/config/runtime_config.h"

namespace eldric::config {
namespace {

CommandLine noTls() {
  CommandLine c;
  c.no_tls = true;
  return c;
}

std::string loadError(const std::string& text, CommandLine cli = noTls()) {
  LoadResult r;
  std::string error;
  EXPECT_FALSE(loadFromText(text, "edge.json", cli, &r, &error));
  return error;
}

TEST(LoaderTest, SeedConfigWithCommentsIsAccepted) {
  // The seed's complete file, minus auth and TLS that need more (see the
  // dedicated tests): comments as the seed writes them.
  const std::string text = R"({
    "mode": "single", // "single" or "farm"
    "https_port": 443,
    "http_port": 80,
    "bind_address": "0.0.0.0",
    "router_urls": [ "http://127.0.0.1:8881", "http://127.0.0.2:8881" ],
    "controller_url": "http://127.0.0.1:8880",
    "rate_limits": { "global_rpm": 10000, "per_ip_rpm": 100, "per_key_rpm": 1000, "window_seconds": 60 },
    "farm": { "peers": ["edge2:443"], "sync_interval_ms": 5000 }
  })";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(text, "edge.json", noTls(), &r, &error)) << error;
  const auto& s = r.snapshot;
  ASSERT_EQ(s.listeners_size(), 1);
  EXPECT_EQ(s.listeners(0).address().port(), 80u);
  ASSERT_GE(s.clusters_size(), 2);
  EXPECT_EQ(s.clusters(0).name(), "routers");
  EXPECT_EQ(s.clusters(0).endpoints_size(), 2);
  EXPECT_EQ(s.clusters(1).name(), "controller");
  // Farm peers do nothing in single mode: said, not silent.
  EXPECT_FALSE(r.warnings.empty());
}

TEST(LoaderTest, UnknownFieldIsNamedWithItsPath) {
  EXPECT_NE(loadError(R"({"router_urls":["http://a:1"],"limits":{"max_header_bytez":1}})")
                .find("limits.max_header_bytez"),
            std::string::npos);
  EXPECT_NE(loadError(R"({"https_portx":1})").find("https_portx"), std::string::npos);
}

TEST(LoaderTest, WrongTypeIsNamed) {
  std::string e = loadError(R"({"router_urls":["http://a:1"],"https_port":"443"})");
  EXPECT_NE(e.find("\"https_port\" must be an integer"), std::string::npos) << e;
  e = loadError(R"({"router_urls":"http://a:1"})");
  EXPECT_NE(e.find("router_urls"), std::string::npos) << e;
}

TEST(LoaderTest, InvalidJsonNamesTheLine) {
  std::string e = loadError("{\n\"http_port\": 80,\n,}");
  EXPECT_NE(e.find("line 3"), std::string::npos) << e;
}

TEST(LoaderTest, FlagOverridesFile) {
  CommandLine cli = noTls();
  cli.http_port = "9090";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(
      loadFromText(R"({"http_port": 80, "router_urls":["http://a:1"]})", "f", cli, &r, &error))
      << error;
  EXPECT_EQ(r.snapshot.listeners(0).address().port(), 9090u);
}

TEST(LoaderTest, RouterUrlsAreValidated) {
  CommandLine cli = noTls();
  cli.routers = "https://router:8881";
  EXPECT_NE(loadError("", cli).find("must start with http://"), std::string::npos);
  cli.routers = "http://a:1,http://a:1";
  EXPECT_NE(loadError("", cli).find("listed twice"), std::string::npos);
  cli.routers = "";
  EXPECT_NE(loadError("", cli).find("no routers"), std::string::npos);
}

TEST(LoaderTest, TlsNeedsCertAndReadableFiles) {
  CommandLine cli;
  cli.routers = "http://a:1";
  EXPECT_NE(loadError("", cli).find("--cert"), std::string::npos);
  cli.cert = "/nonexistent/cert.pem";
  cli.key = "/nonexistent/key.pem";
  EXPECT_NE(loadError("", cli).find("/nonexistent/cert.pem"), std::string::npos);
}

TEST(LoaderTest, ApiKeysExistOnlyAsHashes) {
  CommandLine cli = noTls();
  cli.routers = "http://a:1";
  cli.api_key = "sk-operator-secret-1234";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(R"({"auth":{"api_keys":{"sk-openwebui-key":"openwebui-client",
      "sk-mobile-ios-key":{"client":"ios","rpm":5,"allowed_models":["llama3.2:3b"]}}}})",
                           "edge.json", cli, &r, &error))
      << error;
  const auto& auth = r.snapshot.auth();
  EXPECT_TRUE(auth.require_api_key());  // --api-key turns it on
  ASSERT_EQ(auth.api_keys_size(), 3);
  std::string wire = r.snapshot.SerializeAsString();
  for (const char* key : {"sk-operator-secret-1234", "sk-openwebui-key", "sk-mobile-ios-key"}) {
    EXPECT_EQ(wire.find(key), std::string::npos) << "a key in clear in the snapshot";
  }
  for (const auto& k : auth.api_keys()) {
    EXPECT_EQ(k.sha256().size(), 32u);
    EXPECT_LE(k.prefix().size(), 10u);
  }
  EXPECT_EQ(auth.api_keys(1).client_name(), "ios");
  EXPECT_EQ(auth.api_keys(1).requests_per_minute(), 5u);
}

TEST(LoaderTest, BadKeyEntriesAreNamedWithoutTheKey) {
  std::string e =
      loadError(R"({"router_urls":["http://a:1"],"auth":{"api_keys":{"sk-short":""}}})");
  EXPECT_NE(e.find("auth.api_keys[0]"), std::string::npos) << e;
  EXPECT_EQ(e.find("sk-short"), std::string::npos) << e;
  e = loadError(
      R"({"router_urls":["http://a:1"],"auth":{"api_keys":{"sk-long-enough":{"client":"x","scopes":["root"]}}}})");
  EXPECT_NE(e.find("unknown scope"), std::string::npos) << e;
}

TEST(LoaderTest, SeedRateLimitDefaults) {
  CommandLine cli = noTls();
  cli.routers = "http://a:1";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText("", "flags", cli, &r, &error)) << error;
  const auto& rl = r.snapshot.rate_limits();
  EXPECT_EQ(rl.global_requests(), 10000u);
  EXPECT_EQ(rl.per_ip_requests(), 100u);
  EXPECT_EQ(rl.per_key_requests(), 1000u);
  EXPECT_EQ(rl.window().seconds(), 60);
  EXPECT_NE(
      loadError(
          R"({"router_urls":["http://a:1"],"rate_limits":{"trusted_proxies":["10.0.0.0/99"]}})")
          .find("trusted_proxies"),
      std::string::npos);
}

TEST(LoaderTest, RoutesCompileAndMatch) {
  CommandLine cli = noTls();
  cli.routers = "http://127.0.0.1:8881";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText("", "flags", cli, &r, &error)) << error;
  upstream::HostRegistry hosts;
  auto cfg = compile(r.snapshot, hosts, &error);
  ASSERT_TRUE(cfg) << error;
  bool wrong = false;
  const CompiledRoute* route = cfg->match("/v1/chat/completions", "POST", &wrong);
  ASSERT_NE(route, nullptr);
  EXPECT_FALSE(wrong);
  EXPECT_EQ(route->name, "chat_completions");
  route = cfg->match("/v1/chat/completions", "GET", &wrong);
  EXPECT_TRUE(wrong);
  EXPECT_EQ(cfg->match("/nope", "GET", &wrong), nullptr);
  route = cfg->match("/v1/models/llama", "GET", &wrong);
  ASSERT_NE(route, nullptr);
  EXPECT_EQ(route->name, "models");
  // Hosts survive a recompile (health and counters carry over a reload).
  auto again = compile(r.snapshot, hosts, &error);
  EXPECT_EQ(again->cluster("routers")->hosts[0].get(), cfg->cluster("routers")->hosts[0].get());
  EXPECT_EQ(cfg->cluster("routers")->dns_refresh_ms, 5000u);  // the default
}

// A snapshot from a control plane is not held to the file's bounds by the
// loader: compile refuses a window the rate limiter cannot allocate (found
// by test/fuzz/snapshot_fuzz: 4e9 seconds asked for 32 GB).
TEST(LoaderTest, CompileRefusesARateLimitWindowBeyondAnHour) {
  CommandLine cli = noTls();
  cli.routers = "http://127.0.0.1:8881";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText("", "flags", cli, &r, &error)) << error;
  upstream::HostRegistry hosts;
  r.snapshot.mutable_rate_limits()->mutable_window()->set_seconds(3600);
  ASSERT_TRUE(compile(r.snapshot, hosts, &error)) << error;
  for (int64_t bad : {int64_t{3601}, int64_t{4000000000}, int64_t{-1}}) {
    r.snapshot.mutable_rate_limits()->mutable_window()->set_seconds(bad);
    error.clear();
    EXPECT_FALSE(compile(r.snapshot, hosts, &error)) << bad;
    EXPECT_NE(error.find("rate_limits.window"), std::string::npos) << error;
  }
}

TEST(LoaderTest, DnsRefreshIsAnUpstreamSettingWithBounds) {
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(
      R"({"router_urls": ["http://localhost:8881"], "upstream": {"dns_refresh_ms": 250}})",
      "edge.json", noTls(), &r, &error))
      << error;
  EXPECT_EQ(r.snapshot.clusters(0).dns_refresh_interval().nanos(), 250000000);
  // Names go through the resolver compile is given.
  upstream::HostRegistry hosts;
  std::vector<std::string> asked;
  auto cfg = compile(
      r.snapshot, hosts, &error,
      [&](const std::string& host, uint16_t port, upstream::AddressList* out, std::string* why) {
        asked.push_back(host);
        return upstream::resolveNow("10.9.8.7", port, out, why);
      });
  ASSERT_TRUE(cfg) << error;
  EXPECT_EQ(cfg->cluster("routers")->dns_refresh_ms, 250u);
  EXPECT_EQ(asked, std::vector<std::string>{"localhost"});
  EXPECT_NE(loadError(R"({"upstream": {"dns_refresh_ms": 10}})").find("upstream.dns_refresh_ms"),
            std::string::npos);
}

TEST(LoaderTest, ToolBoundsHaveDefaultsAndKnobs) {
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(R"({"router_urls": ["http://localhost:8881"]})", "edge.json", noTls(),
                           &r, &error))
      << error;
  EXPECT_EQ(r.snapshot.plugins().max_tool_result_bytes(), 1u << 20);
  EXPECT_EQ(r.snapshot.plugins().max_tool_answer_bytes(), 8u << 20);
  ASSERT_TRUE(loadFromText(
      R"({"router_urls": ["http://localhost:8881"],
          "plugins": {"max_tool_result_kb": 4, "max_tool_answer_kb": 64}})",
      "edge.json", noTls(), &r, &error))
      << error;
  EXPECT_EQ(r.snapshot.plugins().max_tool_result_bytes(), 4096u);
  EXPECT_EQ(r.snapshot.plugins().max_tool_answer_bytes(), 65536u);
  EXPECT_NE(
      loadError(R"({"plugins": {"max_tool_result_kb": 0}})").find("plugins.max_tool_result_kb"),
      std::string::npos);
  EXPECT_NE(
      loadError(R"({"plugins": {"max_tool_answer_kb": 63}})").find("plugins.max_tool_answer_kb"),
      std::string::npos);
}

TEST(LoaderTest, HandshakeBudgetDefaultsToAMillisecondAndZeroTurnsItOff) {
  upstream::HostRegistry hosts;
  for (auto [text, want_ns] :
       {std::pair<const char*, uint64_t>{R"({"router_urls": ["http://127.0.0.1:8881"]})", 1000000},
        {R"({"router_urls": ["http://127.0.0.1:8881"], "limits": {"handshake_budget_us": 250}})",
         250000},
        {R"({"router_urls": ["http://127.0.0.1:8881"], "limits": {"handshake_budget_us": 0}})",
         0}}) {
    LoadResult r;
    std::string error;
    ASSERT_TRUE(loadFromText(text, "edge.json", noTls(), &r, &error)) << error;
    auto cfg = compile(r.snapshot, hosts, &error);
    ASSERT_TRUE(cfg) << error;
    EXPECT_EQ(cfg->handshake_budget_ns, want_ns) << text;
  }
  // A snapshot from before the field (unset): the default.
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(R"({"router_urls": ["http://127.0.0.1:8881"]})", "edge.json", noTls(),
                           &r, &error));
  r.snapshot.mutable_limits()->clear_handshake_budget();
  auto cfg = compile(r.snapshot, hosts, &error);
  ASSERT_TRUE(cfg) << error;
  EXPECT_EQ(cfg->handshake_budget_ns, 1000000u);
  EXPECT_NE(loadError(R"({"limits": {"handshake_budget_us": 2000000}})")
                .find("limits.handshake_budget_us"),
            std::string::npos);
}

}  // namespace
}  // namespace eldric::config

namespace eldric::config {
namespace {

TEST(LoaderTest, FarmModeNeedsMembersOrAControlPlane) {
  CommandLine cli = noTls();
  cli.mode = "farm";
  std::string e = loadError("", cli);
  EXPECT_NE(e.find("--control-plane"), std::string::npos) << e;
  EXPECT_NE(e.find("--peers"), std::string::npos) << e;
  cli.peers = "edge2:443,edge3:443";
  cli.control_plane = "127.0.0.1:8870,cp2:8870";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText("", "flags", cli, &r, &error))
      << error;  // routers come from the control plane
  EXPECT_TRUE(r.farm.enabled);
  EXPECT_FALSE(r.farm.supervised);
  ASSERT_EQ(r.farm.control_planes.size(), 2u);
  EXPECT_EQ(r.farm.offline_policy, "local_share");
  ASSERT_FALSE(r.warnings.empty());  // --peers is ignored, and it says so
  cli.primary = true;
  LoadResult r2;
  ASSERT_TRUE(loadFromText("", "flags", cli, &r2, &error)) << error;
  EXPECT_EQ(r2.warnings.size(), r.warnings.size() + 1);  // and --primary too
  cli.primary = false;
  cli.control_plane = "no-port";
  EXPECT_NE(loadError("", cli).find("host:port"), std::string::npos);
}

// The seed's form: --peers alone, TLS from the Edge's own files.
TEST(LoaderTest, SeedFarmOfPeersIsSupervised) {
  CommandLine cli;
  cli.mode = "farm";
  cli.peers = "edge2:443, edge3:443";
  cli.cert = "/nonexistent/cert.pem";
  cli.key = "/nonexistent/key.pem";
  // The files are read (and missing): the farm checks come first.
  cli.peers = "edge2";
  EXPECT_NE(loadError("", cli).find("farm peer \"edge2\" must be host:port"), std::string::npos);
  cli.peers = "edge2:443,edge3:443";
  cli.primary = true;
  cli.farm_port = "0";
  EXPECT_NE(loadError("", cli).find("--farm-port"), std::string::npos);
  cli.farm_port = "9870";
  std::string e = loadError("", cli);
  EXPECT_NE(e.find("tls.cert_file"), std::string::npos) << e;  // got past the farm checks

  // Without TLS: on loopback only, and with a secret file.
  CommandLine plain = noTls();
  plain.mode = "farm";
  plain.peers = "10.0.0.2:8080";
  e = loadError(R"({"farm":{"secret_file":"/s"}})", plain);
  EXPECT_NE(e.find("plaintext"), std::string::npos) << e;
  plain.peers = "127.0.0.1:8081,[::1]:8082,localhost:8083";
  e = loadError("", plain);
  EXPECT_NE(e.find("farm.secret_file"), std::string::npos) << e;
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(R"({"http_port":8080,"farm":{"secret_file":"/s","port":9999,
                               "primary":"127.0.0.1:8081"}})",
                           "edge.json", plain, &r, &error))
      << error;
  EXPECT_TRUE(r.farm.supervised);
  EXPECT_EQ(r.farm.member_port, 8080);
  EXPECT_EQ(r.farm.port, 9999);
  EXPECT_EQ(r.farm.primary, "127.0.0.1:8081");
  ASSERT_EQ(r.farm.peers.size(), 3u);
  EXPECT_TRUE(r.farm.tls_cert_file.empty());
  e = loadError(R"({"farm":{"secret_file":"/s","primary":7}})", plain);
  EXPECT_NE(e.find("farm.primary"), std::string::npos) << e;
  // ACME has no certificate file for the farm port.
  CommandLine acme;
  acme.mode = "farm";
  acme.peers = "edge2:443";
  e = loadError(R"({"tls":{"mode":"acme","acme":{"domains":["a.example"]}}})", acme);
  EXPECT_NE(e.find("--control-plane"), std::string::npos) << e;
}

TEST(LoaderTest, CommandLineArgsGiveTheSameSettingsWithoutTheKey) {
  CommandLine cli;
  cli.mode = "farm";
  cli.peers = "a:1,b:2";
  cli.primary = true;
  cli.no_tls = true;
  cli.api_key = "sk-secret-operator-key";
  cli.farm_port = "9870";
  auto args = commandLineArgs(cli);
  std::string joined;
  for (const auto& a : args) joined += a + " ";
  EXPECT_EQ(joined, "--mode farm --peers a:1,b:2 --farm-port 9870 --no-tls --primary ");
  std::vector<char*> argv = {const_cast<char*>("eldric-edge")};
  for (auto& a : args) argv.push_back(a.data());
  CommandLine back;
  std::string error;
  ASSERT_TRUE(parseCommandLine(static_cast<int>(argv.size()), argv.data(), &back, &error)) << error;
  EXPECT_EQ(back.peers, cli.peers);
  EXPECT_TRUE(back.primary);
  EXPECT_EQ(back.farm_port, "9870");
}

TEST(LoaderTest, FarmRelayUrlIsAUrlWithoutAPath) {
  CommandLine cli = noTls();
  cli.mode = "farm";
  cli.control_plane = "127.0.0.1:8870";
  LoadResult r;
  std::string error;
  ASSERT_TRUE(
      loadFromText(R"({"farm": {"relay_url": "https://10.0.0.5:8443", "relay_ca": "/x.pem"}})",
                   "edge.json", cli, &r, &error))
      << error;
  EXPECT_EQ(r.farm.relay_url, "https://10.0.0.5:8443");
  EXPECT_EQ(r.farm.relay_ca_file, "/x.pem");
  for (std::string bad : {"ftp://10.0.0.5", "https://10.0.0.5/api", "https://:443"}) {
    std::string e = loadError("{\"farm\": {\"relay_url\": \"" + bad + "\"}}", cli);
    EXPECT_NE(e.find("farm.relay_url"), std::string::npos) << bad << ": " << e;
  }
}

std::string acmeError(const std::string& acme) {
  return loadError(R"({"router_urls":["http://a:1"],"tls":{"mode":"acme","acme":)" + acme + "}}",
                   CommandLine{});
}

TEST(LoaderTest, AcmeNeedsNoCertificateFilesAndFlagsTheListener) {
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(
      R"({"router_urls":["http://a:1"],"http_port":8080,
          "tls":{"mode":"acme","acme":{"domains":["edge.example.com"],"email":"ops@example.com"}}})",
      "f", CommandLine{}, &r, &error))
      << error;
  EXPECT_TRUE(r.acme.enabled);
  EXPECT_EQ(r.acme.domains, std::vector<std::string>{"edge.example.com"});
  EXPECT_EQ(r.acme.directory_url, "https://acme-v02.api.letsencrypt.org/directory");
  EXPECT_EQ(r.acme.key_type, "ecdsa-p256");
  EXPECT_EQ(r.acme.renew_before_days, 30);
  EXPECT_EQ(r.acme.http_port, 8080);
  const edge::v1::Listener* https = nullptr;
  for (const auto& l : r.snapshot.listeners())
    if (l.name() == "https") https = &l;
  ASSERT_NE(https, nullptr);
  EXPECT_TRUE(https->tls().acme());
  EXPECT_EQ(https->tls().certificates_size(), 0);
  // HSTS is on by default with ACME (a year), and can be turned off.
  EXPECT_EQ(https->tls().hsts_max_age().seconds(), 31536000);
  LoadResult off;
  ASSERT_TRUE(loadFromText(
      R"({"router_urls":["http://a:1"],
          "tls":{"mode":"acme","hsts_max_age_s":0,"acme":{"domains":["edge.example.com"]}}})",
      "f", CommandLine{}, &off, &error))
      << error;
  for (const auto& l : off.snapshot.listeners()) {
    if (l.name() == "https") {
      EXPECT_FALSE(l.tls().has_hsts_max_age());
    }
  }
  // Manual mode keeps ACME off.
  EXPECT_FALSE(LoadResult{}.acme.enabled);
}

TEST(LoaderTest, SessionTicketRotationIsInTheSnapshot) {
  LoadResult r;
  std::string error;
  // The default (an hour) without TLS certificates to read: ACME mode.
  ASSERT_TRUE(loadFromText(
      R"({"router_urls":["http://a:1"],"tls":{"mode":"acme","acme":{"domains":["a.example"]}}})",
      "f", CommandLine{}, &r, &error))
      << error;
  EXPECT_TRUE(r.snapshot.session_tickets().has_rotation());
  EXPECT_EQ(r.snapshot.session_tickets().rotation().seconds(), 3600);
  EXPECT_EQ(r.snapshot.session_tickets().keys_size(), 0);  // the orderer's to fill
  EXPECT_NE(loadError(R"({"router_urls":["http://a:1"],"tls":{"session_ticket_rotation_s":-1}})")
                .find("session_ticket_rotation_s"),
            std::string::npos);
  EXPECT_NE(
      loadError(R"({"router_urls":["http://a:1"],"tls":{"session_ticket_rotation_s":604801}})")
          .find("session_ticket_rotation_s"),
      std::string::npos);
}

TEST(LoaderTest, CertificateClientsAndClientCa) {
  LoadResult r;
  std::string error;
  ASSERT_TRUE(loadFromText(
      R"({"router_urls":["http://a:1"],"tls":{"mode":"acme","acme":{"domains":["a.example"]},
          "client_ca":"/etc/ssl/certs/ca-certificates.crt","client_certificate":"required"},
          "auth":{"certificate_clients":{"billing-service":{"client":"billing","rpm":5}}}})",
      "f", CommandLine{}, &r, &error))
      << error;
  const edge::v1::ApiKey* entry = nullptr;
  for (const auto& k : r.snapshot.auth().api_keys())
    if (k.certificate_subject() == "billing-service") entry = &k;
  ASSERT_NE(entry, nullptr);
  EXPECT_TRUE(entry->sha256().empty());
  EXPECT_EQ(entry->client_name(), "billing");
  EXPECT_EQ(entry->requests_per_minute(), 5u);
  for (const auto& l : r.snapshot.listeners()) {
    if (l.name() != "https") continue;
    EXPECT_TRUE(l.tls().require_client_certificate());
    EXPECT_NE(l.tls().client_ca_pem().find("BEGIN CERTIFICATE"), std::string::npos);
  }
  // Clients by certificate with no CA to verify them: said.
  LoadResult w;
  ASSERT_TRUE(loadFromText(R"({"router_urls":["http://a:1"],
          "auth":{"certificate_clients":{"svc":"svc"}}})",
                           "f", noTls(), &w, &error))
      << error;
  EXPECT_FALSE(w.warnings.empty());
  EXPECT_NE(loadError(R"({"router_urls":["http://a:1"],"auth":{"certificate_clients":{"":"x"}}})")
                .find("certificate subject"),
            std::string::npos);
  EXPECT_NE(
      loadError(R"({"router_urls":["http://a:1"],"tls":{"mode":"acme","client_ca":"/nonexistent",
                         "acme":{"domains":["a.example"]}}})",
                CommandLine{})
          .find("tls.client_ca"),
      std::string::npos);
  EXPECT_NE(loadError(R"({"router_urls":["http://a:1"],"tls":{"client_certificate":"always"}})")
                .find("client_certificate"),
            std::string::npos);
}

TEST(LoaderTest, AcmeSettingsAreChecked) {
  EXPECT_NE(acmeError(R"({})").find("needs tls.acme.domains"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["*.example.com"]})").find("no wildcard"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["Edge.example.com"]})").find("lowercase"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["10.0.0.1"]})").find("no IP address"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a..b"]})").find("not a DNS name"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["-a.b"]})").find("not a DNS name"), std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a.b","a.b"]})").find("listed twice"), std::string::npos);
  EXPECT_NE(
      acmeError(R"({"domains":["a.b"],"directory_url":"http://ca/dir"})").find("must be https://"),
      std::string::npos);
  EXPECT_NE(
      acmeError(R"({"domains":["a.b"],"email":"not-an-address"})").find("not an email address"),
      std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a.b"],"key_type":"rsa-1024"})").find("key_type"),
            std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a.b"],"renew_before_days":90})").find("renew_before_days"),
            std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a.b"],"challenge":"dns-01"})").find("challenge"),
            std::string::npos);
  EXPECT_NE(
      acmeError(R"({"domains":["a.b"],"retry_initial_s":60,"retry_max_s":10})").find("retry_max_s"),
      std::string::npos);
  EXPECT_NE(
      acmeError(R"({"domains":["a.b"],"ca_file":"/nonexistent/ca.pem"})").find("tls.acme.ca_file"),
      std::string::npos);
  EXPECT_NE(acmeError(R"({"domains":["a.b"],"bogus":1})").find("tls.acme.bogus"),
            std::string::npos);
  std::string many = R"({"domains":[)";
  for (int i = 0; i < 101; ++i)
    many += (i ? "," : "") + std::string("\"n") + std::to_string(i) + ".example\"";
  EXPECT_NE(acmeError(many + "]}").find("at most 100"), std::string::npos);
}

}  // namespace
}  // namespace eldric::config
