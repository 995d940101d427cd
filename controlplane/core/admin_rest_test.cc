// The plugins directory scan and the plugins / farm REST semantics over a
// real Store (the e2e suites test them through both binaries).
#include "controlplane/core/admin_rest.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>
#include <vector>

#include "controlplane/core/plugin_dir.h"
#include "gtest/gtest.h"

namespace eldric::controlplane {
namespace {

std::string freshDir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string templ = std::string(base && *base ? base : "/tmp") + "/admin_rest_test.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  EXPECT_NE(mkdtemp(buf.data()), nullptr);
  return std::string(buf.data());
}

void put(const std::string& dir, const std::string& id, const std::string& file,
         const std::string& text) {
  mkdir((dir + "/" + id).c_str(), 0700);
  std::ofstream(dir + "/" + id + "/" + file) << text;
}

class PluginsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = freshDir();
    plugins_ = root_ + "/plugins";
    mkdir(plugins_.c_str(), 0700);
    std::string error;
    store_ = Store::open(root_ + "/data", &error);
    ASSERT_TRUE(store_) << error;
    ctx_.store = store_.get();
  }
  RestReply call(const std::string& method, const std::string& path, const std::string& body = "",
                 bool* changed_out = nullptr) {
    bool changed = false;
    RestReply r = handleAdminRest(ctx_, method, path, body, &changed);
    if (changed_out) *changed_out = changed;
    return r;
  }
  std::string root_, plugins_;
  std::unique_ptr<Store> store_;
  AdminContext ctx_;
};

TEST_F(PluginsTest, ScanReadsManifestsAndSkipsBadOnesWithoutQuotingValves) {
  put(plugins_, "pii", "manifest.json",
      R"({"name":"PII","type":"filter","version":"1","entry":"main.py"})");
  put(plugins_, "pii", "valves.json", R"({"token":"s3cret-valve"})");
  put(plugins_, "bad-valves", "manifest.json", R"({"type":"tool"})");
  put(plugins_, "bad-valves", "valves.json", R"({"token":"s3cret-valve", )");
  put(plugins_, "no-type", "manifest.json", R"({"name":"x"})");
  put(plugins_, "readme-only", "README", "hi");
  std::vector<PluginRecord> found;
  std::vector<std::string> warnings;
  std::string error;
  ASSERT_TRUE(scanPluginDir(plugins_, &found, &warnings, &error)) << error;
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].id, "pii");
  EXPECT_EQ(found[0].name, "PII");
  EXPECT_EQ(found[0].type, "filter");
  EXPECT_FALSE(found[0].enabled);
  ASSERT_EQ(warnings.size(), 2u);
  for (const auto& w : warnings) EXPECT_EQ(w.find("s3cret"), std::string::npos) << w;

  EXPECT_FALSE(scanPluginDir(root_ + "/missing", &found, &warnings, &error));
  EXPECT_NE(error.find("plugins_dir"), std::string::npos) << error;
}

TEST_F(PluginsTest, RescanKeepsWhatAdminsSet) {
  put(plugins_, "pii", "manifest.json", R"({"type":"filter"})");
  put(plugins_, "pii", "valves.json", R"({"a":1})");
  std::vector<std::string> warnings;
  size_t n = 0;
  std::string error;
  ASSERT_TRUE(syncPluginDir(plugins_, *store_, &warnings, &n, &error)) << error;
  EXPECT_EQ(n, 1u);
  ASSERT_EQ(call("POST", "/api/v1/plugins/pii/enable").status, 200);
  ASSERT_EQ(call("PUT", "/api/v1/plugins/pii/valves", R"({"a":2})").status, 200);
  put(plugins_, "pii", "manifest.json", R"({"type":"pipe","name":"Renamed"})");
  ASSERT_TRUE(syncPluginDir(plugins_, *store_, &warnings, &n, &error)) << error;
  auto p = store_->getPlugin("pii");
  ASSERT_TRUE(p);
  EXPECT_TRUE(p->enabled);
  EXPECT_EQ(p->valves_json, R"({"a":2})");
  EXPECT_EQ(p->type, "pipe");
  EXPECT_EQ(p->name, "Renamed");
}

