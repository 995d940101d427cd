#pragma once

// The SnapshotDiscovery stream of one data plane, as the control plane
// serves it (gRPC's callback API: a reactor per stream, no thread), and
// the shared wire form of what it sends.

#include <grpcpp/grpcpp.h>

#include <cstddef>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "eldric/edge/v1/discovery.grpc.pb.h"

namespace eldric::controlplane {

// A DiscoveryResponse as it goes on the wire, serialized once and shared:
// the stream is a raw (ByteBuffer) method, and a ByteBuffer copy only
// takes references to the same slices. A snapshot pushed to N streams is
// then encoded once, not N times while the admin call that changed it
// waits, and N streams hold references to one copy of its bytes, not a
// copy each.
struct Outbound {
  grpc::ByteBuffer bytes;
  bool snapshot = false;
  std::string version;  // of the snapshot
  std::string nonce;
};
using OutboundPtr = std::shared_ptr<const Outbound>;

OutboundPtr encode(const edge::v1::DiscoveryResponse& msg);

class DiscoveryStream;

// What a stream reports to the control plane, on gRPC's threads.
class DiscoveryStreamHandler {
 public:
  virtual ~DiscoveryStreamHandler() = default;
  // Whether this caller may subscribe at all (a farm's member token); a
  // refusal ends the call with this status before any message.
  virtual grpc::Status admit(const grpc::CallbackServerContext& ctx) { return grpc::Status::OK; }
  // The first message, its node id checked.
  virtual void onHello(DiscoveryStream* s, const edge::v1::DiscoveryRequest& req) = 0;
  // Every later message.
  virtual void onRequest(DiscoveryStream* s, const edge::v1::DiscoveryRequest& req) = 0;
  // The stream is over (gRPC's OnDone).
  virtual void onDone(DiscoveryStream* s) = 0;
};

// One data plane's stream. Reads are sequential (one StartRead at a time,
// re-armed in OnReadDone). Writes are queued and go out one at a time; a
// queued snapshot or farm-usage message that has not started yet is
// replaced by a newer one of the same kind, so a slow data plane costs at
// most one pending message of each kind, never a growing queue.
//
// A raw method: requests arrive as bytes and are parsed here, responses
// leave as the shared bytes of an Outbound.
class DiscoveryStream : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  DiscoveryStream(DiscoveryStreamHandler* handler, grpc::CallbackServerContext* ctx)
      : handler_(handler), peer_(ctx->peer()) {
    // With client certificates (--client-ca) a member is who its
    // certificate says: its node id must be the certificate's common name
    // or one of its DNS names, so that no member can report as another or
    // take over its stream.
    std::shared_ptr<const grpc::AuthContext> auth = ctx->auth_context();
    if (auth && auth->IsPeerAuthenticated()) {
      certified_ = true;
      for (const char* property : {GRPC_X509_CN_PROPERTY_NAME, GRPC_PEER_DNS_PROPERTY_NAME}) {
        for (const grpc::string_ref& v : auth->FindPropertyValues(property)) {
          cert_names_.emplace_back(v.data(), v.size());
        }
      }
    }
  }

  // self_ is set on the thread that made the reactor and taken in OnDone on
  // another; gRPC orders the two, under locks TSan cannot see (libgrpc is
  // not instrumented), so mu_ says it too.
  void begin(std::shared_ptr<DiscoveryStream> self) {
    {
      std::lock_guard<std::mutex> l(mu_);
      self_ = std::move(self);
    }
    StartRead(&req_bytes_);
  }
  std::shared_ptr<DiscoveryStream> self() const {
    std::lock_guard<std::mutex> l(mu_);
    return self_;
  }
  const std::string& nodeId() const { return node_id_; }
  const std::string& peer() const { return peer_; }

