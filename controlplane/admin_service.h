#pragma once

// The Admin gRPC service (eldricctl, and the admin REST calls that members
// carry to HandleRest): a synchronous service whose every call is first
// authorized by an admin key in its metadata, then answered by
// ControlPlane::Impl's admin handlers (admin_service.cc).

#include <grpcpp/grpcpp.h>

#include <memory>

#include "controlplane/server.h"

namespace eldric::controlplane {

std::unique_ptr<grpc::Service> newAdminService(ControlPlane::Impl* impl);

}  // namespace eldric::controlplane
