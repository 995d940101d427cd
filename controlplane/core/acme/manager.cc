#include "controlplane/core/acme/manager.h"

#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <random>
#include <set>

#include "common/file.h"
#include "common/log.h"
#include "controlplane/core/acme/certificates.h"

namespace eldric::controlplane::acme {
namespace {

// How long one order may poll the CA (authorizations, then processing).
constexpr int64_t kPollDeadlineSeconds = 120;
// ACME Renewal Information: asked every 6 h (or as the CA's Retry-After
// says, between 1 h and a day); a day when the CA offers none.
constexpr int64_t kRenewalInfoDefaultS = 6 * 3600;
constexpr int64_t kRenewalInfoRetryS = 3600;
constexpr int64_t kRenewalInfoMaxS = 86400;

std::string jsonString(std::string_view s) {
  std::string out;
  log::appendJsonString(out, s);
  return out;
}

}  // namespace

Manager::Manager(config::AcmeSettings settings, std::string data_dir,
                 std::unique_ptr<Transport> transport, Hooks hooks)
    : settings_(std::move(settings)),
      dir_(data_dir + "/acme"),
      transport_(std::move(transport)),
      hooks_(std::move(hooks)) {}

Manager::~Manager() { stop(); }

bool Manager::start(std::string* error) {
  if (mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST) {
    *error = dir_ + ": " + strerror(errno);
    return false;
  }
  chmod(dir_.c_str(), 0700);
  std::string why;
  if (loadStored(&why)) {
    log::info("ACME certificate loaded",
              {{"names", log::num(static_cast<long long>(info_.names.size()))},
               {"not_after", log::num(info_.not_after)}});
  } else if (!why.empty()) {
    log::info("no usable stored ACME certificate; ordering one", {{"reason", log::str(why)}});
  }
  thread_ = std::thread([this] { run(); });
  return true;
}

void Manager::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (transport_) transport_->interrupt();
  if (thread_.joinable()) thread_.join();
}

bool Manager::renewNow(std::string* why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ordering_ || renew_requested_) {
      *why = "an order is already under way; GET /api/v1/certificates shows its outcome";
      return false;
    }
    renew_requested_ = true;
    next_attempt_ = 0;
  }
  cv_.notify_all();
  return true;
}

bool Manager::stopping() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

bool Manager::pauseMs(int64_t ms) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_for(lock, std::chrono::milliseconds(ms), [this] { return stop_; });
  return !stop_;
}

bool Manager::coversDomains(const pki::CertificateInfo& info) const {
  std::set<std::string> names(info.names.begin(), info.names.end());
  for (const auto& d : settings_.domains)
    if (!names.count(d)) return false;
  return true;
}

int64_t Manager::renewAt() const {
  int64_t at = info_.not_after - settings_.renew_before_days * 86400;
  // The CA's suggested window (ARI) may ask for it sooner, never later.
  if (renewal_info_at_ > 0) at = std::min(at, renewal_info_at_);
  return at;
}

void Manager::checkRenewalInfo() {
  std::string chain, id, why;
  {
    std::lock_guard<std::mutex> lock(mu_);
    chain = chain_pem_;
  }
  int64_t t = now();
  int64_t next = t + kRenewalInfoDefaultS;
  std::string status;
  RenewalWindow window;
  bool got = false;
  std::unique_ptr<pki::Key> account;
  if (!pki::ariCertificateId(chain, &id, &why)) {
    status = "not asked: " + why;
    next = t + kRenewalInfoMaxS;
  } else if (!accountKey(&account, &why)) {
    status = "not asked: " + why;
  } else {
    Client client(*transport_, *account, settings_.directory_url);
    if (!client.loadDirectory()) {
      status = "not asked: " + client.error();
      next = t + kRenewalInfoRetryS;
    } else if (client.directory().renewal_info.empty()) {
      status = "the CA offers none";
      next = t + kRenewalInfoMaxS;
    } else if (!client.fetchRenewalInfo(id, &window)) {
      status = "failed: " + client.error();
      next = t + kRenewalInfoRetryS;
    } else {
      got = true;
      status = "ok";
      if (client.retryAfterSeconds() > 0)
        next = t + std::clamp<int64_t>(client.retryAfterSeconds(), kRenewalInfoRetryS,
                                       kRenewalInfoMaxS);
    }
  }
  std::lock_guard<std::mutex> lock(mu_);
  next_renewal_info_ = next;
  renewal_info_status_ = status;
  if (!got) return;
  if (window.start != renewal_window_.start || window.end != renewal_window_.end) {
    // RFC 9773 section 4.2: a uniformly random moment within the window
    // (so a CA's many subscribers do not all come at once); one already
    // past means now.
    std::mt19937_64 rng(std::random_device{}());
    int64_t span = window.end - window.start;
    renewal_info_at_ = window.start + static_cast<int64_t>(rng() % static_cast<uint64_t>(span));
    // A CA whose windows are always open would have us renew without end:
    // after a renewal its window caused, the next waits an hour.
    if (last_window_renewal_ > 0 && renewal_info_at_ < last_window_renewal_ + kRenewalInfoRetryS) {
      renewal_info_at_ = last_window_renewal_ + kRenewalInfoRetryS;
      log::warn(
          "the CA's renewal window is open again right after a renewal it asked for; "
          "waiting an hour",
          {{"renew_at", log::num(renewal_info_at_)}});
    }
    renewal_window_ = window;
    log::info("ACME renewal window from the CA", {{"start", log::num(window.start)},
                                                  {"end", log::num(window.end)},
                                                  {"renew_at", log::num(renewal_info_at_)}});
  }
}

