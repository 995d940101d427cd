#pragma once

// The admin REST API's semantics (/api/v1/clients..., /api/v1/plugins...,
// /api/v1/farm), defined once over the Store: the standalone Edge calls it
// in-process, the control plane calls it for REST requests its data planes
// forward (Admin.HandleRest). Same JSON either way.

#include <cstdint>
#include <functional>
#include <string>

#include "controlplane/core/store.h"
#include "eldric/edge/v1/admin.pb.h"
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
  // GET /api/v1/certificates, POST /api/v1/certificates/renew.
  RestReply handleCertificatesRest(const AdminContext& ctx, const std::string& method,
                                   const std::string& path);

  // GET /api/v1/farm. "farm": the members a control plane knows; "single":
  // a standalone Edge, the one member being itself (no control plane, so
  // its "connected" and report times are null).
  std::string mode = "single";
  std::function<void(edge::v1::FarmStatus* out)> farm_status;
  // Optional, where plugins run (the standalone Edge): a plugin's runtime
  // status as a JSON object, shown as "runtime" ("" if it does not run
  // here); `detailed` adds its valves schema and description.
  std::function<std::string(const std::string& id, bool detailed)> plugin_runtime;
  // Optional: checks valves against the running plugin's schema before
  // they are stored; false with `*error` and the `*field` at fault.
  std::function<bool(const std::string& id, const std::string& valves_json, std::string* error,
                     std::string* field)>
      check_valves;
  // GET /api/v1/certificates: a JSON array of what each TLS listener
  // serves (see acme/certificates.h). Unset: an empty list.
  std::function<std::string()> certificates_json;
  // POST /api/v1/certificates/renew: orders a new ACME certificate now;
  // false with `*why` when it cannot start (one is under way: 409).
  // Unset: there is no ACME certificate here to renew (409).
  std::function<bool(std::string* why)> renew_certificates;
};

// Handles METHOD PATH (path without query) with BODY. Sets `*changed` when
// the store changed (the caller rebuilds and pushes the snapshot, then
// answers). Logs registrations by name and key prefix only.
RestReply handleClientsRest(const AdminContext& ctx, const std::string& method,
                            const std::string& path, const std::string& body, bool* changed);

// /api/v1/plugins, /api/v1/plugins/{id}, .../{id}/enable, .../{id}/disable,
// .../{id}/valves. Plugins are plain state here (the data plane does not
// run them yet). Valves may hold secrets: nothing here logs them, and an
// error about a valves body names the JSON error and its offset only.
RestReply handlePluginsRest(const AdminContext& ctx, const std::string& method,
                            const std::string& path, const std::string& body, bool* changed);

// GET /api/v1/certificates, POST /api/v1/certificates/renew.
RestReply handleCertificatesRest(const AdminContext& ctx, const std::string& method,
                                 const std::string& path);

// GET /api/v1/farm.
RestReply handleFarmRest(const AdminContext& ctx, const std::string& method,
                         const std::string& path);

// Every admin route above, by path; anything else under /api/v1 is a 404.
RestReply handleAdminRest(const AdminContext& ctx, const std::string& method,
                          const std::string& path, const std::string& body, bool* changed);

}  // namespace eldric::controlplane