  // Queues `msg`. True when the caller should kick() (after releasing its
  // locks). Called with the control plane's streams_mu_ held.
  bool push(OutboundPtr msg) {
    std::lock_guard<std::mutex> l(mu_);
    if (closing_) return false;
    bool snapshot = msg->snapshot;
    queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                [&](const OutboundPtr& q) { return q->snapshot == snapshot; }),
                 queue_.end());
    queue_.push_back(std::move(msg));
    return !writing_;
  }
  // A message for this stream alone (farm usage): encoded here.
  bool push(std::shared_ptr<const edge::v1::DiscoveryResponse> msg) { return push(encode(*msg)); }

  // Starts the next write if none is in flight. Call with no lock held.
  void kick() {
    std::unique_lock<std::mutex> l(mu_);
    if (writing_ || closing_ || queue_.empty()) return;
    const grpc::ByteBuffer* msg = takeNextLocked();
    l.unlock();
    StartWrite(msg);
  }

  // Ends the stream with `status` once the write in flight (if any) is done.
  void close(grpc::Status status) {
    std::unique_lock<std::mutex> l(mu_);
    if (finished_ || finish_pending_) return;
    closing_ = true;
    queue_.clear();
    if (writing_) {
      finish_pending_ = true;
      final_status_ = std::move(status);
      return;
    }
    finished_ = true;
    l.unlock();
    Finish(std::move(status));
  }

  bool isClosing() {
    std::lock_guard<std::mutex> l(mu_);
    return closing_;
  }

  // The version of the snapshot sent with `nonce`, or "" if unknown.
  std::string versionForNonce(const std::string& nonce) {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [n, v] : sent_) {
      if (n == nonce) return v;
    }
    return "";
  }

  void OnReadDone(bool ok) override;

  void OnWriteDone(bool ok) override {
    std::unique_lock<std::mutex> l(mu_);
    in_flight_.reset();
    writing_ = false;
    if (finish_pending_) {
      finish_pending_ = false;
      finished_ = true;
      grpc::Status status = std::move(final_status_);
      l.unlock();
      Finish(std::move(status));
      return;
    }
    if (!ok) {
      // The stream is broken; the pending read fails too and finishes it.
      closing_ = true;
      queue_.clear();
      return;
    }
    if (closing_ || queue_.empty()) return;
    const grpc::ByteBuffer* msg = takeNextLocked();
    l.unlock();
    StartWrite(msg);
  }

  void OnDone() override {
    // The last reaction: after it gRPC no longer touches this object. It
    // is freed when the last holder (the control plane's map, a pusher's
    // copy, or `self`) lets go.
    std::shared_ptr<DiscoveryStream> self;
    {
      std::lock_guard<std::mutex> l(mu_);
      self = std::move(self_);
      closing_ = true;
      finished_ = true;
      queue_.clear();
    }
    handler_->onDone(this);
  }

 private:
  // Snapshots sent on a stream whose nonces are remembered, so that a NACK
  // can name the version it rejected.
  static constexpr size_t kRememberedNonces = 8;

  const grpc::ByteBuffer* takeNextLocked() {
    writing_ = true;
    in_flight_ = std::move(queue_.front());
    queue_.pop_front();
    if (in_flight_->snapshot) {
      sent_.emplace_back(in_flight_->nonce, in_flight_->version);
      if (sent_.size() > kRememberedNonces) sent_.pop_front();
    }
    return &in_flight_->bytes;
  }

  DiscoveryStreamHandler* handler_;
  std::string peer_;
  std::shared_ptr<DiscoveryStream> self_;
  // Touched by reactions only, which gRPC runs one at a time for reads.
  grpc::ByteBuffer req_bytes_;
  edge::v1::DiscoveryRequest req_;
  std::string node_id_;
  bool certified_ = false;               // the peer showed a client certificate we verified
  std::vector<std::string> cert_names_;  // its CN and DNS names

  mutable std::mutex mu_;
  std::deque<OutboundPtr> queue_;
  // Kept alive until OnWriteDone, as StartWrite requires.
  OutboundPtr in_flight_;
  bool writing_ = false;
  bool closing_ = false;  // no more writes
  bool finish_pending_ = false;
  bool finished_ = false;
  grpc::Status final_status_;
  std::deque<std::pair<std::string, std::string>> sent_;  // nonce, version
};

class DiscoveryService final
    : public edge::v1::SnapshotDiscovery::WithRawCallbackMethod_StreamSnapshots<
          edge::v1::SnapshotDiscovery::Service> {
 public:
  explicit DiscoveryService(DiscoveryStreamHandler* handler) : handler_(handler) {}
  grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer>* StreamSnapshots(
      grpc::CallbackServerContext* ctx) override {
    if (grpc::Status status = handler_->admit(*ctx); !status.ok()) return new Refused(status);
    auto s = std::make_shared<DiscoveryStream>(handler_, ctx);
    DiscoveryStream* raw = s.get();
    raw->begin(std::move(s));
    return raw;
  }

 private:
  // A call refused before it starts: finished at once, freed when gRPC is
  // done with it.
  class Refused : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
   public:
    explicit Refused(const grpc::Status& status) { Finish(status); }
    void OnDone() override { delete this; }
  };

  DiscoveryStreamHandler* handler_;
};

}  // namespace eldric::controlplane