TEST_F(PluginsTest, RestStatusesAndCodes) {
  PluginRecord rec;
  rec.id = "pii";
  rec.type = "filter";
  std::string error;
  ASSERT_TRUE(store_->upsertPlugin(rec, &error)) << error;

  RestReply r = call("GET", "/api/v1/plugins");
  EXPECT_EQ(r.status, 200);
  EXPECT_NE(r.body.find(R"("id":"pii")"), std::string::npos) << r.body;
  EXPECT_EQ(r.body.find("valves"), std::string::npos) << r.body;

  bool changed = false;
  r = call("POST", "/api/v1/plugins/pii/enable", "", &changed);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(changed);
  r = call("POST", "/api/v1/plugins/pii/enable", "", &changed);
  EXPECT_EQ(r.status, 200);
  EXPECT_FALSE(changed) << "no change, no rebuild";

  r = call("PUT", "/api/v1/plugins/pii/valves", R"({"k":"secret-1"})", &changed);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, R"({"k":"secret-1"})");
  EXPECT_TRUE(changed);
  r = call("PUT", "/api/v1/plugins/pii/valves", R"({"k":"secret-2",)");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.error_code, "invalid_json");
  EXPECT_EQ(r.body.find("secret-2"), std::string::npos) << r.body;
  r = call("PUT", "/api/v1/plugins/pii/valves", "[1]");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.error_code, "invalid_valves");
  r = call("PUT", "/api/v1/plugins/pii/valves", "{\"k\":\"" + std::string(70000, 'x') + "\"}");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.error_code, "invalid_valves");
  EXPECT_EQ(call("GET", "/api/v1/plugins/pii/valves").body, R"({"k":"secret-1"})");

  EXPECT_EQ(call("GET", "/api/v1/plugins/nope").error_code, "plugin_not_found");
  EXPECT_EQ(call("PUT", "/api/v1/plugins/nope/valves", "{}").status, 404);
  EXPECT_EQ(call("POST", "/api/v1/plugins/pii/valves", "{}").status, 405);
  EXPECT_EQ(call("GET", "/api/v1/plugins/pii/enable").status, 405);
  EXPECT_EQ(call("POST", "/api/v1/plugins/pii/uninstall").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/pluginsx").status, 404);
  EXPECT_EQ(call("GET", "/api/v1/elsewhere").status, 404);
}

TEST_F(PluginsTest, FarmView) {
  ctx_.mode = "farm";
  ctx_.farm_status = [](edge::v1::FarmStatus* out) {
    out->set_current_version("cp-2-abc");
    auto* m = out->add_members();
    m->set_node_id("edge1");
    m->add_listen_addresses("10.0.0.1:443");
    m->set_connected(true);
    m->set_acked_version("cp-1-xyz");
    m->set_nacked_version("cp-2-abc");
    m->set_nack_error("bad certificate");
    m->set_last_report_unix_ms(1234);
  };
  RestReply r = call("GET", "/api/v1/farm");
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(
      r.body,
      R"({"object":"farm","mode":"farm","current_version":"cp-2-abc","members":[{"node_id":"edge1",)"
      R"("listen_addresses":["10.0.0.1:443"],"build_version":null,"connected":true,)"
      R"("acked_version":"cp-1-xyz","in_sync":false,"nacked_version":"cp-2-abc",)"
      R"("nack_error":"bad certificate","last_report_unix_ms":1234,"connected_since_unix_ms":null,)"
      R"("upstreams":[]}]})");
  EXPECT_EQ(call("POST", "/api/v1/farm").status, 405);
  EXPECT_EQ(call("GET", "/api/v1/farm/x").status, 404);
}

}  // namespace
}  // namespace eldric::controlplane
