// A log-linear latency histogram in the manner of HdrHistogram, for
// test/bench/loadgen: fixed memory, O(1) record, percentiles by a scan.
#ifndef ELDRIC_TEST_BENCH_HISTOGRAM_H_
#define ELDRIC_TEST_BENCH_HISTOGRAM_H_

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace loadgen {

// HDR-style log-linear histogram of nanoseconds: exact below 2048 ns, then
// 1024 linear sub-buckets per power of two (relative error < 0.1%).
class Histogram {
 public:
  static constexpr int kSubBits = 11;
  static constexpr uint64_t kSub = 1ull << kSubBits;       // 2048
  static constexpr uint64_t kHalf = kSub / 2;              // 1024
  static constexpr uint64_t kMaxValue = (1ull << 40) - 1;  // ~18 minutes

  Histogram() : counts_(Index(kMaxValue) + 1, 0) {}

  void Record(uint64_t v) {
    v = std::min(v, kMaxValue);
    counts_[Index(v)]++;
    total_++;
    sum_ += double(v);
    max_ = std::max(max_, v);
    min_ = std::min(min_, v);
  }
  uint64_t total() const { return total_; }
  uint64_t max() const { return total_ ? max_ : 0; }
  uint64_t min() const { return total_ ? min_ : 0; }
  double mean() const { return total_ ? sum_ / double(total_) : 0; }
  // The highest value equivalent to the bucket holding the p-th percentile
  // sample (as HdrHistogram reports it), capped at the exact maximum.
  uint64_t Percentile(double p) const {
    if (!total_) return 0;
    uint64_t want = uint64_t(std::ceil(p / 100.0 * double(total_)));
    want = std::max<uint64_t>(1, std::min(want, total_));
    uint64_t seen = 0;
    for (size_t i = 0; i < counts_.size(); i++) {
      seen += counts_[i];
      if (seen >= want) return std::min(HighestEquivalent(i), max_);
    }
    return max_;
  }

  // The bucket of a value, and the highest value sharing that bucket.
  static size_t Index(uint64_t v) {
    if (v < kSub) return size_t(v);
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (kSubBits - 1);  // v >> shift is in [1024, 2047]
    return size_t(kSub + uint64_t(shift - 1) * kHalf + ((v >> shift) - kHalf));
  }
  static uint64_t HighestEquivalent(size_t i) {
    if (i < kSub) return i;
    uint64_t k = i - kSub;
    int shift = int(k / kHalf) + 1;
    uint64_t sub = k % kHalf + kHalf;
    return ((sub + 1) << shift) - 1;
  }

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0, max_ = 0, min_ = UINT64_MAX;
  double sum_ = 0;
};

}  // namespace loadgen

#endif  // ELDRIC_TEST_BENCH_HISTOGRAM_H_
