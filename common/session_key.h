#pragma once

// The key that signs web chat session cookies: 32 random bytes in
// <dir>/session.key, mode 0600, made once and kept so that sessions
// outlive a restart. The control plane keeps one for the whole farm (a
// session is then valid on every member); a standalone Edge keeps its own.

#include <string>

namespace eldric {

// Reads <dir>/session.key into `*key`, creating it first (from getrandom,
// file and directory entry fsynced) if it does not exist. False with
// `*error` set if it cannot be made or is not 32 bytes.
bool loadSessionKey(const std::string& dir, std::string* key, std::string* error);

}  // namespace eldric
