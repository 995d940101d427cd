#pragma once

// Metrics. Each worker thread owns a WorkerStats and is its only writer
// (relaxed load+store, no locked instruction); the /metrics handler sums
// the shards when scraped. Label sets are bounded: route names come from
// the route table, status codes from a fixed range; never a key or an IP.

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace eldric::stats {

class Counter {
 public:
  void inc(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  void dec(uint64_t n = 1) {
    v_.store(v_.load(std::memory_order_relaxed) - n, std::memory_order_relaxed);
  }
  uint64_t value() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

// Latency buckets in seconds (upper bounds), Prometheus style.
constexpr double kLatencyBuckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                      0.5,    1,     2.5,    5,     10,   30,    60,   120, 300};
constexpr size_t kLatencyBucketCount = sizeof(kLatencyBuckets) / sizeof(kLatencyBuckets[0]);
// An event loop iteration's busy time: tens of microseconds when all is
// well; a millisecond and up is a stall every connection on that loop feels.
constexpr double kLoopBuckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                   0.01,    0.025,  0.05,    0.1,    0.25,  1};
constexpr size_t kLoopBucketCount = sizeof(kLoopBuckets) / sizeof(kLoopBuckets[0]);

template <const double* Bounds, size_t N>
struct BasicHistogram {
  static constexpr const double* kBounds = Bounds;
  static constexpr size_t kBucketCount = N;
  Counter buckets[N + 1];  // last is +Inf
  Counter sum_us;
  Counter count;
  void record(uint64_t us) {
    double s = static_cast<double>(us) / 1e6;
    size_t i = 0;
    while (i < N && s > Bounds[i]) ++i;
    buckets[i].inc();
    sum_us.inc(us);
    count.inc();
  }
};
using Histogram = BasicHistogram<kLatencyBuckets, kLatencyBucketCount>;
using LoopHistogram = BasicHistogram<kLoopBuckets, kLoopBucketCount>;

constexpr size_t kMaxRoutes = 64;
constexpr int kMinStatus = 100;
constexpr int kMaxStatus = 599;

struct WorkerStats {
  Counter requests[kMaxRoutes][kMaxStatus - kMinStatus + 1];
  Histogram latency[kMaxRoutes];
  Counter downstream_cx_total;
  Counter downstream_cx_active;
  Counter downstream_cx_rejected;  // over max connections
  Counter downstream_bytes_rx;
  Counter downstream_bytes_tx;
  Counter tls_handshakes;
  Counter tls_handshake_errors;
  Counter codec_errors;  // malformed requests refused
  Counter header_timeouts;
  Counter body_timeouts;
  Counter upstream_rq_total;
  Counter upstream_rq_retry;
  Counter upstream_cx_total;
  Counter upstream_cx_connect_fail;
  Counter upstream_rq_timeout;
  Counter upstream_rq_reset;    // upstream died mid-response
  Counter downstream_rq_reset;  // client went away mid-response
  Counter access_log_dropped;
  LoopHistogram loop_busy;  // the worker's event loop, per iteration
};

// Process-wide registry: route names get stable indexes, workers register
// their shards. Indexes only grow (bounded by kMaxRoutes).
class Registry {
 public:
  static Registry& get();
  // Returns the index for a route name; kMaxRoutes - 1 ("other") when full.
  size_t routeIndex(const std::string& name);
  void addWorker(WorkerStats* w);
  // Sums every worker's shard.
  template <typename F>
  void forEachWorker(F f) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto* w : workers_) f(*w);
  }
  std::vector<std::string> routeNames();

 private:
  std::mutex mutex_;
  std::vector<std::string> routes_;
  std::vector<WorkerStats*> workers_;
};

// Appends one Prometheus histogram series in the text format: a cumulative
// `<name>_bucket` line per upper bound (`bounds_s`, seconds, `bucket_count`
// of them) and one for +Inf (`counts` has bucket_count + 1 entries, not
// cumulative), then `<name>_sum` (`sum_s`) and `<name>_count`. Nothing when
// every count is zero. `labels` is empty or `name="value"` pairs without
// braces, already escaped.
void appendPrometheusHistogram(std::string& out, std::string_view name, std::string_view labels,
                               const double* bounds_s, const uint64_t* counts, size_t bucket_count,
                               double sum_s);

}  // namespace eldric::stats