bool Manager::loadStored(std::string* error) {
  // None stored (the first start) is not worth a reason.
  std::string chain, key_pem, absent;
  if (!readWholeFile(dir_ + "/certificate.pem", &chain, &absent) ||
      !readWholeFile(dir_ + "/certificate.key", &key_pem, &absent))
    return false;
  pki::CertificateInfo info;
  auto key = pki::Key::fromPem(key_pem, error);
  if (!key || !pki::inspectChain(chain, &info, error)) return false;
  if (!pki::chainMatchesKey(chain, *key)) {
    *error = "the stored certificate does not match its key";
    return false;
  }
  if (!coversDomains(info)) {
    *error = "the stored certificate does not name every domain in tls.acme.domains";
    return false;
  }
  if (info.not_after <= now()) {
    *error = "the stored certificate has expired";
    return false;
  }
  hold(std::move(chain), std::move(key_pem), std::move(info));
  return true;
}

void Manager::hold(std::string chain, std::string key_pem, pki::CertificateInfo info) {
  std::lock_guard<std::mutex> lock(mu_);
  chain_pem_ = std::move(chain);
  key_pem_ = std::move(key_pem);
  info_ = std::move(info);
  status_.clear();
}

bool Manager::save(const std::string& chain, const std::string& key_pem, std::string* error) {
  // The key first: a chain without its key is never left behind.
  return writeFileAtomically(dir_ + "/certificate.key", key_pem, 0600, error) &&
         writeFileAtomically(dir_ + "/certificate.pem", chain, 0644, error);
}

bool Manager::accountKey(std::unique_ptr<pki::Key>* out, std::string* error) {
  std::string path = dir_ + "/account.key", pem, absent;
  if (readWholeFile(path, &pem, &absent)) {
    *out = pki::Key::fromPem(pem, error);
    if (!*out) *error = path + ": " + *error;
    return *out != nullptr;
  }
  // The account key is always ECDSA P-256, whatever the certificate's.
  *out = pki::Key::generate(pki::KeyType::EcdsaP256, error);
  return *out && writeFileAtomically(path, (*out)->privatePem(), 0600, error);
}

void Manager::publishChallenges(std::vector<std::pair<std::string, std::string>> challenges) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (challenges == challenges_) return;
    challenges_ = std::move(challenges);
  }
  if (hooks_.changed) hooks_.changed();
}

