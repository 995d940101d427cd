#pragma once

// The NAT tunnel (the seed's /api/v1/tunnel/* endpoints): workers behind
// NAT long-poll the Edge for inference requests that routers forward to
// them, and post the answers back on the same outbound connections.
//
//   POST /api/v1/tunnel/connect               worker key: opens a tunnel
//   GET  /api/v1/tunnel/{id}/poll             worker key: parks up to poll_timeout
//   POST /api/v1/tunnel/{id}/forward[/path]   router or admin key: a request for it
//   POST /api/v1/tunnel/{id}/response/{req}   worker key: the answer, streamed
//   POST /api/v1/tunnel/{id}/disconnect       worker key: closes it
//   GET  /api/v1/tunnel/workers               router or admin key: every tunnel
//
// Threads: a poll, the forward it serves and the worker's response may
// each be on another worker thread. The TunnelService (one per process)
// holds the tunnels under a mutex; what reaches a stream is posted to that
// stream's loop, and a stream that went away in the meantime is noticed
// there (a request handed to a poll that just closed goes back to the
// queue; an answer for a router that went away fails the worker's POST).

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/http/filter.h"
#include "dataplane/http/http1_client.h"

namespace eldric::filters::tunnel {

// Every limit has a default here and a knob in the config ("tunnel").
struct TunnelLimits {
  uint64_t poll_timeout_ms = 30000;        // a poll with nothing to do: 204 then
  uint32_t queue_depth = 64;               // requests waiting for a poll, per tunnel
  uint64_t queue_timeout_ms = 30000;       // waited that long for a poll: 504
  uint64_t first_byte_timeout_ms = 60000;  // delivered, no answer started: 504
  uint64_t max_answer_bytes = 64u << 20;   // a worker's answer
  // A router's forward (its body goes to the worker inside the poll's
  // JSON, at most 6 times as long escaped): limits.max_body_bytes.
  uint64_t max_forward_bytes = 10u << 20;
  uint32_t tunnels_per_key = 8;
  uint32_t max_concurrent = 64;  // a worker's declared maximum is capped here
};

// The router's side of one request, called on the forwarding stream's loop.
class ForwardSink {
 public:
  virtual ~ForwardSink() = default;
  virtual void onDelivered() = 0;
  virtual void onHead(int status, const std::string& content_type) = 0;
  virtual void onData(const std::string& bytes, bool end) = 0;
  virtual void onFailure(int status, const std::string& code, const std::string& message) = 0;
};

// The worker's side of an answer, called on its POST's loop: the router
// took enough of what was sent for the worker to go on.
class AnswerSink {
 public:
  virtual ~AnswerSink() = default;
  virtual void onResume() = 0;
};

// How much of an answer may be on its way between the worker's POST and
// the router's connection before the worker's POST stops being read.
inline constexpr uint64_t kAnswerHighBytes = 1u << 20;
inline constexpr uint64_t kAnswerLowBytes = 256u << 10;

struct TunnelRequest {
  std::string id;  // 128 random bits
  std::string tunnel_id;
  std::string method;
  std::string path;
  std::string content_type;
  std::string accept;
  std::string body;
  Dispatcher* forward_loop = nullptr;
  std::weak_ptr<ForwardSink> sink;
  // The router's stream ended (gone, or timed out): nothing goes to it.
  std::atomic<bool> cancelled{false};
  std::atomic<uint64_t> answer_bytes{0};
  bool answering = false;  // a response POST took it (under the service's mutex)
  // Flow control of the answer: bytes posted to the router's loop and not
  // yet written to its connection; whether that connection is above its
  // high watermark; whether the worker's POST is paused for either.
  // Whoever clears `answer_paused` (exchange) resumes the POST, on its loop.
  std::atomic<uint64_t> in_transit{0};
  std::atomic<bool> router_full{false};
  std::atomic<bool> answer_paused{false};
  // Set by the response POST before it may pause (read after answer_paused).
  Dispatcher* answer_loop = nullptr;
  std::weak_ptr<AnswerSink> answer_sink;
  // Resumes the worker's POST if it is paused and the router has room.
  void resumeAnswerIfRoom();
};
using TunnelRequestPtr = std::shared_ptr<TunnelRequest>;

// A parked poll, called on its stream's loop.
class PollSink {
 public:
  virtual ~PollSink() = default;
  virtual void onRequest(TunnelRequestPtr request) = 0;
  virtual void onClosed(const std::string& why) = 0;  // the tunnel went away
};

struct TunnelInfo {
  std::string id;
  std::string worker_id;
  std::string client_name;
  std::vector<std::string> models;
  uint32_t max_concurrent = 1;
  uint64_t connected_unix_ms = 0;
  uint64_t last_poll_unix_ms = 0;
  size_t in_flight = 0;
  size_t queued = 0;
  size_t parked = 0;
};

// Another farm member's tunnel, from the control plane's directory.
struct RemoteTunnel {
  TunnelInfo info;
  std::string member_id;
  std::string relay_url;
};

class TunnelService {
 public:
  struct Stats {
    std::atomic<uint64_t> connects{0}, reaped{0}, forwarded_ok{0}, forwarded_failed{0},
        queue_full{0}, no_poll{0}, no_answer{0}, relayed{0}, relay_failed{0};
  };

