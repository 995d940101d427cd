#pragma once

// The standalone Edge's ACME transport. The ACME manager calls fetch() on
// its own thread and blocks; the exchange itself runs on the Edge's main
// loop, on the data plane's HTTP/1.1 client and BoringSSL (the control
// plane uses libcurl; the Edge must not link it: it would pull OpenSSL's
// libcrypto beside BoringSSL's). Only the CA's name is looked up on the
// calling thread, so the loop never waits on DNS.

#include <memory>
#include <string>

#include "controlplane/core/acme/acme.h"
#include "dataplane/event/dispatcher.h"

namespace eldric::server {

// `loop`: the main dispatcher, which must outlive the transport's last
// exchange (stop the manager before the loop ends). `ca_file`: the CA
// bundle for the directory's certificate ("" is the system's). Null with
// `*error` when it does not load.
std::unique_ptr<controlplane::acme::Transport> makeAcmeTransport(Dispatcher& loop,
                                                                 const std::string& ca_file,
                                                                 std::string* error);

}  // namespace eldric::server
