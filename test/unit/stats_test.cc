#include "dataplane/stats/stats.h"

#include <string>

#include "gtest/gtest.h"

namespace eldric::stats {
namespace {

constexpr double kBounds[] = {0.001, 0.25};

TEST(PrometheusHistogramTest, CumulativeBucketsSumAndCount) {
  std::string out;
  uint64_t counts[] = {2, 0, 3};
  appendPrometheusHistogram(out, "x_seconds", "plugin=\"p\",hook=\"stream\"", kBounds, counts, 2,
                            1.5);
  EXPECT_EQ(out,
            "x_seconds_bucket{plugin=\"p\",hook=\"stream\",le=\"0.001\"} 2\n"
            "x_seconds_bucket{plugin=\"p\",hook=\"stream\",le=\"0.25\"} 2\n"
            "x_seconds_bucket{plugin=\"p\",hook=\"stream\",le=\"+Inf\"} 5\n"
            "x_seconds_sum{plugin=\"p\",hook=\"stream\"} 1.500000\n"
            "x_seconds_count{plugin=\"p\",hook=\"stream\"} 5\n");
}

TEST(PrometheusHistogramTest, NoLabelsAndNothingCounted) {
  std::string out;
  uint64_t none[] = {0, 0, 0};
  appendPrometheusHistogram(out, "y", "", kBounds, none, 2, 0);
  EXPECT_EQ(out, "");
  uint64_t one[] = {0, 0, 1};
  appendPrometheusHistogram(out, "y", "", kBounds, one, 2, 400);
  EXPECT_EQ(out,
            "y_bucket{le=\"0.001\"} 0\ny_bucket{le=\"0.25\"} 0\ny_bucket{le=\"+Inf\"} 1\n"
            "y_sum 400.000000\ny_count 1\n");
}

}  // namespace
}  // namespace eldric::stats
