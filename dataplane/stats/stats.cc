#include "dataplane/stats/stats.h"

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

}  // namespace eldric::stats
