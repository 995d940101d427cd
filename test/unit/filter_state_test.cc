#include <memory>
#include <set>
#include <string>

#include "dataplane/common/random.h"
#include "dataplane/http/filter.h"
#include "gtest/gtest.h"

namespace eldric::http {
namespace {

struct Counter {
  int n = 0;
};
inline constexpr FilterStateKey<Counter> kFirst{"test.first"};
inline constexpr FilterStateKey<Counter> kSecond{"test.second"};
inline constexpr FilterStateKey<std::string> kName{"test.name"};

TEST(FilterStateTest, KeysAreDistinctByAddressAndTyped) {
  FilterState fs;
  EXPECT_EQ(fs.get(kFirst), nullptr);
  auto c = std::make_shared<Counter>();
  Counter* raw = c.get();
  fs.set(kFirst, std::move(c));
  fs.set(kName, std::make_shared<std::string>("alice"));
  EXPECT_EQ(fs.get(kFirst), raw);
  EXPECT_EQ(fs.get(kSecond), nullptr);  // same type, other key
  ASSERT_NE(fs.get(kName), nullptr);
  EXPECT_EQ(*fs.get(kName), "alice");
  // More slots than are kept inline.
  fs.set(kSecond, std::make_shared<Counter>(Counter{7}));
  EXPECT_EQ(fs.get(kSecond)->n, 7);
  EXPECT_EQ(fs.get(kFirst), raw);
}

TEST(FilterStateTest, SetReplacesAndKeepsTheValueAlive) {
  std::weak_ptr<Counter> first;
  {
    FilterState fs;
    auto a = std::make_shared<Counter>(Counter{1});
    first = a;
    fs.set(kFirst, std::move(a));
    EXPECT_FALSE(first.expired());  // the state holds the only reference
    fs.set(kFirst, std::make_shared<Counter>(Counter{2}));
    EXPECT_TRUE(first.expired());
    EXPECT_EQ(fs.get(kFirst)->n, 2);
  }
}

TEST(RandomTest, UuidIsVersion4Variant1) {
  std::set<std::string> seen;
  for (int i = 0; i < 2000; ++i) {
    std::string u = random::uuid();
    ASSERT_EQ(u.size(), 36u);
    for (size_t j = 0; j < u.size(); ++j) {
      if (j == 8 || j == 13 || j == 18 || j == 23) {
        ASSERT_EQ(u[j], '-') << u;
      } else {
        ASSERT_TRUE((u[j] >= '0' && u[j] <= '9') || (u[j] >= 'a' && u[j] <= 'f')) << u;
      }
    }
    EXPECT_EQ(u[14], '4') << u;
    EXPECT_NE(std::string("89ab").find(u[19]), std::string::npos) << u;
    seen.insert(u);
  }
  EXPECT_EQ(seen.size(), 2000u);
}

}  // namespace
}  // namespace eldric::http
