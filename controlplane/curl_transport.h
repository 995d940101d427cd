#pragma once

// The control plane's ACME transport: libcurl (Debian's, built on the same
// OpenSSL 3 the control plane links through gRPC), one blocking exchange
// per call on the ACME manager's thread.

#include <memory>
#include <string>

#include "controlplane/core/acme/acme.h"

namespace eldric::controlplane {

// `ca_file`: the CA bundle for the directory's certificate ("" is the
// system's). Null with `*error` when libcurl cannot start.
std::unique_ptr<acme::Transport> makeCurlTransport(const std::string& ca_file, std::string* error);

}  // namespace eldric::controlplane
