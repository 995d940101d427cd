#pragma once

// The token a supervised farm's members present to the primary's control
// plane (metadata "eldric-farm-token", see common/config/farm_plan.h): hex
// HMAC-SHA256 keyed with the members' shared secret. The secret is
// farm.secret_file's first line when set, else the Edge's TLS private key
// (its PKCS#8 encoding, so a key stored as PKCS#1 on one member and PKCS#8
// on another gives the same token): whoever holds the key the farm serves
// with is a member, and nothing more needs distributing.

#include <string>

namespace eldric::tls {

// False with `*error` naming the file when the secret cannot be read (a
// secret file under 16 characters is refused).
bool farmToken(const std::string& secret_file, const std::string& key_file, std::string* token,
               std::string* error);

}  // namespace eldric::tls
