#include "dataplane/config/loader.h"

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
  // Accepted-but-not-enforced parts are named, not silent.
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
  ASSERT_TRUE(loadFromText(R"({"http_port": 80, "router_urls":["http://a:1"]})", "f", cli, &r, &error)) << error;
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

TEST(LoaderTest, RequireApiKeyIsRefusedNotIgnored) {
  CommandLine cli = noTls();
  cli.routers = "http://a:1";
  cli.api_key = "sk-test";
  std::string e = loadError("", cli);
  EXPECT_NE(e.find("not available"), std::string::npos) << e;
  EXPECT_EQ(e.find("sk-test"), std::string::npos) << "the key must never be echoed";
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
}

}  // namespace
}  // namespace eldric::config
