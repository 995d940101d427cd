#include "dataplane/common/buffer.h"

#include <gtest/gtest.h>

namespace eldric {
namespace {

TEST(BufferTest, AddFillsOneSlabAndCopiesOut) {
  Buffer b;
  b.add("hello ");
  b.add("world");
  EXPECT_EQ(b.length(), 11u);
  EXPECT_EQ(b.sliceCount(), 1u);
  EXPECT_EQ(b.toString(), "hello world");
}

TEST(BufferTest, SharedSlabIsNotAppendedInPlace) {
  Buffer a;
  a.add("abc");
  Buffer shared;
  a.copyRefsTo(shared, 3);
  a.add("def");  // must not write into the slab `shared` also sees
  EXPECT_EQ(a.toString(), "abcdef");
  EXPECT_EQ(shared.toString(), "abc");
  EXPECT_EQ(a.sliceCount(), 2u);
}

TEST(BufferTest, DrainAcrossSlices) {
  Buffer b;
  b.add(std::string(Slab::kDefaultSize, 'x'));
  b.add("tail");
  EXPECT_EQ(b.sliceCount(), 2u);
  b.drain(Slab::kDefaultSize + 2);
  EXPECT_EQ(b.toString(), "il");
  b.drain(100);
  EXPECT_TRUE(b.empty());
}

TEST(BufferTest, MovePartAndLinearize) {
  Buffer src;
  src.add("0123456789");
  Buffer dst;
  dst.move(src, 4);
  EXPECT_EQ(dst.toString(), "0123");
  EXPECT_EQ(src.toString(), "456789");
  Buffer multi;
  multi.add("ab");
  Buffer other;
  other.add("cd");
  multi.move(other);
  EXPECT_EQ(multi.sliceCount(), 2u);
  EXPECT_EQ(multi.linearize(4), "abcd");
  EXPECT_EQ(multi.sliceCount(), 1u);
}

TEST(BufferTest, LargeAddGetsOneExactSlab) {
  Buffer b;
  std::string big(100000, 'z');
  b.add(big);
  EXPECT_EQ(b.sliceCount(), 1u);
  EXPECT_EQ(b.toString(), big);
}

}  // namespace
}  // namespace eldric
