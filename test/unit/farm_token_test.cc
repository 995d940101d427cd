#include "dataplane/tls/farm_token.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

namespace eldric::tls {
namespace {

class FarmTokenTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/eldric-farm-token-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)system(("rm -rf " + dir_).c_str()); }
  std::string path(const char* name) { return dir_ + "/" + name; }
  void run(const std::string& cmd) { ASSERT_EQ(system((cmd + " 2>/dev/null").c_str()), 0) << cmd; }
  std::string token(const std::string& secret, const std::string& key) {
    std::string t, error;
    EXPECT_TRUE(farmToken(secret, key, &t, &error)) << error;
    return t;
  }
  std::string dir_;
};

// The same key stored two ways gives the same token; another key another.
TEST_F(FarmTokenTest, FromTheKeyWhateverItsEncoding) {
  run("openssl genrsa -traditional -out " + path("a.pem") + " 2048");
  run("openssl pkcs8 -topk8 -nocrypt -in " + path("a.pem") + " -out " + path("a8.pem"));
  run("openssl ecparam -name prime256v1 -genkey -noout -out " + path("b.pem"));
  std::string a = token("", path("a.pem"));
  EXPECT_EQ(a.size(), 64u);
  EXPECT_EQ(a, token("", path("a8.pem")));
  EXPECT_NE(a, token("", path("b.pem")));
  std::string t, error;
  EXPECT_FALSE(farmToken("", path("missing.pem"), &t, &error));
  EXPECT_NE(error.find("tls.key_file"), std::string::npos) << error;
}

TEST_F(FarmTokenTest, FromASecretFile) {
  std::ofstream(path("s")) << "a-farm-secret-of-enough-length\n";
  std::ofstream(path("s2")) << "a-farm-secret-of-enough-length  \r\nsecond line ignored\n";
  EXPECT_EQ(token(path("s"), ""), token(path("s2"), ""));
  std::ofstream(path("short")) << "short\n";
  std::string t, error;
  EXPECT_FALSE(farmToken(path("short"), "", &t, &error));
  EXPECT_NE(error.find("16 characters"), std::string::npos) << error;
}

}  // namespace
}  // namespace eldric::tls
