#include "controlplane/core/acme/ocsp.h"

#include <algorithm>
#include <chrono>

#include "common/log.h"
#include "common/pki/pki.h"

namespace eldric::controlplane::acme {
namespace {

constexpr int64_t kRefreshWithoutNextUpdateS = 12 * 3600;
constexpr int64_t kRetryInitialS = 60;
constexpr int64_t kRetryMaxS = 3600;
constexpr size_t kMaxChains = 64;

}  // namespace

OcspStapler::OcspStapler(std::unique_ptr<Transport> transport, std::function<void()> changed,
                         std::function<int64_t()> now)
    : transport_(std::move(transport)), changed_(std::move(changed)), now_(std::move(now)) {}

OcspStapler::~OcspStapler() { stop(); }

void OcspStapler::start() {
  if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
}

void OcspStapler::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (transport_) transport_->interrupt();
  if (thread_.joinable()) thread_.join();
}

void OcspStapler::watch(const std::vector<std::string>& chains) {
  bool added = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, Entry> next;
    for (const auto& chain : chains) {
      if (next.size() >= kMaxChains || next.count(chain)) continue;
      auto it = entries_.find(chain);
      if (it != entries_.end()) {
        next.emplace(chain, std::move(it->second));
        continue;
      }
      Entry e;
      pki::OcspRequest req;
      std::string why;
      if (pki::ocspRequest(chain, &req, &why)) {
        e.url = req.url;
        e.request = std::move(req.der);
        e.serial = std::move(req.serial);
        added = true;
      } else {
        log::debug("no OCSP stapling for a certificate", {{"reason", log::str(why)}});
      }
      next.emplace(chain, std::move(e));
    }
    entries_ = std::move(next);
  }
  if (added) cv_.notify_all();
}

void OcspStapler::fill(edge::v1::TlsCertificate* cert) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = entries_.find(cert->certificate_chain_pem());
  if (it == entries_.end() || it->second.response.empty()) return;
  // A stale answer is not stapled (clients would refuse it).
  if (it->second.next_update != 0 && it->second.next_update < now()) return;
  cert->set_ocsp_response(it->second.response);
}

void OcspStapler::watchAndFill(edge::v1::Snapshot* snapshot) {
  std::vector<std::string> chains;
  for (const auto& l : snapshot->listeners())
    for (const auto& c : l.tls().certificates()) chains.push_back(c.certificate_chain_pem());
  if (snapshot->acme().has_certificate())
    chains.push_back(snapshot->acme().certificate().certificate_chain_pem());
  watch(chains);
  for (auto& l : *snapshot->mutable_listeners()) {
    if (!l.has_tls()) continue;  // mutable_tls() would give it one
    for (auto& c : *l.mutable_tls()->mutable_certificates()) fill(&c);
  }
  if (snapshot->acme().has_certificate()) fill(snapshot->mutable_acme()->mutable_certificate());
}

void OcspStapler::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    // The entry due first.
    const std::string* due_chain = nullptr;
    int64_t t = now(), wake = t + 3600;
    for (const auto& [chain, e] : entries_) {
      if (e.url.empty()) continue;
      if (e.next_fetch <= t) {
        due_chain = &chain;
        break;
      }
      wake = std::min(wake, e.next_fetch);
    }
    if (!due_chain) {
      cv_.wait_for(lock, std::chrono::seconds(std::clamp<int64_t>(wake - t, 1, 3600)));
      continue;
    }
    std::string chain = *due_chain;
    Entry e = entries_[chain];
    lock.unlock();
    HttpRequest req{"POST", e.url, e.request, "application/ocsp-request"};
    HttpResponse res;
    std::string error;
    int64_t this_update = 0, next_update = 0;
    bool ok = transport_->fetch(req, &res, &error);
    if (ok && res.status != 200) {
      error = e.url + " answered " + std::to_string(res.status);
      ok = false;
    }
    ok =
        ok && pki::checkOcspResponse(res.body, e.serial, now(), &this_update, &next_update, &error);
    lock.lock();
    if (stop_) return;
    auto it = entries_.find(chain);
    if (it == entries_.end()) continue;  // no longer served
    bool changed = false;
    t = now();
    if (ok) {
      changed = it->second.response != res.body;
      it->second.response = res.body;
      it->second.next_update = next_update;
      it->second.backoff_s = 0;
      int64_t refresh = next_update > this_update ? this_update + (next_update - this_update) / 2
                                                  : t + kRefreshWithoutNextUpdateS;
      it->second.next_fetch = std::max(refresh, t + 60);
    } else {
      it->second.backoff_s = it->second.backoff_s == 0
                                 ? kRetryInitialS
                                 : std::min(it->second.backoff_s * 2, kRetryMaxS);
      it->second.next_fetch = t + it->second.backoff_s;
      // An answer past its nextUpdate goes; a current one stays.
      if (!it->second.response.empty() && it->second.next_update != 0 &&
          it->second.next_update < t) {
        it->second.response.clear();
        changed = true;
      }
    }
    int64_t retry = it->second.backoff_s;
    lock.unlock();
    if (ok) {
      log::info("OCSP answer fetched for stapling",
                {{"responder", log::str(e.url)}, {"next_update", log::num(next_update)}});
    } else {
      log::warn("OCSP answer not fetched; retried later", {{"responder", log::str(e.url)},
                                                           {"error", log::str(error)},
                                                           {"retry_in_s", log::num(retry)}});
    }
    if (changed && changed_) changed_();
    lock.lock();
  }
}

}  // namespace eldric::controlplane::acme
