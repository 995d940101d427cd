// Web chat session tokens: one spelling per token, one identity per login,
// and the identity a logout revokes however the token is spelled.

#include "filters/auth/session.h"

#include <gtest/gtest.h>

#include <string>

namespace eldric::filters::auth {
namespace {

const std::string kKey(32, 'k');
const std::string kHash(32, 'h');
constexpr int64_t kNow = 1'800'000'000;

TEST(SessionTest, EachLoginIsItsOwnSession) {
  std::string a = signSession(kKey, kHash, kNow + 600);
  std::string b = signSession(kKey, kHash, kNow + 600);
  EXPECT_NE(a, b);
  std::string hash, da, db;
  int64_t exp = 0;
  ASSERT_TRUE(verifySession(a, {kKey}, kNow, &hash, &exp, &da));
  EXPECT_EQ(hash, kHash);
  EXPECT_EQ(exp, kNow + 600);
  ASSERT_TRUE(verifySession(b, {kKey}, kNow, &hash, &exp, &db));
  EXPECT_EQ(da.size(), 32u);
  EXPECT_NE(da, db);
}

TEST(SessionTest, OnlyTheCanonicalSpellingVerifies) {
  std::string token = signSession(kKey, kHash, kNow + 600);
  std::string hash;
  int64_t exp = 0;
  ASSERT_TRUE(verifySession(token, {kKey}, kNow, &hash, &exp));
  // A dangling character (six bits that make no byte) after either part.
  size_t dot = token.find('.');
  EXPECT_FALSE(verifySession(token + "A", {kKey}, kNow, &hash, &exp));
  EXPECT_FALSE(
      verifySession(token.substr(0, dot) + "A" + token.substr(dot), {kKey}, kNow, &hash, &exp));
  // The same bytes with the unused low bits of the last character set:
  // the signature (32 bytes) ends in a character with two unused bits.
  std::string other = token;
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t v = alphabet.find(other.back());
  ASSERT_NE(v, std::string::npos);
  ASSERT_EQ(v & 3, 0u);
  other.back() = alphabet[v | 1];
  EXPECT_FALSE(verifySession(other, {kKey}, kNow, &hash, &exp));
}

TEST(SessionTest, ExpiredOrForeignTokensDoNotVerify) {
  std::string token = signSession(kKey, kHash, kNow + 600);
  std::string hash;
  int64_t exp = 0;
  EXPECT_FALSE(verifySession(token, {kKey}, kNow + 600, &hash, &exp));
  EXPECT_FALSE(verifySession(token, {std::string(32, 'x')}, kNow, &hash, &exp));
  // Any of the accepted keys verifies (a rotation keeps sessions).
  EXPECT_TRUE(verifySession(token, {std::string(32, 'x'), kKey}, kNow, &hash, &exp));
}

TEST(SessionTest, ALogoutIsKnownByItsDigestAndListedUntilItExpires) {
  std::string token = signSession(kKey, kHash, kNow + 600);
  std::string hash, digest;
  int64_t exp = 0;
  ASSERT_TRUE(verifySession(token, {kKey}, kNow, &hash, &exp, &digest));
  EXPECT_FALSE(sessionRevoked(digest));
  revokeSession(digest, exp, kNow);
  EXPECT_TRUE(sessionRevoked(digest));
  auto none = [](std::string_view) { return false; };
  auto mine = [&digest](std::string_view d) { return d == digest; };
  bool listed = false;
  for (const auto& l : localLogouts(kNow, 1000, none))
    listed |= l.digest == digest && l.expires_at == kNow + 600;
  EXPECT_TRUE(listed);
  for (const auto& l : localLogouts(kNow, 1000, mine))
    EXPECT_NE(l.digest, digest);  // the farm has it
  for (const auto& l : localLogouts(kNow + 600, 1000, none))
    EXPECT_NE(l.digest, digest);  // expired
}

}  // namespace
}  // namespace eldric::filters::auth
