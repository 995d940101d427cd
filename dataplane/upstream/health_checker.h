#pragma once

// Active health checks: on the main loop, a GET of each endpoint's health
// path at the cluster's interval. `unhealthy_threshold` failures in a row
// mark a host unhealthy; `healthy_threshold` successes bring it back.

#include <memory>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/upstream/host.h"

namespace eldric::upstream {

class HealthChecker {
 public:
  explicit HealthChecker(Dispatcher& dispatcher);
  ~HealthChecker();
  // Replaces the set of checked hosts (main thread): every host of each
  // cluster that has a health path.
  void update(const std::vector<ClusterInfoSharedPtr>& clusters);

 private:
  struct Check;
  Dispatcher& dispatcher_;
  std::vector<std::unique_ptr<Check>> checks_;
};

}  // namespace eldric::upstream