bool Manager::order(std::string* error) {
  std::unique_ptr<pki::Key> account;
  if (!accountKey(&account, error)) return false;
  Client client(*transport_, *account, settings_.directory_url);
  std::string account_url, order_url;
  Order order;
  auto failed = [&]() {
    *error = client.error();
    return false;
  };
  if (!client.loadDirectory() || !client.registerAccount(settings_.email, &account_url) ||
      !client.newOrder(settings_.domains, &order, &order_url))
    return failed();

  // Authorizations: answer each pending one's http-01 challenge.
  std::vector<std::pair<std::string, std::string>> answers;
  std::vector<std::pair<std::string, std::string>> pending;  // authorization, challenge URL
  for (const auto& url : order.authorizations) {
    Authorization authz;
    if (!client.fetchAuthorization(url, &authz)) return failed();
    if (authz.status == "valid") continue;
    if (authz.status != "pending") {
      *error = "authorization: " + authz.identifier + " is " + authz.status;
      return false;
    }
    auto it = std::find_if(authz.challenges.begin(), authz.challenges.end(),
                           [](const Challenge& c) { return c.type == "http-01"; });
    if (it == authz.challenges.end()) {
      *error = "authorization: the CA offers no http-01 challenge for " + authz.identifier;
      return false;
    }
    answers.emplace_back(it->token, client.keyAuthorization(it->token));
    pending.emplace_back(url, it->url);
  }
  if (!answers.empty()) {
    publishChallenges(answers);
    std::string why;
    bool served = !hooks_.served;
    for (int i = 0; !served && i < 100; ++i) {
      served = hooks_.served(answers, &why);
      if (!served && !pauseMs(100)) return false;
    }
    if (!served)
      log::warn("ACME challenge not seen served everywhere; asking the CA anyway",
                {{"reason", log::str(why)}});
    for (const auto& p : pending)
      if (!client.respond(p.second)) return failed();
  }
  int64_t deadline = now() + kPollDeadlineSeconds;
  for (const auto& p : pending) {
    for (;;) {
      Authorization authz;
      if (!client.fetchAuthorization(p.first, &authz)) return failed();
      if (authz.status == "valid") break;
      if (authz.status != "pending") {
        std::string detail;
        for (const auto& c : authz.challenges)
          if (c.type == "http-01" && !c.error.detail.empty()) detail = c.error.describe();
        *error = "challenge: the CA could not validate " + authz.identifier + " (" + authz.status +
                 (detail.empty() ? "" : ": " + detail) + ")";
        return false;
      }
      if (now() > deadline) {
        *error = "challenge: the CA did not validate " + authz.identifier + " within " +
                 std::to_string(kPollDeadlineSeconds) + " s";
        return false;
      }
      if (!pause(std::max<int64_t>(1, std::min<int64_t>(client.retryAfterSeconds(), 10))))
        return false;
    }
  }
  publishChallenges({});

  // Finalize with a fresh key, then wait for the certificate.
  pki::KeyType type = pki::KeyType::EcdsaP256;
  pki::parseKeyType(settings_.key_type, &type);
  auto key = pki::Key::generate(type, error);
  std::string csr;
  if (!key || !key->certificateRequest(settings_.domains, &csr, error)) return false;
  if (order.status == "pending" || order.status == "ready") {
    if (!client.fetchOrder(order_url, &order)) return failed();
    if (order.status != "ready" && order.status != "valid") {
      *error = "order: " + order.status + " after its authorizations were valid" +
               (order.error.detail.empty() ? "" : " (" + order.error.describe() + ")");
      return false;
    }
    if (order.status == "ready" && !client.finalize(order.finalize, csr, &order)) return failed();
  }
  while (order.status == "processing" || order.status == "ready") {
    if (now() > deadline) {
      *error =
          "finalize: the CA did not issue within " + std::to_string(kPollDeadlineSeconds) + " s";
      return false;
    }
    if (!pause(std::max<int64_t>(1, std::min<int64_t>(client.retryAfterSeconds(), 10))))
      return false;
    if (!client.fetchOrder(order_url, &order)) return failed();
  }
  if (order.status != "valid" || order.certificate.empty()) {
    *error = "finalize: the order is " + order.status +
             (order.error.detail.empty() ? "" : " (" + order.error.describe() + ")");
    return false;
  }
  std::string chain;
  if (!client.downloadCertificate(order.certificate, &chain)) return failed();
  pki::CertificateInfo info;
  if (!pki::inspectChain(chain, &info, error)) {
    *error = "download: " + *error;
    return false;
  }
  if (!pki::chainMatchesKey(chain, *key) || !coversDomains(info)) {
    *error = "download: the CA's certificate does not match the request";
    return false;
  }
  std::string key_pem = key->privatePem();
  if (!save(chain, key_pem, error)) return false;
  hold(std::move(chain), std::move(key_pem), std::move(info));
  return true;
}