  explicit TunnelService(TunnelLimits limits = {}) : limits_(limits) {}
  void setLimits(const TunnelLimits& limits);
  TunnelLimits limits() const;

  // Opens a tunnel for the key (its SHA-256 hex); the same worker id on the
  // same key replaces its old tunnel (whose waiting requests get 503).
  // False with `*status`/`*error` (429 past tunnels_per_key).
  bool connect(const std::string& key_sha, const std::string& client_name,
               const std::string& worker_id, std::vector<std::string> models,
               uint32_t max_concurrent, std::string* tunnel_id, int* status, std::string* error);
  // The tunnel, if `key_sha` opened it. 404 if unknown, 403 if another key's.
  int check(const std::string& tunnel_id, const std::string& key_sha);
  // Parks a poll; a queued request is handed over at once (returned).
  // `*serial` names the parked poll for unpark(). Error status otherwise
  // (404, 403, 429: more polls than the worker's maximum).
  int park(const std::string& tunnel_id, const std::string& key_sha, Dispatcher& loop,
           std::weak_ptr<PollSink> sink, TunnelRequestPtr* now, uint64_t* serial);
  void unpark(const std::string& tunnel_id, uint64_t serial);
  // A request handed to a poll whose stream had closed: first in line again.
  void requeue(TunnelRequestPtr request);
  // A router's request: to a parked poll, or queued. Error status
  // otherwise (404 unknown tunnel, 503 queue full).
  int forward(TunnelRequestPtr request, std::string* error);
  // The router went away or gave up: the request leaves the queue.
  void cancel(const TunnelRequestPtr& request);
  // A worker's answer begins: the request it answers (delivered to one of
  // its polls, not answered yet). 404/403/409 otherwise.
  int startAnswer(const std::string& tunnel_id, const std::string& key_sha,
                  const std::string& request_id, TunnelRequestPtr* out);
  void finish(const TunnelRequestPtr& request);
  // Ends a tunnel: queued and in-flight requests get 503, parked polls 410.
  int disconnect(const std::string& tunnel_id, const std::string& key_sha);
  std::vector<TunnelInfo> list();
  // Tunnels no poll came for in 3 poll timeouts are closed.
  void reap(uint64_t now_ms);

  // Farm mode. This member's id, sent with a relayed forward, and the
  // trust for members reached over https (null: the system's CAs are not
  // loaded, so https relays fail).
  void setRelay(std::string self_id, std::shared_ptr<SSL_CTX> tls);
  std::string selfId() const;
  // The other members' tunnels (replaces the last directory). Called on
  // the main thread: a relay URL with a host name is looked up here, once.
  void setDirectory(std::vector<RemoteTunnel> remote);
  std::vector<RemoteTunnel> directory() const;
  // Where to relay a forward for `tunnel_id`, if another member holds it.
  std::shared_ptr<const http::ClientTarget> relayTarget(const std::string& tunnel_id,
                                                        std::string* member_id) const;

  Stats& stats() { return stats_; }

 private:
  struct Poll {
    uint64_t serial;
    Dispatcher* loop;
    std::weak_ptr<PollSink> sink;
  };
  struct Tunnel {
    TunnelInfo info;
    std::string key_sha;
    uint64_t last_poll_ms = 0;  // monotonic
    std::deque<TunnelRequestPtr> queue;
    std::deque<Poll> polls;
    std::map<std::string, TunnelRequestPtr> delivered;  // by request id
  };
  // Under mutex_: hands `request` to the first parked poll, if any.
  bool deliverLocked(Tunnel& t, const TunnelRequestPtr& request);
  // Under mutex_: takes the tunnel out and says so to everyone waiting.
  void closeLocked(std::map<std::string, std::shared_ptr<Tunnel>>::iterator it,
                   const std::string& why);

  mutable std::mutex mutex_;
  TunnelLimits limits_;
  std::string self_id_;
  std::shared_ptr<SSL_CTX> relay_tls_;
  std::vector<std::shared_ptr<SSL_CTX>> retired_tls_;  // a relay under way may use one
  // tunnel id -> its entry; relay URL -> where it connects
  std::map<std::string, RemoteTunnel> remote_;
  std::map<std::string, std::shared_ptr<const http::ClientTarget>> targets_;
  std::map<std::string, std::shared_ptr<Tunnel>> tunnels_;
  uint64_t next_serial_ = 1;
  Stats stats_;
};

// The registry's "tunnel" handler for /api/v1/tunnel/*.
http::FilterFactory makeFactory(std::shared_ptr<TunnelService> service);

}  // namespace eldric::filters::tunnel
