#pragma once

// Keeps one certificate for tls.acme.domains: orders it when there is none
// (or it names other domains), renews it renew_before_days ahead of
// expiry, retries a failure with exponential backoff, and keeps the
// account key, the chain and its key under <data_dir>/acme/ (0700, keys
// 0600). Owned by whoever builds snapshots: the control plane, or a
// standalone Edge's in-process core. It runs the protocol on a thread of
// its own; the owner puts its state in each snapshot (fill()) and rebuilds
// when told (Hooks::changed).

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "common/config/loader.h"
#include "common/pki/pki.h"
#include "controlplane/core/acme/acme.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane::acme {

struct Hooks {
  // The challenges or the certificate changed: build and publish a new
  // snapshot (called on the manager's thread, no lock held).
  std::function<void()> changed;
  // Whether every data plane serves these challenges now (false with
  // `*why`). Asked every 100 ms, for up to 10 s, before the CA is told to
  // validate; the order goes on either way, since the CA may still reach
  // a member that does.
  std::function<bool(const std::vector<std::pair<std::string, std::string>>& challenges,
                     std::string* why)>
      served;
  // Unix seconds; tests move it.
  std::function<int64_t()> now;
};

class Manager {
 public:
  Manager(config::AcmeSettings settings, std::string data_dir, std::unique_ptr<Transport> transport,
          Hooks hooks);
  ~Manager();
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;

  // Loads what is stored (a certificate still valid for the domains is
  // served at once) and starts the thread. False with `*error` when the
  // data directory cannot be used.
  bool start(std::string* error);
  void stop();
  // Orders a new certificate now, whatever the current one's expiry.
  // False with `*why` while an order is under way (one at a time: a CA
  // counts duplicate certificates against its limits).
  bool renewNow(std::string* why);

  // The state to serve: challenges, the certificate (if any) and why there
  // is none.
  void fill(edge::v1::Acme* out) const;
  bool hasCertificate() const;
  // This certificate's fields for GET /api/v1/certificates (appended to
  // an object being written): the directory, the domains, the issued
  // certificate if any, the status, the last attempt and the next.
  void appendDescription(std::string& out, int64_t now) const;

 private:
  struct Attempt {
    int64_t at = 0;
    bool ok = false;
    std::string error;  // which step and what the CA answered
  };
  void run();
  // One whole order. False with `*error`.
  bool order(std::string* error);
  bool loadStored(std::string* error);
  bool save(const std::string& chain, const std::string& key_pem, std::string* error);
  // Serves this certificate from now on (takes mu_).
  void hold(std::string chain, std::string key_pem, pki::CertificateInfo info);
  bool accountKey(std::unique_ptr<pki::Key>* out, std::string* error);
  bool coversDomains(const pki::CertificateInfo& info) const;
  int64_t renewAt() const;  // under mu_
  // Asks the CA for its renewal window (RFC 9773), if it offers one.
  void checkRenewalInfo();
  void publishChallenges(std::vector<std::pair<std::string, std::string>> challenges);
  bool stopping() const;
  // Sleeps `seconds` or until stopped; false when stopped.
  bool pause(int64_t seconds) { return pauseMs(seconds * 1000); }
  bool pauseMs(int64_t ms);
  int64_t now() const { return hooks_.now ? hooks_.now() : static_cast<int64_t>(time(nullptr)); }

  const config::AcmeSettings settings_;
  const std::string dir_;  // <data_dir>/acme
  std::unique_ptr<Transport> transport_;
  Hooks hooks_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool renew_requested_ = false;
  bool ordering_ = false;  // an order is under way
  std::vector<std::pair<std::string, std::string>> challenges_;
  std::string chain_pem_, key_pem_;
  pki::CertificateInfo info_;
  std::string status_ = "no certificate yet: the first order has not run";
  Attempt last_;
  int64_t next_attempt_ = 0;
  // ACME Renewal Information: when to ask next, what the CA suggested, the
  // moment chosen in its window (0: none), and how the last ask went.
  int64_t next_renewal_info_ = 0;
  RenewalWindow renewal_window_;
  int64_t renewal_info_at_ = 0;
  std::string renewal_info_status_;
  int64_t last_window_renewal_ = 0;  // when the CA's window last started an order
  int64_t backoff_s_ = 0;
  std::thread thread_;
};

}  // namespace eldric::controlplane::acme