void Manager::run() {
  // Serve what is stored (or say why there is nothing) from the start.
  if (hooks_.changed) hooks_.changed();
  for (;;) {
    int64_t wake;
    bool due;
    {
      std::unique_lock<std::mutex> lock(mu_);
      if (stop_) return;
      int64_t t = now();
      bool need = chain_pem_.empty() || renew_requested_ || t >= renewAt();
      due = need && t >= next_attempt_;
      if (!due && !chain_pem_.empty() && t >= next_renewal_info_) {
        // Time to ask the CA whether it wants this certificate renewed
        // early (RFC 9773).
        lock.unlock();
        checkRenewalInfo();
        continue;
      }
      if (!due) {
        wake = need ? next_attempt_ : std::min(renewAt(), next_renewal_info_);
        cv_.wait_for(lock, std::chrono::seconds(std::clamp<int64_t>(wake - t, 1, 3600)));
        continue;
      }
      // Started by the CA's renewal window (not by expiry or a request)?
      if (!chain_pem_.empty() && !renew_requested_ && renewal_info_at_ > 0 &&
          t >= renewal_info_at_ && t < info_.not_after - settings_.renew_before_days * 86400)
        last_window_renewal_ = t;
      renew_requested_ = false;
      ordering_ = true;
    }
    std::string error;
    bool had = hasCertificate();
    log::info("ACME order starting",
              {{"directory", log::str(settings_.directory_url)},
               {"domains", log::num(static_cast<long long>(settings_.domains.size()))}});
    bool ok = order(&error);
    if (stopping()) return;
    publishChallenges({});
    {
      std::lock_guard<std::mutex> lock(mu_);
      ordering_ = false;
      last_ = Attempt{now(), ok, error};
      if (ok) {
        backoff_s_ = 0;
        next_attempt_ = 0;
        // A new certificate: the CA's window was the old one's.
        renewal_window_ = RenewalWindow{};
        renewal_info_at_ = 0;
        next_renewal_info_ = 0;
      } else {
        backoff_s_ = backoff_s_ == 0 ? settings_.retry_initial_s
                                     : std::min(backoff_s_ * 2, settings_.retry_max_s);
        next_attempt_ = now() + backoff_s_;
        status_ = (had ? "renewal failed, the current certificate is kept: "
                       : "no certificate yet, a self-signed stand-in is served: ") +
                  error;
      }
    }
    if (ok) {
      log::info("ACME certificate issued",
                {{"not_after", log::num(info_.not_after)}, {"issuer", log::str(info_.issuer)}});
      if (hooks_.changed) hooks_.changed();
    } else {
      log::error("ACME order failed", {{"error", log::str(error)},
                                       {"retry_in_s", log::num(backoff_s_)},
                                       {"keeping_certificate", had ? "true" : "false"}});
      if (hooks_.changed) hooks_.changed();  // the status changed
    }
  }
}

void Manager::fill(edge::v1::Acme* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out->clear_challenges();
  for (const auto& c : challenges_) {
    auto* ch = out->add_challenges();
    ch->set_token(c.first);
    ch->set_key_authorization(c.second);
  }
  if (!chain_pem_.empty()) {
    auto* cert = out->mutable_certificate();
    cert->set_certificate_chain_pem(chain_pem_);
    cert->set_private_key_pem(key_pem_);
    cert->set_certificate_source("acme:" + settings_.directory_url);
    cert->set_private_key_source("acme");
  }
  out->set_status(status_);
}

bool Manager::hasCertificate() const {
  std::lock_guard<std::mutex> lock(mu_);
  return !chain_pem_.empty();
}

void Manager::appendDescription(std::string& out, int64_t now) const {
  std::lock_guard<std::mutex> lock(mu_);
  out += ",\"directory_url\":" + jsonString(settings_.directory_url) + ",\"domains\":[";
  for (size_t i = 0; i < settings_.domains.size(); ++i)
    out += (i ? "," : "") + jsonString(settings_.domains[i]);
  out += "],\"issued\":";
  out += chain_pem_.empty() ? "false" : "true";
  if (!chain_pem_.empty()) {
    appendCertificateInfo(out, info_, now);
    out += ",\"renew_at\":" + std::to_string(renewAt());
  }
  out += ",\"renewal_info\":";
  if (renewal_info_status_.empty()) {
    out += "null";
  } else {
    out += "{\"status\":" + jsonString(renewal_info_status_);
    if (renewal_window_.end > 0)
      out += ",\"window_start\":" + std::to_string(renewal_window_.start) +
             ",\"window_end\":" + std::to_string(renewal_window_.end) +
             ",\"renew_at\":" + std::to_string(renewal_info_at_);
    out += ",\"next_check_at\":" + std::to_string(next_renewal_info_) + "}";
  }
  out += ",\"status\":" + jsonString(status_.empty() ? "ok" : status_);
  out += ",\"last_attempt\":";
  if (last_.at == 0) {
    out += "null";
  } else {
    out += "{\"at\":" + std::to_string(last_.at) + ",\"ok\":" + (last_.ok ? "true" : "false") +
           ",\"error\":" + (last_.ok ? "null" : jsonString(last_.error)) + "}";
  }
  out += ",\"next_attempt_at\":" + (next_attempt_ ? std::to_string(next_attempt_) : "null");
}

}  // namespace eldric::controlplane::acme
