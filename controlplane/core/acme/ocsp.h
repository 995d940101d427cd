#pragma once

// OCSP stapling's fetching side: whoever builds snapshots (the control
// plane, or a standalone Edge's in-process core) tells the stapler which
// certificate chains are served; for each whose leaf names a responder it
// fetches the answer on a thread of its own, checks it (pki::
// checkOcspResponse), refreshes it halfway to its nextUpdate (12 h when
// it has none), retries a failure with backoff, and asks for a rebuild
// when an answer changes; fill() puts the current answer in a
// TlsCertificate. A chain without a responder costs nothing.

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "controlplane/core/acme/acme.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane::acme {

class OcspStapler {
 public:
  // `changed`: an answer came or went (called on the stapler's thread, no
  // lock held). `now`: Unix seconds; tests move it.
  OcspStapler(std::unique_ptr<Transport> transport, std::function<void()> changed,
              std::function<int64_t()> now = nullptr);
  ~OcspStapler();
  OcspStapler(const OcspStapler&) = delete;
  OcspStapler& operator=(const OcspStapler&) = delete;

  void start();
  void stop();
  // The chains served now (PEM); others are forgotten.
  void watch(const std::vector<std::string>& chains);
  // Sets `cert`'s ocsp_response when its chain has a current answer.
  void fill(edge::v1::TlsCertificate* cert) const;
  // Every chain the snapshot serves (listeners' and ACME's) watched, and
  // the current answers filled in.
  void watchAndFill(edge::v1::Snapshot* snapshot);

 private:
  struct Entry {
    std::string url, request, serial;  // empty url: no responder
    std::string response;              // current answer (DER)
    int64_t next_fetch = 0;
    int64_t backoff_s = 0;
    int64_t next_update = 0;
  };
  void run();
  int64_t now() const { return now_ ? now_() : static_cast<int64_t>(time(nullptr)); }

  std::unique_ptr<Transport> transport_;
  std::function<void()> changed_;
  std::function<int64_t()> now_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::map<std::string, Entry> entries_;  // by chain PEM
  std::thread thread_;
};

}  // namespace eldric::controlplane::acme
