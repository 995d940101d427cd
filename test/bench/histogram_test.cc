#include "test/bench/histogram.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace loadgen {
namespace {

TEST(HistogramTest, ExactBelowTwoMicroseconds) {
  for (uint64_t v = 0; v < 2048; v++)
    EXPECT_EQ(Histogram::HighestEquivalent(Histogram::Index(v)), v);
}

TEST(HistogramTest, BucketsAreContiguousAndWithinOnePerMille) {
  EXPECT_EQ(Histogram::Index(2048), Histogram::Index(2047) + 1);
  for (uint64_t v = 2048; v < (1ull << 24); v += 7) {
    size_t i = Histogram::Index(v);
    uint64_t hi = Histogram::HighestEquivalent(i);
    EXPECT_GE(hi, v);
    EXPECT_LE(double(hi - v), double(v) / 1000.0);
    EXPECT_EQ(Histogram::Index(hi), i);
    EXPECT_EQ(Histogram::Index(hi + 1), i + 1);
  }
}

TEST(HistogramTest, PercentilesOfAUniformSpread) {
  Histogram h;
  for (uint64_t v = 1; v <= 100000; v++) h.Record(v * 1000);  // 1 µs .. 100 ms
  EXPECT_EQ(h.total(), 100000u);
  EXPECT_NEAR(double(h.Percentile(50)), 50e6, 50e6 / 1000);
  EXPECT_NEAR(double(h.Percentile(99)), 99e6, 99e6 / 1000);
  EXPECT_NEAR(double(h.Percentile(99.9)), 99.9e6, 99.9e6 / 1000);
  EXPECT_EQ(h.Percentile(100), 100000000u);
  EXPECT_EQ(h.max(), 100000000u);
  EXPECT_EQ(h.min(), 1000u);
  EXPECT_NEAR(h.mean(), 50.0005e6, 1);
}

TEST(HistogramTest, MatchesSortedSamples) {
  std::mt19937_64 rng(7);
  std::lognormal_distribution<double> d(11.5, 1.0);  // ~100 µs median, long tail
  std::vector<uint64_t> xs;
  Histogram h;
  for (int i = 0; i < 20000; i++) {
    uint64_t v = uint64_t(d(rng));
    xs.push_back(v);
    h.Record(v);
  }
  std::sort(xs.begin(), xs.end());
  for (double p : {50.0, 90.0, 99.0, 99.9}) {
    uint64_t exact = xs[size_t(std::ceil(p / 100 * xs.size())) - 1];
    uint64_t got = h.Percentile(p);
    EXPECT_GE(got, exact) << p;
    EXPECT_LE(double(got - exact), double(exact) / 1000.0 + 1) << p;
  }
}

TEST(HistogramTest, EmptyAndHugeValues) {
  Histogram h;
  EXPECT_EQ(h.Percentile(99), 0u);
  EXPECT_EQ(h.max(), 0u);
  h.Record(UINT64_MAX);  // clamped, not out of range
  EXPECT_EQ(h.max(), Histogram::kMaxValue);
  EXPECT_EQ(h.Percentile(50), Histogram::kMaxValue);
}

}  // namespace
}  // namespace loadgen
