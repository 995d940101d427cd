// A Snapshot applied as a data plane applies one (Server::build): compiled
// (listeners with their TLS material, clusters and endpoints, routes),
// then the rate limiter's state and config, the auth filter's key table
// and the filter chain built from them. The snapshot comes from protobuf
// bytes (what a control plane sends), or, when the input starts with '{',
// from a config file through the loader (what a standalone Edge reads).
// Names never reach DNS: an endpoint that is not an IP literal resolves
// to 127.0.0.1.

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "common/address.h"
#include "common/config/loader.h"
#include "dataplane/config/runtime_config.h"
#include "filters/auth/auth_filter.h"
#include "filters/auth/session_filter.h"
#include "filters/ratelimit/limiter.h"
#include "filters/ratelimit/ratelimit_filter.h"
#include "filters/usage/usage_filter.h"
#include "test/fuzz/fuzz_util.h"
#include "test/unit/fake_stream.h"

namespace eldric::fuzz {
namespace {

// Never asks DNS: a literal as is, any name as ::1 then 127.0.0.1 (two
// addresses, as a stock Debian's localhost).
bool fakeResolve(const std::string& host, uint16_t port, upstream::AddressList* out,
                 std::string* error) {
  std::string bare = host;
  if (bare.size() > 2 && bare.front() == '[' && bare.back() == ']')
    bare = bare.substr(1, bare.size() - 2);
  sockaddr_storage a, b;
  if (network::parseIpAddress(bare, port, &a)) {
    *out = {a};
    return true;
  }
  if (host.empty()) {
    *error = "empty host";
    return false;
  }
  network::parseIpAddress("::1", port, &a);
  network::parseIpAddress("127.0.0.1", port, &b);
  *out = {a, b};
  return true;
}

}  // namespace
}  // namespace eldric::fuzz

static int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  edge::v1::Snapshot snap;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (!text.empty() && text[0] == '{') {
    for (std::string_view bad : {"/dev/", "/proc/", "/sys/"}) {
      if (text.find(bad) != std::string_view::npos) return 0;
    }
    if (fuzz::skipKnownCrashes() && fuzz::jsonNesting(text) > 200) return 0;
    config::CommandLine cli;
    cli.no_tls = true;
    config::LoadResult loaded;
    std::string error;
    if (!config::loadFromText(std::string(text), "fuzz.json", cli, &loaded, &error)) return 0;
    snap = std::move(loaded.snapshot);
  } else if (!snap.ParseFromArray(data, static_cast<int>(size))) {
    return 0;
  }

  if (fuzz::skipKnownCrashes()) {
    // Reported, not fixed yet: a scope outside 0..31 shifts 1u past its
    // width in AuthConfig (corpus/snapshot_fuzz/crash-scope-shift).
    for (const auto& k : snap.auth().api_keys()) {
      for (int s : k.scopes()) {
        if (s < 0 || s > 31) return 0;
      }
    }
  }

  upstream::HostRegistry hosts;
  std::string error;
  config::RuntimeConfigSharedPtr cfg = config::compile(snap, hosts, &error, fuzz::fakeResolve);
  if (!cfg) {
    if (error.empty()) abort();  // a refusal always says why
    return 0;
  }
  // As Server::build goes on with a compiled config.
  uint32_t window = static_cast<uint32_t>(snap.rate_limits().window().seconds());
  auto rl = filters::ratelimit::compileConfig(snap.rate_limits());
  auto state = std::make_shared<filters::ratelimit::State>(window, rl->max_ip_entries);
  auto auth = std::make_shared<const filters::auth::AuthConfig>(snap.auth());
  std::vector<http::FilterFactory> factories = {
      filters::ratelimit::makeIpFactory(rl, state),
      filters::auth::makeFactory(auth, rl, state),
      filters::ratelimit::makeFactory(rl, state),
      filters::usage::makeFactory(rl, state),
      filters::auth::makeSessionFactory(auth, rl, state),
  };
  // The chain a stream gets (the filters bind to it, as on a worker).
  test::FakeStream stream;
  for (const auto& f : factories) stream.addFilters(f);
  if (stream.decoderFilterCount() < 3) abort();  // auth, ratelimit and usage always
  // Every route can be looked up.
  for (const auto& r : cfg->routes) {
    bool wrong = false;
    (void)cfg->match(r.path, "POST", &wrong);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // JSON is parsed recursively: on a small stack, nesting overflows it at
  // a depth the fuzzer reaches (see runOnSmallStack).
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
