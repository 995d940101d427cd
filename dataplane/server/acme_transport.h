#pragma once

// The standalone Edge's ACME transport: one blocking HTTPS exchange on the
// ACME manager's thread, through a private event loop and the data plane's
// own HTTP/1.1 client and BoringSSL (the control plane uses libcurl; the
// Edge must not link it: it would pull OpenSSL's libcrypto beside
// BoringSSL's).

#include <memory>
#include <string>

#include "controlplane/core/acme/acme.h"

namespace eldric::server {

// `ca_file`: the CA bundle for the directory's certificate ("" is the
// system's). Null with `*error` when it does not load.
std::unique_ptr<controlplane::acme::Transport> makeAcmeTransport(const std::string& ca_file,
                                                                 std::string* error);

}  // namespace eldric::server
