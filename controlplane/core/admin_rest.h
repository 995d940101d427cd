#pragma once

// The admin REST API's semantics (/api/v1/clients...), defined once over
// the Store: the standalone Edge calls it in-process, the control plane
// calls it for REST requests its data planes forward (Admin.HandleRest).
// Same JSON either way.

#include <cstdint>
#include <functional>
#include <string>

#include "controlplane/core/store.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane {

struct RestReply {
  int status = 200;
  std::string body;        // JSON on success; the message when status >= 400
  std::string error_code;  // when status >= 400
};

struct AdminContext {
  Store* store = nullptr;
  // Keys from the config file: listed read-only, never changed here.
  const edge::v1::Auth* config_auth = nullptr;
  // Default overlap for rotations.
  int64_t rotation_overlap_seconds = 3600;
  // Optional: the client's live usage as a JSON object
  // ({"requests_in_window":..,"tokens_in_window":..,"in_flight":..}).
  std::function<std::string(const std::string& client_id)> usage_json;
};

// Handles METHOD PATH (path without query) with BODY. Sets `*changed` when
// the store changed (the caller rebuilds and pushes the snapshot, then
// answers). Logs registrations by name and key prefix only.
RestReply handleClientsRest(const AdminContext& ctx, const std::string& method, const std::string& path,
                            const std::string& body, bool* changed);

}  // namespace eldric::controlplane
