// config::compile() builds each route's chain from the FilterRegistry: the
// shared HTTP filters in order, then the route's handler.

#include "dataplane/config/filter_registry.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/config/loader.h"
#include "dataplane/config/runtime_config.h"

namespace eldric::config {
namespace {

class NamedFilter : public http::StreamDecoderFilter {
 public:
  explicit NamedFilter(std::string name) : name(std::move(name)) {}
  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks&) override {}
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders&, bool) override {
    return http::FilterHeadersStatus::Continue;
  }
  http::FilterDataStatus decodeData(Buffer&, bool) override {
    return http::FilterDataStatus::Continue;
  }
  std::string name;
};

// Runs a route's factories and returns the names of the filters they add.
class RecordingChain : public http::FilterChainBuilder {
 public:
  const http::FilterState& workerLocals() override { return locals; }
  void addDecoderFilter(http::StreamDecoderFilterPtr filter) override {
    names.push_back(static_cast<NamedFilter&>(*filter).name);
  }
  void addEncoderFilter(http::StreamEncoderFilterPtr) override {}
  void addStreamFilter(std::shared_ptr<http::StreamDecoderFilter> decoder,
                       std::shared_ptr<http::StreamEncoderFilter>) override {
    names.push_back(static_cast<NamedFilter&>(*decoder).name);
  }
  http::FilterState locals;
  std::vector<std::string> names;
};

std::vector<std::string> chainOf(const CompiledRoute& route) {
  RecordingChain chain;
  for (const auto& factory : route.filter_chain) factory(chain);
  return chain.names;
}

// A registry whose entries add a NamedFilter and count how often they are
// asked for a factory.
struct CountingRegistry {
  FilterRegistry registry;
  std::map<std::string, int> made;
  explicit CountingRegistry(std::vector<std::string_view> names) {
    for (std::string_view n : names) {
      std::string name(n);
      registry.add(
          name, [this, name](const FilterFactoryContext&, http::FilterFactory* out, std::string*) {
            ++made[name];
            *out = [name](http::FilterChainBuilder& chain) {
              chain.addDecoderFilter(std::make_unique<NamedFilter>(name));
            };
            return true;
          });
    }
  }
};

std::vector<std::string_view> allNames() {
  std::vector<std::string_view> names(std::begin(kHttpFilters), std::end(kHttpFilters));
  for (std::string_view h : {kRouterFilter, kAdminApiFilter, kWebchatFilter, kUsageApiFilter,
                             kSessionFilter, kTunnelFilter, kBuiltinFilter}) {
    names.push_back(h);
  }
  return names;
}

edge::v1::Snapshot seedSnapshot() {
  CommandLine cli;
  cli.no_tls = true;
  cli.routers = "http://127.0.0.1:8881";
  LoadResult r;
  std::string error;
  EXPECT_TRUE(loadFromText("", "flags", cli, &r, &error)) << error;
  return r.snapshot;
}

TEST(FilterRegistryTest, EachRouteRunsTheHttpFiltersThenItsHandler) {
  CountingRegistry filters(allNames());
  upstream::HostRegistry hosts;
  std::string error;
  auto cfg = compile(seedSnapshot(), hosts, &error, upstream::resolveNow, &filters.registry);
  ASSERT_TRUE(cfg) << error;
  ASSERT_FALSE(cfg->routes.empty());
  for (const auto& route : cfg->routes) {
    std::vector<std::string> want(std::begin(kHttpFilters), std::end(kHttpFilters));
    want.emplace_back(terminalFilterName(route));
    EXPECT_EQ(chainOf(route), want) << route.name;
    EXPECT_EQ(route.handler, terminalFilterName(route)) << route.name;
    EXPECT_EQ(route.to_upstream, route.cluster != nullptr) << route.name;
  }
  bool wrong = false;
  EXPECT_EQ(cfg->match("/v1/chat/completions", "POST", &wrong)->handler, kRouterFilter);
  EXPECT_EQ(cfg->match("/health", "GET", &wrong)->handler, kBuiltinFilter);
  // A shared filter's factory is made once per config, a handler's once per
  // route.
  for (std::string_view n : kHttpFilters) EXPECT_EQ(filters.made[std::string(n)], 1) << n;
  int handlers = 0;
  for (std::string_view h : {kRouterFilter, kAdminApiFilter, kWebchatFilter, kUsageApiFilter,
                             kSessionFilter, kTunnelFilter, kBuiltinFilter}) {
    handlers += filters.made[std::string(h)];
  }
  EXPECT_EQ(handlers, static_cast<int>(cfg->routes.size()));
}

