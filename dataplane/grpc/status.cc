#include "dataplane/grpc/status.h"

#include "common/hex.h"

namespace eldric::grpc {

int statusFromHttp(int http_status) {
  switch (http_status) {
    case 400:
      return kInternal;
    case 401:
      return kUnauthenticated;
    case 403:
      return kPermissionDenied;
    case 404:
      return kUnimplemented;
    case 429:
    case 502:
    case 503:
    case 504:
      return kUnavailable;
    default:
      return kUnknown;
  }
}

int statusFromH2Error(uint32_t h2_error) {
  switch (h2_error) {
    case 0x7:  // REFUSED_STREAM: the server did not process it; safe to retry
      return kUnavailable;
    case 0x8:  // CANCEL
      return kCancelled;
    case 0xb:  // ENHANCE_YOUR_CALM
      return kResourceExhausted;
    case 0xc:  // INADEQUATE_SECURITY
      return kPermissionDenied;
    default:  // NO_ERROR before trailers, PROTOCOL_ERROR, INTERNAL_ERROR, ...
      return kInternal;
  }
}

std::string percentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      int hi = hexDigitValue(in[i + 1]);
      int lo = hexDigitValue(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out.push_back(in[i]);
  }
  return out;
}

std::string encodeTimeout(uint64_t ms) {
  constexpr uint64_t kMax = 99999999;  // the spec allows 8 digits
  if (ms <= kMax) return std::to_string(ms) + "m";
  uint64_t s = (ms + 999) / 1000;
  if (s <= kMax) return std::to_string(s) + "S";
  uint64_t h = (s + 3599) / 3600;
  return std::to_string(h > kMax ? kMax : h) + "H";
}

}  // namespace eldric::grpc
