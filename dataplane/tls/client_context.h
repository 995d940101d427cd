#pragma once

// A client's TLS context: TLS 1.2+, the server verified against a CA file
// (and its name, per connection), an optional client certificate for mTLS,
// and the ALPN protocols offered ("h2" for the farm's gRPC, "http/1.1" for
// the tunnel agent).

#include <string>
#include <vector>

#include "dataplane/tls/server_context.h"

namespace eldric::tls {

// Returns null and sets `error` when a file does not load. An empty
// `ca_file` means the system's bundle (/etc/ssl/certs/ca-certificates.crt):
// this BoringSSL build has no default trust store.
//
// With `pin_certificate_file`, the CA and the name are not checked: the
// server's certificate must carry the same public key as that file's first
// certificate (a farm's members, which share the Edge's key).
SslCtxPtr makeClientContext(const std::string& ca_file, const std::string& cert_file,
                            const std::string& key_file, const std::vector<std::string>& alpn,
                            std::string* error, const std::string& pin_certificate_file = "");

}  // namespace eldric::tls
