// What an ACME CA answers is untrusted: the directory, orders,
// authorizations, problem documents, headers (Replay-Nonce, Location,
// Retry-After) and the certificate chain. The parsers alone, and the
// whole client driven through an order by a scripted CA whose every
// answer comes from the input.
//
// Input: [mode][bytes]
//   mode % 8: 0 directory, 1 order, 2 authorization, 3 problem (status
//             from the next byte), 4 a certificate chain (PEM), 5 the
//             client against scripted answers: the bytes split on
//             "\n--\n" into answers, each "<status>\n<nonce>\n<location>
//             \n<retry-after>\n<body>", 6 an OCSP responder's answer
//             (DER; the serial it must name is the first byte's length
//             of bytes after it), 7 renewal information (RFC 9773).

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/pki/pki.h"
#include "controlplane/core/acme/acme.h"

namespace eldric::fuzz {
namespace {

namespace acme = controlplane::acme;

class ScriptedCa : public acme::Transport {
 public:
  explicit ScriptedCa(std::string_view script) {
    while (!script.empty() && answers_.size() < 64) {
      size_t end = script.find("\n--\n");
      answers_.emplace_back(script.substr(0, end));
      if (end == std::string_view::npos) break;
      script.remove_prefix(end + 4);
    }
  }
  bool fetch(const acme::HttpRequest&, acme::HttpResponse* out, std::string* error) override {
    if (next_ >= answers_.size()) {
      *error = "no more answers";
      return false;
    }
    std::string_view a = answers_[next_++];
    auto line = [&a]() {
      size_t nl = a.find('\n');
      std::string_view l = a.substr(0, nl);
      a.remove_prefix(nl == std::string_view::npos ? a.size() : nl + 1);
      return std::string(l);
    };
    std::string status = line();
    out->status = status.empty() ? 0 : atoi(status.substr(0, 4).c_str());
    out->replay_nonce = line();
    out->location = line();
    out->retry_after = line();
    out->content_type = "application/json";
    out->body.assign(a.data(), std::min(a.size(), acme::kMaxResponseBytes));
    return true;
  }

 private:
  std::vector<std::string> answers_;
  size_t next_ = 0;
};

const pki::Key& accountKey() {
  static std::unique_ptr<pki::Key> key = [] {
    std::string error;
    auto k = pki::Key::generate(pki::KeyType::EcdsaP256, &error);
    if (!k) abort();
    return k;
  }();
  return *key;
}

void runClient(std::string_view script) {
  ScriptedCa ca(script);
  acme::Client client(ca, accountKey(), "https://ca.example/dir");
  std::string account, order_url, pem;
  acme::Order order;
  if (!client.loadDirectory() || !client.registerAccount("ops@example.com", &account) ||
      !client.newOrder({"edge.example.com"}, &order, &order_url))
    return;
  for (const auto& url : order.authorizations) {
    acme::Authorization authz;
    if (!client.fetchAuthorization(url, &authz)) return;
    for (const auto& c : authz.challenges) {
      (void)client.keyAuthorization(c.token);
      if (!client.respond(c.url)) return;
    }
  }
  if (!client.fetchOrder(order_url, &order)) return;
  if (!client.finalize(order.finalize, std::string("\x30\x03\x02\x01\x00", 5), &order)) return;
  if (!client.downloadCertificate(order.certificate, &pem)) return;
  pki::CertificateInfo info;
  std::string error;
  pki::inspectChain(pem, &info, &error);
}

}  // namespace
}  // namespace eldric::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace eldric;
  if (size < 1) return 0;
  std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);
  std::string error;
  switch (data[0] % 8) {
    case 0: {
      controlplane::acme::Directory d;
      controlplane::acme::parseDirectory(body, &d, &error);
      break;
    }
    case 1: {
      controlplane::acme::Order o;
      if (controlplane::acme::parseOrder(body, &o, &error)) (void)o.error.describe();
      break;
    }
    case 2: {
      controlplane::acme::Authorization a;
      if (controlplane::acme::parseAuthorization(body, &a, &error))
        for (const auto& c : a.challenges) (void)c.error.describe();
      break;
    }
    case 3: {
      if (body.empty()) break;
      controlplane::acme::HttpResponse r;
      r.status = static_cast<uint8_t>(body[0]) + 300;
      r.content_type = "application/problem+json";
      r.body.assign(body.substr(1));
      controlplane::acme::Problem p;
      controlplane::acme::parseProblem(r, &p);
      (void)p.shortType();
      (void)p.describe();
      break;
    }
    case 4: {
      pki::CertificateInfo info;
      pki::inspectChain(body, &info, &error);
      break;
    }
    case 5:
      fuzz::runClient(body);
      break;
    case 7: {
      controlplane::acme::RenewalWindow w;
      controlplane::acme::parseRenewalInfo(body, &w, &error);
      break;
    }
    case 6: {
      if (body.empty()) break;
      size_t n = std::min<size_t>(static_cast<uint8_t>(body[0]) % 24, body.size() - 1);
      std::string_view serial = body.substr(1, n);
      int64_t this_update = 0, next_update = 0;
      pki::checkOcspResponse(body.substr(1 + n), serial, 1800000000, &this_update, &next_update,
                             &error);
      break;
    }
  }
  return 0;
}
