#include "dataplane/stats/stats.h"

#include <cstdio>

namespace eldric::stats {

Registry& Registry::get() {
  static Registry* r = new Registry();
  return *r;
}

size_t Registry::routeIndex(const std::string& name) {
  std::lock_guard<std::mutex> lock(mutex_);
  for (size_t i = 0; i < routes_.size(); ++i) {
    if (routes_[i] == name) return i;
  }
  if (routes_.size() < kMaxRoutes - 1) {
    routes_.push_back(name);
    return routes_.size() - 1;
  }
  return kMaxRoutes - 1;
}

std::vector<std::string> Registry::routeNames() {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<std::string> names = routes_;
  names.resize(kMaxRoutes);
  names[kMaxRoutes - 1] = "other";
  return names;
}

void Registry::addWorker(WorkerStats* w) {
  std::lock_guard<std::mutex> lock(mutex_);
  workers_.push_back(w);
}

void appendPrometheusHistogram(std::string& out, std::string_view name, std::string_view labels,
                               const double* bounds_s, const uint64_t* counts, size_t bucket_count,
                               double sum_s) {
  uint64_t total = 0;
  for (size_t b = 0; b <= bucket_count; ++b) total += counts[b];
  if (!total) return;
  const std::string prefix =
      std::string(name) + "_bucket{" + std::string(labels) + (labels.empty() ? "" : ",") + "le=\"";
  uint64_t cumulative = 0;
  char num[64];
  for (size_t b = 0; b <= bucket_count; ++b) {
    cumulative += counts[b];
    out += prefix;
    if (b < bucket_count) {
      snprintf(num, sizeof num, "%g", bounds_s[b]);
      out += num;
    } else {
      out += "+Inf";
    }
    out += "\"} ";
    out += std::to_string(cumulative);
    out += '\n';
  }
  const std::string braces = labels.empty() ? "" : "{" + std::string(labels) + "}";
  snprintf(num, sizeof num, "%.6f", sum_s);
  out.append(name).append("_sum").append(braces).append(" ").append(num).append("\n");
  out.append(name).append("_count").append(braces).append(" ").append(std::to_string(total));
  out += '\n';
}

}  // namespace eldric::stats
