#include "controlplane/discovery_stream.h"

#include <grpc/grpc_security_constants.h>

#include <algorithm>

#include "common/log.h"

namespace eldric::controlplane {

using edge::v1::DiscoveryRequest;
using edge::v1::DiscoveryResponse;

namespace {

constexpr size_t kMaxNodeIdLen = 256;

}  // namespace

OutboundPtr encode(const DiscoveryResponse& msg) {
  auto out = std::make_shared<Outbound>();
  bool own = false;
  grpc::Status status =
      grpc::SerializationTraits<DiscoveryResponse>::Serialize(msg, &out->bytes, &own);
  // Serializing an initialized proto3 message cannot fail but for size
  // (over 2 GB); the buffer is then empty and the data plane NACKs it.
  if (!status.ok()) {
    log::error("cannot serialize a discovery response",
               {{"error", log::str(status.error_message())}});
  }
  out->snapshot = msg.has_snapshot();
  out->version = msg.version_info();
  out->nonce = msg.nonce();
  return out;
}

void DiscoveryStream::OnReadDone(bool ok) {
  if (!ok) {
    // The data plane closed its side, went away, or the server is
    // stopping.
    close(grpc::Status::OK);
    return;
  }
  if (!grpc::SerializationTraits<DiscoveryRequest>::Deserialize(&req_bytes_, &req_).ok()) {
    log::warn("discovery stream refused",
              {{"peer", log::str(peer_)}, {"error", "\"unparsable DiscoveryRequest\""}});
    close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "unparsable DiscoveryRequest"));
    return;
  }
  if (node_id_.empty()) {
    const std::string& id = req_.node().id();
    std::string why;
    if (id.empty()) {
      why = "the first message on a stream must carry node.id";
    } else if (id.size() > kMaxNodeIdLen) {
      why = "node.id must be at most 256 characters";
    } else {
      for (char c : id) {
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          why = "node.id must not contain control characters";
        }
      }
    }
    if (!why.empty()) {
      log::warn("discovery stream refused", {{"peer", log::str(peer_)}, {"error", log::str(why)}});
      close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, why));
      return;
    }
    if (certified_ && std::find(cert_names_.begin(), cert_names_.end(), id) == cert_names_.end()) {
      std::string names;
      for (const auto& n : cert_names_) names += (names.empty() ? "" : ", ") + n;
      why = "node.id \"" + id +
            "\" is not a name of this member's client certificate (its common name or a DNS "
            "name: " +
            (names.empty() ? "none" : names) + ")";
      log::warn("discovery stream refused",
                {{"peer", log::str(peer_)}, {"node", log::str(id)}, {"error", log::str(why)}});
      close(grpc::Status(grpc::StatusCode::PERMISSION_DENIED, why));
      return;
    }
    node_id_ = id;
    handler_->onHello(this, req_);
  } else {
    handler_->onRequest(this, req_);
  }
  req_.Clear();
  if (isClosing()) {
    // Being closed (shutdown, or a failed write): read no more. close()
    // is idempotent and keeps the first status.
    close(grpc::Status::OK);
    return;
  }
  StartRead(&req_bytes_);
}

}  // namespace eldric::controlplane
