#pragma once

// The little cryptography the store and the build tools need, without a TLS
// library (this is linked into binaries that use BoringSSL and into ones
// that use OpenSSL 3 through gRPC): SHA-256, a constant-time compare, and
// API keys from the kernel's CSPRNG.

#include <cstddef>
#include <string>

namespace eldric::crypto {

// SHA-256 of `data` as 64 lowercase hex characters.
std::string sha256Hex(const std::string& data);
// Raw 32-byte digest.
void sha256(const void* data, size_t len, unsigned char out[32]);
// Compares in time independent of where the inputs differ.
bool constantTimeEquals(const std::string& a, const std::string& b);
// A new API key from the kernel's CSPRNG: "sk-" + 48 base62 characters.
std::string generateApiKey();
// The visible prefix kept for a key: its first 10 characters, and never
// more than a quarter of it.
std::string keyPrefix(const std::string& key);

}  // namespace eldric::crypto
