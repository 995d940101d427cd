#include "dataplane/grpc/framing.h"

namespace eldric::grpc {

std::string framePrefix(uint32_t length) {
  std::string p(kFrameHeaderSize, '\0');
  p[1] = static_cast<char>(length >> 24);
  p[2] = static_cast<char>(length >> 16);
  p[3] = static_cast<char>(length >> 8);
  p[4] = static_cast<char>(length);
  return p;
}

}  // namespace eldric::grpc
