#pragma once

// Helpers shared by crypto.cc and store.cc that are not part of the public
// interface in store.h.

#include <cstddef>
#include <string>

namespace eldric::crypto::internal {

// `bytes` bytes from the kernel CSPRNG as 2 * bytes lowercase hex characters.
std::string randomHex(size_t bytes);

}  // namespace eldric::crypto::internal
