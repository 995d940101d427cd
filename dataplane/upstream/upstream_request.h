#pragma once

// The seam under the router: one request's exchange with one upstream host,
// whatever carries it. The router decides which host, how long, whether to
// retry and when to stop reading (policy); an UpstreamRequest only moves
// the request out and the response back (transport). HTTP/1.1 over a pooled
// TCP connection implements it today (Http1Upstream); a NAT tunnel, whose
// worker long-polls the Edge instead of accepting a connection, and an
// HTTP/2 upstream implement it next, each with its own UpstreamFactory.

#include <memory>
#include <string>

#include "dataplane/common/buffer.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/headers.h"
#include "dataplane/upstream/host.h"

namespace eldric::upstream {

// Why an exchange ended without a complete response. What the router does
// with each (retry, 502/503, end the client's stream) is its policy.
enum class UpstreamFailure {
  // No connection could be made to the host: nothing of the request left.
  ConnectFailed,
  // The connection closed before a byte of the response: the request may
  // have been received. On a reused keep-alive connection this is usually
  // the upstream closing it while idle, not the host's fault.
  ClosedBeforeResponse,
  // The upstream answered something that is not a valid response (or a
  // response head cut short): the host misbehaved.
  BadResponse,
  // The response head arrived but its body did not complete.
  Reset,
};

// The router's side: the response as it arrives. Each may be called from
// inside another UpstreamRequest call; none after reset().
class UpstreamCallbacks {
 public:
  virtual ~UpstreamCallbacks() = default;
  virtual void onUpstreamHeaders(http::ResponseHeadersPtr headers, bool end_stream) = 0;
  // Consumes `data`.
  virtual void onUpstreamData(Buffer& data, bool end_stream) = 0;
  // The exchange is over; no callback follows.
  virtual void onUpstreamFailure(UpstreamFailure failure, const std::string& message) = 0;
};

// One exchange. When the response completes, the transport is handed back
// for reuse before the last callback, so whatever that callback does (the
// client's stream completing, the router going away) cannot close a
// reusable connection. Deleted through the dispatcher (deferredDelete): a
// callback may be the reason its owner lets go of it.
class UpstreamRequest : public DeferredDeletable {
 public:
  // `headers` are the request as the upstream must see it (the router has
  // rewritten them); the request is complete with `end_stream`.
  virtual void encodeHeaders(const http::RequestHeaders& headers, bool end_stream) = 0;
  // Consumes `data`.
  virtual void encodeData(Buffer& data, bool end_stream) = 0;
  // Stops / resumes reading the response (the client reads slower than the
  // upstream writes). Not counted: the router toggles it.
  virtual void readDisable(bool disable) = 0;
  // Abandons the exchange: no more callbacks; the transport is closed, not
  // reused. Safe to call more than once, and after completion.
  virtual void reset() = 0;
  // Whether the request went out on a transport that carried an earlier one.
  virtual bool reusedConnection() const = 0;
};
using UpstreamRequestPtr = std::unique_ptr<UpstreamRequest>;

// Makes the exchanges for the hosts of a kind of cluster, on one worker
// thread (it owns that thread's pools).
class UpstreamFactory {
 public:
  virtual ~UpstreamFactory() = default;
  // An exchange with `host` of `cluster` (both outlive it). Nothing is sent
  // before encodeHeaders(); failures arrive through `callbacks`, never
  // from this call.
  virtual UpstreamRequestPtr newRequest(const ClusterInfo& cluster, const HostSharedPtr& host,
                                        UpstreamCallbacks& callbacks) = 0;
};

}  // namespace eldric::upstream
