#pragma once

// GET /api/v1/certificates: what each TLS listener of a snapshot serves.
// A file's certificate is read from the snapshot (names, issuer, validity);
// an ACME listener's comes from the Manager with its last attempt. Built by
// whoever owns the Manager (the control plane, or a standalone Edge).

#include <string>

#include "controlplane/core/acme/manager.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::controlplane::acme {

// Appends `,"names":[...],"subject":..,"issuer":..,"not_before":..,
// "not_after":..,"expires_in_seconds":..` to a JSON object being written.
void appendCertificateInfo(std::string& out, const pki::CertificateInfo& info, int64_t now);

// A JSON array, one object per certificate. `acme` may be null (no ACME
// here, or a farm member: then an ACME listener's entry says so). `now`:
// Unix seconds, for expires_in_seconds.
std::string certificatesJson(const edge::v1::Snapshot& snapshot, const Manager* acme, int64_t now);

}  // namespace eldric::controlplane::acme
