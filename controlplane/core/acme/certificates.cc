#include "controlplane/core/acme/certificates.h"

#include "common/log.h"
#include "common/pki/pki.h"

namespace eldric::controlplane::acme {
namespace {

void appendString(std::string& out, std::string_view s) { log::appendJsonString(out, s); }

}  // namespace

void appendCertificateInfo(std::string& out, const pki::CertificateInfo& info, int64_t now) {
  out += ",\"names\":[";
  for (size_t i = 0; i < info.names.size(); ++i) {
    if (i) out += ",";
    appendString(out, info.names[i]);
  }
  out += "],\"subject\":";
  appendString(out, info.subject);
  out += ",\"issuer\":";
  appendString(out, info.issuer);
  out += ",\"not_before\":" + std::to_string(info.not_before) +
         ",\"not_after\":" + std::to_string(info.not_after) +
         ",\"expires_in_seconds\":" + std::to_string(info.not_after - now) +
         ",\"chain_length\":" + std::to_string(info.chain_length);
}

std::string certificatesJson(const edge::v1::Snapshot& snapshot, const Manager* acme, int64_t now) {
  std::string out = "[";
  bool first = true;
  auto begin = [&](const std::string& listener) {
    out += first ? "{\"listener\":" : ",{\"listener\":";
    first = false;
    appendString(out, listener);
  };
  for (const auto& l : snapshot.listeners()) {
    if (!l.has_tls()) continue;
    if (l.tls().acme()) {
      begin(l.name());
      out += ",\"source\":\"acme\"";
      if (acme) {
        acme->appendDescription(out, now);
      } else {
        out += ",\"status\":\"ordered by the control plane; ask it\"";
      }
      out += "}";
      continue;
    }
    for (const auto& c : l.tls().certificates()) {
      begin(l.name());
      out += ",\"source\":\"file\",\"certificate_file\":";
      appendString(out, c.certificate_source());
      pki::CertificateInfo info;
      std::string why;
      if (!pki::inspectChain(c.certificate_chain_pem(), &info, &why)) {
        out += ",\"error\":";
        appendString(out, why);
        out += "}";
        continue;
      }
      appendCertificateInfo(out, info, now);
      out += "}";
    }
  }
  return out + "]";
}

}  // namespace eldric::controlplane::acme
