#pragma once

// gRPC status codes and the mappings the HTTP/2 transport needs
// (grpc/grpc doc/PROTOCOL-HTTP2.md and doc/http-grpc-status-mapping.md).

#include <cstdint>
#include <string>
#include <string_view>

namespace eldric::grpc {

enum StatusCode : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// A non-200 HTTP :status on a gRPC response (a proxy answered, not a gRPC
// server).
int statusFromHttp(int http_status);
// An RST_STREAM error code received before the call's trailers.
int statusFromH2Error(uint32_t h2_error);
// grpc-message is percent-encoded on the wire; malformed escapes are kept.
std::string percentDecode(std::string_view in);
// The grpc-timeout header value for `ms` milliseconds: at most 8 digits,
// in the finest unit that fits ("250m", "100000S").
std::string encodeTimeout(uint64_t ms);

}  // namespace eldric::grpc
