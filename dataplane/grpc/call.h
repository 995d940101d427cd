#pragma once

// One gRPC call's state (internal to the Channel; see channel.h).

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dataplane/common/buffer.h"
#include "dataplane/grpc/channel.h"
#include "dataplane/grpc/framing.h"
#include "dataplane/grpc/status.h"

namespace eldric::grpc::detail {

class Session;

// One call's state, shared by the caller's Stream handle and the session
// carrying it: either may go first.
struct Call {
  Call(std::string p, StreamCallbacks* cb, size_t max_receive)
      : path(std::move(p)), callbacks(cb), deframer(max_receive) {}

  // Delivers onClose at most once; afterwards the call is inert.
  void end(int status, std::string message) {
    if (!callbacks) return;
    StreamCallbacks* cb = callbacks;
    callbacks = nullptr;
    cb->onClose(status, std::move(message));
  }

  std::string path;
  std::vector<std::pair<std::string, std::string>> metadata;  // extra request headers
  StreamCallbacks* callbacks;  // null once ended, cancelled or silenced
  Session* session = nullptr;  // queued on or open on; null once the session is gone
  int32_t stream_id = -1;      // -1 until submitted to nghttp2
  uint64_t deadline_ms = 0;    // dispatcher time; 0: none

  Buffer send_queue;         // framed messages not yet taken by nghttp2
  bool send_closed = false;  // closeSend() called
  bool deferred = false;     // the data source is parked (NGHTTP2_ERR_DEFERRED)

  Deframer deframer;
  int http_status = 0;
  bool got_headers = false;
  std::string content_type;
  bool has_grpc_status = false;
  int grpc_status = kUnknown;
  std::string grpc_message;
};

}  // namespace eldric::grpc::detail