TEST(FilterRegistryTest, AMissingEntryRefusesTheConfigAndNamesIt) {
  std::vector<std::string_view> names;
  for (std::string_view n : allNames()) {
    if (n != "auth") names.push_back(n);
  }
  CountingRegistry filters(names);
  upstream::HostRegistry hosts;
  std::string error;
  EXPECT_FALSE(compile(seedSnapshot(), hosts, &error, upstream::resolveNow, &filters.registry));
  EXPECT_NE(error.find("\"auth\""), std::string::npos) << error;

  std::vector<std::string_view> no_router;
  for (std::string_view n : allNames()) {
    if (n != kRouterFilter) no_router.push_back(n);
  }
  CountingRegistry without(no_router);
  error.clear();
  EXPECT_FALSE(compile(seedSnapshot(), hosts, &error, upstream::resolveNow, &without.registry));
  EXPECT_NE(error.find("\"router\""), std::string::npos) << error;
}

TEST(FilterRegistryTest, AMakersErrorRefusesTheConfig) {
  CountingRegistry filters(allNames());
  filters.registry.add("usage",
                       [](const FilterFactoryContext&, http::FilterFactory*, std::string* error) {
                         *error = "usage: bad settings";
                         return false;
                       });
  upstream::HostRegistry hosts;
  std::string error;
  EXPECT_FALSE(compile(seedSnapshot(), hosts, &error, upstream::resolveNow, &filters.registry));
  EXPECT_EQ(error, "usage: bad settings");
}

TEST(FilterRegistryTest, WithoutARegistryRoutesHaveNoChain) {
  upstream::HostRegistry hosts;
  std::string error;
  auto cfg = compile(seedSnapshot(), hosts, &error);
  ASSERT_TRUE(cfg) << error;
  for (const auto& route : cfg->routes) EXPECT_TRUE(route.filter_chain.empty()) << route.name;
}

TEST(FilterRegistryTest, ARedirectWithoutItsOwnPortPointsAtTheHttpsListener) {
  edge::v1::Snapshot snap = seedSnapshot();
  snap.clear_listeners();
  auto* https = snap.add_listeners();
  https->set_name("https");
  https->mutable_address()->set_address("127.0.0.1");
  https->mutable_address()->set_port(8443);
  auto* http = snap.add_listeners();
  http->set_name("http");
  http->mutable_address()->set_address("127.0.0.1");
  http->mutable_address()->set_port(8080);
  http->set_role(edge::v1::Listener::ROLE_REDIRECT_TO_HTTPS);
  upstream::HostRegistry hosts;
  std::string error;
  auto cfg = compile(snap, hosts, &error);
  ASSERT_TRUE(cfg) << error;
  EXPECT_TRUE(cfg->listener("http")->redirect_to_https);
  EXPECT_EQ(cfg->listener("http")->redirect_port, 8443u);
  EXPECT_FALSE(cfg->listener("https")->redirect_to_https);
  http->set_redirect_port(443);
  cfg = compile(snap, hosts, &error);
  ASSERT_TRUE(cfg) << error;
  EXPECT_EQ(cfg->listener("http")->redirect_port, 443u);
}

}  // namespace
}  // namespace eldric::config
