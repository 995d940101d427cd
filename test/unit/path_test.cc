#include "dataplane/http/path.h"

#include <gtest/gtest.h>

namespace eldric::http {
namespace {

std::string norm(std::string_view in) {
  std::string out;
  const char* reason = nullptr;
  switch (normalizePath(in, &out, &reason)) {
    case PathResult::Unchanged:
      return std::string(in);
    case PathResult::Normalized:
      return out;
    case PathResult::Invalid:
      return std::string("invalid: ") + reason;
  }
  return "?";
}

bool invalid(std::string_view in) { return norm(in).rfind("invalid:", 0) == 0; }

TEST(PathTest, NormalPathsAreLeftAlone) {
  std::string out;
  const char* reason = nullptr;
  EXPECT_EQ(normalizePath("/v1/chat/completions", &out, &reason), PathResult::Unchanged);
  EXPECT_EQ(normalizePath("/v1/models?x=1&y=%2F", &out, &reason), PathResult::Unchanged);
  EXPECT_EQ(norm("/"), "/");
  EXPECT_EQ(norm("/v1/chat/completions/"), "/v1/chat/completions/");
}

TEST(PathTest, DotSegmentsAndDoubleSlashesAreRemoved) {
  EXPECT_EQ(norm("/v1/../api/v1/clients"), "/api/v1/clients");
  EXPECT_EQ(norm("/v1/./models"), "/v1/models");
  EXPECT_EQ(norm("//v1//models"), "/v1/models");
  EXPECT_EQ(norm("/v1/models/."), "/v1/models/");
  EXPECT_EQ(norm("/a/b/.."), "/a/");
  EXPECT_EQ(norm("/a/.."), "/");
  EXPECT_EQ(norm("/v1/../v1/models?q=/../x"), "/v1/models?q=/../x");
}

TEST(PathTest, PercentEncodedUnreservedIsDecoded) {
  EXPECT_EQ(norm("/v1/%2e%2e/api/v1/clients"), "/api/v1/clients");
  EXPECT_EQ(norm("/v1/%2E%2e/api"), "/api");
  EXPECT_EQ(norm("/%76%31/models"), "/v1/models");
  EXPECT_EQ(norm("/v1/a%20b"), "/v1/a%20b");
  EXPECT_EQ(norm("/v1/a%3ab"), "/v1/a%3Ab");
}

TEST(PathTest, WhatCannotBeNormalizedIsRefused) {
  EXPECT_TRUE(invalid("/.."));
  EXPECT_TRUE(invalid("/v1/../../etc/passwd"));
  EXPECT_TRUE(invalid("/v1/%2e%2e/%2e%2e/x"));
  EXPECT_TRUE(invalid("/v1%2fmodels"));
  EXPECT_TRUE(invalid("/v1%5Cmodels"));
  EXPECT_TRUE(invalid("/v1/%00"));
  EXPECT_TRUE(invalid("/v1\\models"));
  EXPECT_TRUE(invalid("/v1/models#frag"));
  EXPECT_TRUE(invalid("/v1/\xc3\xa9"));
  EXPECT_TRUE(invalid("/v1/\x01"));
  EXPECT_TRUE(invalid("/v1/%zz"));
  EXPECT_TRUE(invalid("/v1/%4"));
  EXPECT_TRUE(invalid("v1/models"));
  EXPECT_TRUE(invalid("/v1/models?\x7f"));
}

TEST(PathTest, HostValidation) {
  EXPECT_TRUE(validHost("example.com"));
  EXPECT_TRUE(validHost("example.com:8443"));
  EXPECT_TRUE(validHost("10.0.0.1"));
  EXPECT_TRUE(validHost("[::1]:443"));
  EXPECT_TRUE(validHost("[2001:db8::1]"));
  EXPECT_FALSE(validHost(""));
  EXPECT_FALSE(validHost("evil.com/x"));
  EXPECT_FALSE(validHost("evil.com@x"));
  EXPECT_FALSE(validHost("a b"));
  EXPECT_FALSE(validHost("x:"));
  EXPECT_FALSE(validHost("x:12a"));
  EXPECT_FALSE(validHost("[::1"));
  EXPECT_FALSE(validHost("[::1]x"));
  EXPECT_FALSE(validHost("host\r\nx"));
}

}  // namespace
}  // namespace eldric::http
