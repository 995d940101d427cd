#pragma once

// The client side of a gRPC channel's TLS: TLS 1.2+, the server verified
// against a CA file (and its name, per connection), an optional client
// certificate for mTLS, and ALPN "h2" offered (gRPC servers require it).

#include <string>

#include "dataplane/tls/server_context.h"

namespace eldric::grpc {

// Returns null and sets `error` when a file does not load. An empty
// `ca_file` means the system's bundle (/etc/ssl/certs/ca-certificates.crt):
// this BoringSSL build has no default trust store.
tls::SslCtxPtr makeClientTlsContext(const std::string& ca_file, const std::string& cert_file,
                                    const std::string& key_file, std::string* error);

}  // namespace eldric::grpc
