// De-framing gRPC messages out of arbitrary chunks (as DATA frames cut
// them), grpc-message decoding and grpc-timeout encoding.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dataplane/grpc/framing.h"
#include "dataplane/grpc/status.h"

namespace eldric::grpc {
namespace {

std::string frame(const std::string& m) { return framePrefix(static_cast<uint32_t>(m.size())) + m; }

std::vector<std::string> feedInChunks(Deframer& d, const std::string& wire, size_t chunk,
                                      Deframer::Result* result) {
  std::vector<std::string> out;
  *result = Deframer::Result::Ok;
  for (size_t i = 0; i < wire.size() && *result == Deframer::Result::Ok; i += chunk) {
    size_t n = std::min(chunk, wire.size() - i);
    *result = d.feed(reinterpret_cast<const uint8_t*>(wire.data() + i), n, [&](std::string&& m) {
      out.push_back(std::move(m));
      return true;
    });
  }
  return out;
}

TEST(DeframerTest, AnyChunkingGivesTheSameMessages) {
  std::vector<std::string> messages = {"a", "", std::string(70000, 'b'), "hello", ""};
  std::string wire;
  for (auto& m : messages) wire += frame(m);
  for (size_t chunk : {size_t{1}, size_t{2}, size_t{5}, size_t{7}, size_t{16384}, wire.size()}) {
    Deframer d(1 << 20);
    Deframer::Result r;
    EXPECT_EQ(feedInChunks(d, wire, chunk, &r), messages) << "chunk " << chunk;
    EXPECT_EQ(r, Deframer::Result::Ok);
    EXPECT_FALSE(d.midMessage());
  }
}

TEST(DeframerTest, PartialMessageIsPending) {
  Deframer d(100);
  std::string wire = frame("hello");
  Deframer::Result r;
  EXPECT_TRUE(feedInChunks(d, wire.substr(0, 7), 100, &r).empty());
  EXPECT_TRUE(d.midMessage());
  Deframer d2(100);
  EXPECT_TRUE(feedInChunks(d2, wire.substr(0, 3), 100, &r).empty());
  EXPECT_TRUE(d2.midMessage());
}

TEST(DeframerTest, RefusesOversizedMessageFromItsPrefix) {
  Deframer d(10);
  Deframer::Result r;
  // Only the prefix arrives: refused before any of the body is buffered.
  auto got = feedInChunks(d, frame("0123456789") + framePrefix(11), 100, &r);
  EXPECT_EQ(got.size(), 1u);
  EXPECT_EQ(r, Deframer::Result::TooLarge);
  EXPECT_EQ(d.declaredLength(), 11u);
}

TEST(DeframerTest, RefusesCompressedMessages) {
  Deframer d(100);
  std::string wire = frame("x");
  wire[0] = 1;
  Deframer::Result r;
  EXPECT_TRUE(feedInChunks(d, wire, 100, &r).empty());
  EXPECT_EQ(r, Deframer::Result::Compressed);
}

TEST(DeframerTest, StopsWhenTheCallbackSaysSo) {
  Deframer d(100);
  std::string wire = frame("a") + frame("b");
  int seen = 0;
  d.feed(reinterpret_cast<const uint8_t*>(wire.data()), wire.size(), [&](std::string&&) {
    ++seen;
    return false;
  });
  EXPECT_EQ(seen, 1);
}

TEST(StatusTest, PercentDecode) {
  EXPECT_EQ(percentDecode("a%20b%25c"), "a b%c");
  EXPECT_EQ(percentDecode("%C3%BC"), "\xC3\xBC");
  EXPECT_EQ(percentDecode("100%"), "100%");
  EXPECT_EQ(percentDecode("%zz%4"), "%zz%4");
  EXPECT_EQ(percentDecode("%0A"), "\n");
}

TEST(StatusTest, TimeoutFitsEightDigits) {
  EXPECT_EQ(encodeTimeout(250), "250m");
  EXPECT_EQ(encodeTimeout(99999999), "99999999m");
  EXPECT_EQ(encodeTimeout(100000000), "100000S");
  EXPECT_EQ(encodeTimeout(UINT64_MAX / 2).size(), 9u);  // 8 digits + unit
}

TEST(StatusTest, HttpAndH2Mappings) {
  EXPECT_EQ(statusFromHttp(400), kInternal);
  EXPECT_EQ(statusFromHttp(401), kUnauthenticated);
  EXPECT_EQ(statusFromHttp(403), kPermissionDenied);
  EXPECT_EQ(statusFromHttp(404), kUnimplemented);
  EXPECT_EQ(statusFromHttp(503), kUnavailable);
  EXPECT_EQ(statusFromHttp(500), kUnknown);
  EXPECT_EQ(statusFromH2Error(0x7), kUnavailable);
  EXPECT_EQ(statusFromH2Error(0x8), kCancelled);
  EXPECT_EQ(statusFromH2Error(0xb), kResourceExhausted);
  EXPECT_EQ(statusFromH2Error(0x0), kInternal);
}

}  // namespace
}  // namespace eldric::grpc
