#include "controlplane/curl_transport.h"

#include <curl/curl.h>

#include <atomic>
#include <cctype>
#include <mutex>
#include <string_view>

namespace eldric::controlplane {
namespace {

// Connect, TLS and the whole answer within this long.
constexpr long kExchangeSeconds = 30;

struct Collect {
  acme::HttpResponse* out;
  bool too_large = false;
};

size_t onBody(char* data, size_t size, size_t n, void* user) {
  auto* c = static_cast<Collect*>(user);
  size_t len = size * n;
  if (c->out->body.size() + len > acme::kMaxResponseBytes) {
    c->too_large = true;
    return 0;  // libcurl ends the transfer (CURLE_WRITE_ERROR)
  }
  c->out->body.append(data, len);
  return len;
}

// One header line ("Name: value\r\n"): the few ACME needs, the last one
// seen winning (a redirect's answer does not count: none are followed).
size_t onHeader(char* data, size_t size, size_t n, void* user) {
  auto* c = static_cast<Collect*>(user);
  size_t len = size * n;
  std::string_view line(data, len);
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) return len;
  std::string name(line.substr(0, colon));
  for (char& ch : name) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
    value.remove_suffix(1);
  if (value.size() > 4096) return len;  // no header of ACME's is that long
  if (name == "content-type") c->out->content_type = value;
  if (name == "location") c->out->location = value;
  if (name == "replay-nonce") c->out->replay_nonce = value;
  if (name == "retry-after") c->out->retry_after = value;
  return len;
}

class CurlTransport : public acme::Transport {
 public:
  explicit CurlTransport(std::string ca_file) : ca_file_(std::move(ca_file)) {}

  bool fetch(const acme::HttpRequest& request, acme::HttpResponse* out,
             std::string* error) override {
    *out = acme::HttpResponse{};
    if (interrupted_) {
      *error = request.url + ": interrupted (shutting down)";
      return false;
    }
    CURL* curl = curl_easy_init();
    if (!curl) {
      *error = "libcurl did not start";
      return false;
    }
    Collect collect{out};
    curl_slist* headers = nullptr;
    headers = curl_slist_append(headers,
                                "Accept: application/json, application/pem-certificate-chain, "
                                "application/ocsp-response");
    std::string type =
        "Content-Type: " + (request.content_type.empty() ? std::string("application/jose+json")
                                                         : request.content_type);
    if (request.method == "POST") headers = curl_slist_append(headers, type.c_str());
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    // ACME is https only (RFC 8555 section 6.1: the client checks every
    // URL so); OCSP responders are usually plain http (RFC 5019).
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, kExchangeSeconds);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, kExchangeSeconds);
    curl_easy_setopt(curl, CURLOPT_USERAGENT, "eldric-controlplane-acme/1");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!ca_file_.empty()) curl_easy_setopt(curl, CURLOPT_CAINFO, ca_file_.c_str());
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, onBody);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &collect);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, onHeader);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &collect);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, onProgress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, this);
    if (request.method == "POST") {
      curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
      curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(request.body.size()));
    } else if (request.method == "HEAD") {
      curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    }
    CURLcode rc = curl_easy_perform(curl);
    long status = 0;
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (collect.too_large) {
      *error = request.url + ": the answer is larger than " +
               std::to_string(acme::kMaxResponseBytes) + " bytes";
      return false;
    }
    if (rc != CURLE_OK) {
      *error = request.url + ": " +
               (interrupted_ ? std::string("interrupted (shutting down)") : curl_easy_strerror(rc));
      return false;
    }
    out->status = static_cast<int>(status);
    return true;
  }

  void interrupt() override { interrupted_ = true; }

 private:
  static int onProgress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    return static_cast<CurlTransport*>(user)->interrupted_ ? 1 : 0;
  }

  std::string ca_file_;
  std::atomic<bool> interrupted_{false};
};

}  // namespace

std::unique_ptr<acme::Transport> makeCurlTransport(const std::string& ca_file, std::string* error) {
  static std::once_flag once;
  static CURLcode init = CURLE_OK;
  std::call_once(once, [] { init = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (init != CURLE_OK) {
    *error = std::string("libcurl did not start: ") + curl_easy_strerror(init);
    return nullptr;
  }
  return std::make_unique<CurlTransport>(ca_file);
}

}  // namespace eldric::controlplane
