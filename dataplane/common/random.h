#pragma once

// A fast per-thread PRNG (xoshiro256**) seeded from the kernel, for load
// balancing and request ids: no syscall and no lock per call. Not for keys
// or tokens (use RAND_bytes for those).

#include <cstdint>
#include <string>

namespace eldric::random {

uint64_t next();
// 32 lowercase hex characters (128 random bits) in UUID layout.
std::string uuid();

}  // namespace eldric::random
