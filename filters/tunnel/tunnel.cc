#include "filters/tunnel/tunnel.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/address.h"
#include "common/json.h"
#include "common/log.h"
#include "dataplane/common/random.h"
#include "dataplane/http/errors.h"
#include "dataplane/http/path.h"
#include "dataplane/http/route.h"
#include "eldric/edge/v1/snapshot.pb.h"

namespace eldric::filters::tunnel {

namespace {

uint64_t monotonicMs() { return Dispatcher::monotonicNs() / 1000000; }

uint64_t unixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

std::string newId() {
  std::string u = random::uuid();
  u.erase(std::remove(u.begin(), u.end(), '-'), u.end());
  return u;
}

// Posts `fn(sink)` onto the request's forwarding loop, if the router still
// waits for it.
template <class Fn>
void toRouter(const TunnelRequestPtr& r, Fn&& fn) {
  // A router that went away hears nothing: no post to its loop at all.
  if (r->cancelled.load()) return;
  r->forward_loop->post([sink = r->sink, r, fn = std::forward<Fn>(fn)] {
    if (r->cancelled.load()) return;
    if (auto s = sink.lock()) fn(*s);
  });
}

// A connect's body: a worker id, its models and a number.
constexpr uint64_t kMaxConnectBytes = 128u << 10;

}  // namespace

void TunnelRequest::resumeAnswerIfRoom() {
  bool room = cancelled.load() || (!router_full.load() && in_transit.load() <= kAnswerLowBytes);
  if (!room || !answer_paused.exchange(false)) return;
  answer_loop->post([sink = answer_sink] {
    if (auto s = sink.lock()) s->onResume();
  });
}

// ---------------------------------------------------------------------------
// TunnelService

void TunnelService::setLimits(const TunnelLimits& limits) {
  std::lock_guard<std::mutex> l(mutex_);
  limits_ = limits;
}

TunnelLimits TunnelService::limits() const {
  std::lock_guard<std::mutex> l(mutex_);
  return limits_;
}

bool TunnelService::connect(const std::string& key_sha, const std::string& client_name,
                            const std::string& worker_id, std::vector<std::string> models,
                            uint32_t max_concurrent, std::string* tunnel_id, int* status,
                            std::string* error) {
  std::lock_guard<std::mutex> l(mutex_);
  size_t mine = 0;
  for (auto it = tunnels_.begin(); it != tunnels_.end();) {
    Tunnel& t = *it->second;
    if (t.key_sha == key_sha && t.info.worker_id == worker_id) {
      // The same worker again (it restarted, or lost its connection):
      // the old tunnel goes, cleanly.
      closeLocked(it++, "the worker connected again");
      continue;
    }
    if (t.key_sha == key_sha) ++mine;
    ++it;
  }
  if (mine >= limits_.tunnels_per_key) {
    *status = 429;
    *error = "this key has " + std::to_string(mine) + " tunnels open (tunnel.tunnels_per_key)";
    return false;
  }
  auto t = std::make_shared<Tunnel>();
  t->info.id = newId();
  t->info.worker_id = worker_id;
  t->info.client_name = client_name;
  t->info.models = std::move(models);
  t->info.max_concurrent = std::clamp<uint32_t>(max_concurrent, 1, limits_.max_concurrent);
  t->info.connected_unix_ms = unixMs();
  t->info.last_poll_unix_ms = 0;
  t->key_sha = key_sha;
  t->last_poll_ms = monotonicMs();
  *tunnel_id = t->info.id;
  tunnels_.emplace(t->info.id, std::move(t));
  stats_.connects.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int TunnelService::check(const std::string& tunnel_id, const std::string& key_sha) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return 404;
  return it->second->key_sha == key_sha ? 200 : 403;
}

int TunnelService::park(const std::string& tunnel_id, const std::string& key_sha, Dispatcher& loop,
                        std::weak_ptr<PollSink> sink, TunnelRequestPtr* now, uint64_t* serial) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return 404;
  Tunnel& t = *it->second;
  if (t.key_sha != key_sha) return 403;
  t.last_poll_ms = monotonicMs();
  t.info.last_poll_unix_ms = unixMs();
  while (!t.queue.empty()) {
    TunnelRequestPtr r = std::move(t.queue.front());
    t.queue.pop_front();
    if (r->cancelled.load()) continue;
    t.delivered.emplace(r->id, r);
    toRouter(r, [](ForwardSink& s) { s.onDelivered(); });
    *now = std::move(r);
    return 200;
  }
  // As many polls parked as the worker takes requests at once, no more.
  if (t.polls.size() + t.delivered.size() >= t.info.max_concurrent) return 429;
  *serial = next_serial_++;
  t.polls.push_back(Poll{*serial, &loop, std::move(sink)});
  return 0;
}

void TunnelService::unpark(const std::string& tunnel_id, uint64_t serial) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return;
  auto& polls = it->second->polls;
  polls.erase(std::remove_if(polls.begin(), polls.end(),
                             [serial](const Poll& p) { return p.serial == serial; }),
              polls.end());
}

bool TunnelService::deliverLocked(Tunnel& t, const TunnelRequestPtr& r) {
  while (!t.polls.empty()) {
    Poll p = std::move(t.polls.front());
    t.polls.pop_front();
    if (p.sink.expired()) continue;
    t.delivered.emplace(r->id, r);
    toRouter(r, [](ForwardSink& s) { s.onDelivered(); });
    p.loop->post([this, sink = p.sink, r] {
      if (auto s = sink.lock()) {
        s->onRequest(r);
      } else {
        requeue(r);  // that poll closed on its way
      }
    });
    return true;
  }
  return false;
}

void TunnelService::requeue(TunnelRequestPtr r) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(r->tunnel_id);
  if (it == tunnels_.end() || r->cancelled.load()) return;
  Tunnel& t = *it->second;
  t.delivered.erase(r->id);
  if (!deliverLocked(t, r)) t.queue.push_front(std::move(r));
}

int TunnelService::forward(TunnelRequestPtr r, std::string* error) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(r->tunnel_id);
  if (it == tunnels_.end()) {
    *error = "no tunnel " + r->tunnel_id + " (the worker is not connected)";
    return 404;
  }
  Tunnel& t = *it->second;
  if (deliverLocked(t, r)) return 200;
  if (t.queue.size() >= limits_.queue_depth) {
    stats_.queue_full.fetch_add(1, std::memory_order_relaxed);
    *error = "the worker's queue is full (tunnel.queue_depth " +
             std::to_string(limits_.queue_depth) + ")";
    return 503;
  }
  t.queue.push_back(std::move(r));
  return 200;
}

void TunnelService::cancel(const TunnelRequestPtr& r) {
  r->cancelled.store(true);
  // A worker's POST paused for this router must read on to learn it left.
  r->resumeAnswerIfRoom();
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(r->tunnel_id);
  if (it == tunnels_.end()) return;
  Tunnel& t = *it->second;
  t.queue.erase(std::remove(t.queue.begin(), t.queue.end(), r), t.queue.end());
  // A delivered one stays until the worker's answer (or its failure) says
  // so: its POST then learns the router went away.
  if (!r->answering) t.delivered.erase(r->id);
}

int TunnelService::startAnswer(const std::string& tunnel_id, const std::string& key_sha,
                               const std::string& request_id, TunnelRequestPtr* out) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return 404;
  Tunnel& t = *it->second;
  if (t.key_sha != key_sha) return 403;
  auto d = t.delivered.find(request_id);
  if (d == t.delivered.end()) return 404;
  if (d->second->answering) return 409;
  d->second->answering = true;
  *out = d->second;
  return 200;
}

void TunnelService::finish(const TunnelRequestPtr& r) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(r->tunnel_id);
  if (it == tunnels_.end()) return;
  it->second->delivered.erase(r->id);
}

void TunnelService::closeLocked(std::map<std::string, std::shared_ptr<Tunnel>>::iterator it,
                                const std::string& why) {
  std::shared_ptr<Tunnel> t = it->second;
  tunnels_.erase(it);
  for (auto* list : {&t->queue}) {
    for (auto& r : *list) {
      toRouter(r, [why](ForwardSink& s) { s.onFailure(503, "tunnel_closed", why); });
    }
  }
  for (auto& [id, r] : t->delivered) {
    toRouter(r, [why](ForwardSink& s) { s.onFailure(503, "tunnel_closed", why); });
  }
  for (auto& p : t->polls) {
    p.loop->post([sink = p.sink, why] {
      if (auto s = sink.lock()) s->onClosed(why);
    });
  }
}

int TunnelService::disconnect(const std::string& tunnel_id, const std::string& key_sha) {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = tunnels_.find(tunnel_id);
  if (it == tunnels_.end()) return 404;
  if (it->second->key_sha != key_sha) return 403;
  closeLocked(it, "the worker disconnected its tunnel");
  return 200;
}

std::vector<TunnelInfo> TunnelService::list() {
  std::lock_guard<std::mutex> l(mutex_);
  std::vector<TunnelInfo> out;
  for (const auto& [id, t] : tunnels_) {
    TunnelInfo i = t->info;
    i.in_flight = t->delivered.size();
    i.queued = t->queue.size();
    i.parked = t->polls.size();
    out.push_back(std::move(i));
  }
  return out;
}

void TunnelService::setRelay(std::string self_id, std::shared_ptr<SSL_CTX> tls) {
  std::lock_guard<std::mutex> l(mutex_);
  self_id_ = std::move(self_id);
  if (relay_tls_) retired_tls_.push_back(std::move(relay_tls_));
  relay_tls_ = std::move(tls);
  targets_.clear();
}

std::string TunnelService::selfId() const {
  std::lock_guard<std::mutex> l(mutex_);
  return self_id_;
}

void TunnelService::setDirectory(std::vector<RemoteTunnel> remote) {
  // Look up what is new outside the lock (a host name may take a while).
  std::map<std::string, std::shared_ptr<const http::ClientTarget>> targets;
  std::shared_ptr<SSL_CTX> tls;
  {
    std::lock_guard<std::mutex> l(mutex_);
    targets = targets_;
    tls = relay_tls_;
  }
  std::map<std::string, std::shared_ptr<const http::ClientTarget>> keep;
  for (const auto& r : remote) {
    if (keep.count(r.relay_url)) continue;
    if (auto it = targets.find(r.relay_url); it != targets.end()) {
      keep.emplace(r.relay_url, it->second);
      continue;
    }
    network::Url u;
    std::string why;
    auto t = std::make_shared<http::ClientTarget>();
    if (!network::parseUrl(r.relay_url, &u, &why)) {
      log::warn("a member's relay URL is not usable",
                {{"member", log::str(r.member_id)}, {"why", log::str(why)}});
      continue;
    }
    if (u.https && !tls) {
      // Never plaintext to a TLS port: the router's key goes with a relay.
      log::warn("a member's relay URL is https but this member has no trust to check it",
                {{"member", log::str(r.member_id)}});
      continue;
    }
    if (!http::makeClientTarget(u, tls.get(), t.get(), &why)) {
      log::warn("a member's relay host does not resolve",
                {{"member", log::str(r.member_id)}, {"why", log::str(why)}});
      continue;
    }
    t->connect_timeout_ms = 5000;
    keep.emplace(r.relay_url, std::move(t));
  }
  std::lock_guard<std::mutex> l(mutex_);
  remote_.clear();
  for (auto& r : remote) {
    if (!keep.count(r.relay_url) || tunnels_.count(r.info.id)) continue;
    std::string id = r.info.id;
    remote_.emplace(std::move(id), std::move(r));
  }
  targets_ = std::move(keep);
}

std::vector<RemoteTunnel> TunnelService::directory() const {
  std::lock_guard<std::mutex> l(mutex_);
  std::vector<RemoteTunnel> out;
  for (const auto& [id, r] : remote_) out.push_back(r);
  return out;
}

std::shared_ptr<const http::ClientTarget> TunnelService::relayTarget(const std::string& tunnel_id,
                                                                     std::string* member_id) const {
  std::lock_guard<std::mutex> l(mutex_);
  auto it = remote_.find(tunnel_id);
  if (it == remote_.end()) return nullptr;
  auto t = targets_.find(it->second.relay_url);
  if (t == targets_.end()) return nullptr;
  *member_id = it->second.member_id;
  return t->second;
}

void TunnelService::reap(uint64_t now_ms) {
  std::lock_guard<std::mutex> l(mutex_);
  for (auto it = tunnels_.begin(); it != tunnels_.end();) {
    Tunnel& t = *it->second;
    bool idle = t.polls.empty() && t.delivered.empty() &&
                now_ms - t.last_poll_ms > 3 * limits_.poll_timeout_ms;
    if (idle) {
      log::info("tunnel reaped: no poll in three poll timeouts",
                {{"tunnel", log::str(t.info.id)}, {"worker", log::str(t.info.worker_id)}});
      stats_.reaped.fetch_add(1, std::memory_order_relaxed);
      closeLocked(it++, "the worker stopped polling");
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------
// The handler

namespace {

constexpr std::string_view kPrefix = "/api/v1/tunnel/";

class TunnelFilter;

// The stream's side of a parked poll or a forward, outliving neither: the
// filter clears `filter` when its stream ends.
struct PollState : PollSink {
  TunnelFilter* filter = nullptr;
  TunnelService* service = nullptr;
  void onRequest(TunnelRequestPtr request) override;
  void onClosed(const std::string& why) override;
};

struct AnswerState : AnswerSink {
  TunnelFilter* filter = nullptr;
  void onResume() override;
};

struct ForwardState : ForwardSink {
  TunnelFilter* filter = nullptr;
  void onDelivered() override;
  void onHead(int status, const std::string& content_type) override;
  void onData(const std::string& bytes, bool end) override;
  void onFailure(int status, const std::string& code, const std::string& message) override;
};

// A forward relayed to the member that holds the tunnel: its answer is
// passed through as it comes.
struct RelayState : http::Http1Client::Handler, DeferredDeletable {
  RelayState(TunnelFilter& f, Dispatcher& d, std::shared_ptr<const http::ClientTarget> t,
             std::string m)
      : filter(f), target(std::move(t)), member(std::move(m)), client(d, *target) {}
  void onHeaders(const http::ResponseHeaders& headers, bool end) override;
  void onData(Buffer& data, bool end) override;
  void onError(const std::string& why) override;

  TunnelFilter& filter;
  std::shared_ptr<const http::ClientTarget> target;  // before client: it refers to it
  std::string member;
  http::Http1Client client;
};

class TunnelFilter : public http::StreamDecoderFilter, public http::DownstreamWatermarkCallbacks {
 public:
  explicit TunnelFilter(std::shared_ptr<TunnelService> service) : service_(std::move(service)) {}
  ~TunnelFilter() override { onDestroy(); }

  void setDecoderFilterCallbacks(http::DecoderFilterCallbacks& cb) override { cb_ = &cb; }
  http::FilterHeadersStatus decodeHeaders(http::RequestHeaders& headers, bool end_stream) override;
  http::FilterDataStatus decodeData(Buffer& data, bool end_stream) override;
  void onDestroy() override;

  // Poll
  void deliver(const TunnelRequestPtr& r);
  void pollClosed(const std::string& why);
  // Forward
  void delivered();
  void head(int status, const std::string& content_type);
  void data(const std::string& bytes, bool end);
  void failed(int status, const std::string& code, const std::string& message);
  // Response: the router has room again.
  void resumeAnswer();
  // Forward and relay: the router's connection is full, or has room again.
  void onAboveWriteBufferHighWatermark() override;
  void onBelowWriteBufferLowWatermark() override;
  // Relay
  void relayHead(const http::ResponseHeaders& headers, bool end);
  void relayData(Buffer& data, bool end);

 private:
  enum class Op { None, Connect, Poll, Forward, Response, Disconnect, Workers };

  void refuse(int status, const std::string& message, const std::string& code);
  void replyJson(int status, const std::string& body);
  bool needScope(bool router_side);
  std::string keyIdentity() const;
  void connect(const std::string& body);
  void startForward(const std::string& body);
  // Another member holds the tunnel: the forward goes there. False if the
  // directory does not name it (or this is already a relayed forward).
  bool relay(const std::string& body);
  void workers();

  std::shared_ptr<TunnelService> service_;
  http::DecoderFilterCallbacks* cb_ = nullptr;
  http::RequestHeaders* request_ = nullptr;
  Op op_ = Op::None;
  std::string tunnel_id_;
  std::string request_id_;
  std::string forward_path_;  // from .../forward/{path}, if given
  Buffer body_;
  // Poll
  std::shared_ptr<PollState> poll_;
  uint64_t poll_serial_ = 0;
  bool parked_ = false;
  TimerPtr timer_;
  // Forward
  std::shared_ptr<ForwardState> forward_;
  TunnelRequestPtr request_out_;
  bool head_sent_ = false;
  bool sse_ = false;
  bool done_ = false;
  std::unique_ptr<RelayState> relay_;
  bool watching_downstream_ = false;  // registered for the router's watermarks
  // Response
  TunnelRequestPtr answering_;
  std::shared_ptr<AnswerState> answer_state_;
  bool answer_paused_ = false;  // this stream's reading is disabled for the router
  bool answer_ended_ = false;
};

void PollState::onRequest(TunnelRequestPtr r) {
  if (filter) {
    filter->deliver(r);
  } else {
    // Gone between the hand-over and now: not lost, back in line.
    service->requeue(std::move(r));
  }
}
void PollState::onClosed(const std::string& why) {
  if (filter) filter->pollClosed(why);
}
void ForwardState::onDelivered() {
  if (filter) filter->delivered();
}
void ForwardState::onHead(int status, const std::string& ct) {
  if (filter) filter->head(status, ct);
}
void ForwardState::onData(const std::string& bytes, bool end) {
  if (filter) filter->data(bytes, end);
}
void ForwardState::onFailure(int status, const std::string& code, const std::string& message) {
  if (filter) filter->failed(status, code, message);
}

void TunnelFilter::refuse(int status, const std::string& message, const std::string& code) {
  done_ = true;
  cb_->sendLocalReply(http::ErrorReply{status, message, "", code});
}

void TunnelFilter::replyJson(int status, const std::string& body) {
  done_ = true;
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = status;
  if (body.empty()) {
    cb_->encodeHeaders(std::move(h), true);
    return;
  }
  h->headers.add("content-type", "application/json");
  h->headers.add("content-length", std::to_string(body.size()));
  cb_->encodeHeaders(std::move(h), false);
  Buffer b;
  b.add(body);
  cb_->encodeData(b, true);
}

std::string TunnelFilter::keyIdentity() const {
  const auto& who = cb_->streamInfo().identity;
  return who ? who->client_id + "/" + who->key_prefix : std::string();
}

// The worker's endpoints take a worker key; forward and workers a router
// key (or an admin's).
bool TunnelFilter::needScope(bool router_side) {
  const auto& who = cb_->streamInfo().identity;
  if (!who) {
    refuse(401, "an API key is needed here", "missing_api_key");
    return false;
  }
  bool ok = router_side
                ? (who->hasScope(edge::v1::SCOPE_ROUTER) || who->hasScope(edge::v1::SCOPE_ADMIN))
                : who->hasScope(edge::v1::SCOPE_WORKER);
  if (!ok) {
    refuse(403,
           router_side ? "forwarding to a tunnel needs a key with the router (or admin) scope"
                       : "a tunnel needs a key with the worker scope",
           "insufficient_scope");
  }
  return ok;
}

http::FilterHeadersStatus TunnelFilter::decodeHeaders(http::RequestHeaders& headers,
                                                      bool end_stream) {
  request_ = &headers;
  std::string_view path = headers.pathOnly();
  if (path.substr(0, kPrefix.size()) != kPrefix) {
    refuse(404, "no such tunnel endpoint", "not_found");
    return http::FilterHeadersStatus::StopIteration;
  }
  std::vector<std::string> parts;
  std::string_view rest = path.substr(kPrefix.size());
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    parts.emplace_back(rest.substr(0, slash));
    rest = slash == std::string_view::npos ? std::string_view() : rest.substr(slash + 1);
  }
  const std::string& m = headers.method;
  auto wrong = [&](const char* allowed) {
    cb_->sendLocalReply(
        http::ErrorReply{405, "use " + std::string(allowed) + " here", "", "method_not_allowed"},
        [allowed](http::ResponseHeaders& h) { h.headers.add("allow", allowed); });
    done_ = true;
    return http::FilterHeadersStatus::StopIteration;
  };
  if (parts.size() == 1 && parts[0] == "connect") {
    if (m != "POST") return wrong("POST");
    op_ = Op::Connect;
  } else if (parts.size() == 1 && parts[0] == "workers") {
    if (m != "GET") return wrong("GET");
    op_ = Op::Workers;
  } else if (parts.size() == 2 && parts[1] == "poll") {
    if (m != "GET") return wrong("GET");
    op_ = Op::Poll;
  } else if (parts.size() >= 2 && parts[1] == "forward") {
    if (m != "POST") return wrong("POST");
    op_ = Op::Forward;
    // .../forward/v1/chat/completions: the worker runs that path, so a
    // router (or an OpenAI SDK) can use .../forward/v1 as a base URL.
    if (parts.size() > 2) {
      size_t at = kPrefix.size() + parts[0].size() + sizeof("/forward") - 1;
      forward_path_ = std::string(path.substr(at)) + headers.path.substr(path.size());
    }
  } else if (parts.size() == 2 && parts[1] == "disconnect") {
    if (m != "POST") return wrong("POST");
    op_ = Op::Disconnect;
  } else if (parts.size() == 3 && parts[1] == "response") {
    if (m != "POST") return wrong("POST");
    op_ = Op::Response;
    request_id_ = parts[2];
  } else {
    refuse(404, "no such tunnel endpoint", "not_found");
    return http::FilterHeadersStatus::StopIteration;
  }
  if (op_ != Op::Connect && op_ != Op::Workers) tunnel_id_ = parts[0];
  if (!needScope(op_ == Op::Forward || op_ == Op::Workers)) {
    return http::FilterHeadersStatus::StopIteration;
  }
  std::string key = keyIdentity();
  switch (op_) {
    case Op::Workers:
      workers();
      return http::FilterHeadersStatus::StopIteration;
    case Op::Disconnect: {
      int st = service_->disconnect(tunnel_id_, key);
      if (st == 200) {
        replyJson(200, R"({"disconnected":true})");
      } else {
        refuse(st, st == 404 ? "no such tunnel" : "this tunnel belongs to another key",
               st == 404 ? "tunnel_not_found" : "forbidden");
      }
      return http::FilterHeadersStatus::StopIteration;
    }
    case Op::Poll: {
      // A worker that shuts its side while parked died: its poll must not
      // be handed a request it can never answer.
      cb_->streamInfo().half_close_ends_stream = true;
      poll_ = std::make_shared<PollState>();
      poll_->filter = this;
      poll_->service = service_.get();
      TunnelRequestPtr now;
      int st = service_->park(tunnel_id_, key, cb_->dispatcher(), poll_, &now, &poll_serial_);
      if (st == 200) {
        deliver(now);
      } else if (st == 0) {
        parked_ = true;
        timer_ = cb_->dispatcher().createTimer([this] {
          service_->unpark(tunnel_id_, poll_serial_);
          parked_ = false;
          replyJson(204, "");
        });
        timer_->enable(service_->limits().poll_timeout_ms);
      } else {
        refuse(st,
               st == 404   ? "no such tunnel"
               : st == 403 ? "this tunnel belongs to another key"
                           : "more polls than the worker's max_concurrent",
               st == 404   ? "tunnel_not_found"
               : st == 403 ? "forbidden"
                           : "too_many_polls");
      }
      return http::FilterHeadersStatus::StopIteration;
    }
    case Op::Response: {
      int st = service_->startAnswer(tunnel_id_, key, request_id_, &answering_);
      if (st != 200) {
        refuse(st,
               st == 404   ? "no request " + request_id_ + " waits for an answer on this tunnel"
               : st == 403 ? "this tunnel belongs to another key"
                           : "this request is already being answered",
               st == 404   ? "request_not_found"
               : st == 403 ? "forbidden"
                           : "already_answered");
        return http::FilterHeadersStatus::StopIteration;
      }
      if (answering_->cancelled.load()) {
        service_->finish(answering_);
        answering_.reset();
        refuse(410, "the router no longer waits for this answer", "request_cancelled");
        return http::FilterHeadersStatus::StopIteration;
      }
      answer_state_ = std::make_shared<AnswerState>();
      answer_state_->filter = this;
      answering_->answer_loop = &cb_->dispatcher();
      answering_->answer_sink = answer_state_;
      int status = 200;
      if (auto s = headers.headers.get("x-eldric-status")) {
        int v = 0;
        for (char c : *s) v = c >= '0' && c <= '9' && v < 1000 ? v * 10 + (c - '0') : 1000;
        if (v >= 100 && v <= 599) status = v;
      }
      std::string ct(headers.headers.get("content-type").value_or("application/json"));
      toRouter(answering_, [status, ct](ForwardSink& s) { s.onHead(status, ct); });
      if (end_stream) {
        toRouter(answering_, [](ForwardSink& s) { s.onData({}, true); });
        answer_ended_ = true;
        service_->finish(answering_);
        replyJson(200, R"({"delivered":true})");
        return http::FilterHeadersStatus::StopIteration;
      }
      return http::FilterHeadersStatus::Continue;
    }
    default:
      if (end_stream) {
        if (op_ == Op::Connect) {
          connect("");
        } else {
          startForward("");
        }
        return http::FilterHeadersStatus::StopIteration;
      }
      return http::FilterHeadersStatus::Continue;
  }
}

http::FilterDataStatus TunnelFilter::decodeData(Buffer& data, bool end_stream) {
  if (done_) {
    data.clear();
    return http::FilterDataStatus::StopIterationNoBuffer;
  }
  if (op_ == Op::Response) {
    if (answering_->cancelled.load()) {
      data.clear();
      service_->finish(answering_);
      answering_.reset();
      refuse(410, "the router went away; stop answering", "request_cancelled");
      return http::FilterDataStatus::StopIterationNoBuffer;
    }
    uint64_t total = answering_->answer_bytes.fetch_add(data.length()) + data.length();
    if (total > service_->limits().max_answer_bytes) {
      data.clear();
      toRouter(answering_, [](ForwardSink& s) {
        s.onFailure(502, "tunnel_answer_too_large",
                    "the worker's answer passed tunnel.max_answer_kb");
      });
      service_->finish(answering_);
      answering_.reset();
      refuse(413, "the answer passed tunnel.max_answer_kb", "answer_too_large");
      return http::FilterDataStatus::StopIterationNoBuffer;
    }
    std::string bytes = data.toString();
    data.clear();
    answering_->in_transit.fetch_add(bytes.size());
    toRouter(answering_, [bytes = std::move(bytes), end_stream](ForwardSink& s) {
      s.onData(bytes, end_stream);
    });
    // The router reads slower than the worker writes: stop reading the
    // worker until it catches up (the answer is never held whole).
    TunnelRequest& r = *answering_;
    if (!end_stream && !answer_paused_ &&
        (r.in_transit.load() > kAnswerHighBytes || r.router_full.load())) {
      answer_paused_ = true;
      r.answer_paused.store(true);
      cb_->readDisableDownstream(true);
      // It may have drained meanwhile; whoever clears the flag resumes.
      r.resumeAnswerIfRoom();
    }
    if (end_stream) {
      answer_ended_ = true;
      service_->finish(answering_);
      replyJson(200, R"({"delivered":true})");
    }
    return http::FilterDataStatus::StopIterationNoBuffer;
  }
  body_.move(data);
  // Only a worker's answer may be as long as tunnel.max_answer_kb (the
  // route's body limit); a connect is a few names, a forward a request.
  uint64_t limit = op_ == Op::Connect ? kMaxConnectBytes : service_->limits().max_forward_bytes;
  if (body_.length() > limit) {
    body_.clear();
    refuse(413, "the request body exceeds the limit of " + std::to_string(limit) + " bytes",
           "body_too_large");
    cb_->streamInfo().error_code = "body_too_large";
    return http::FilterDataStatus::StopIterationNoBuffer;
  }
  if (!end_stream) return http::FilterDataStatus::StopIterationNoBuffer;
  std::string body = body_.toString();
  body_.clear();
  if (op_ == Op::Connect) {
    connect(body);
  } else {
    startForward(body);
  }
  return http::FilterDataStatus::StopIterationNoBuffer;
}

void TunnelFilter::connect(const std::string& body) {
  rapidjson::Document doc;
  std::string why;
  if (!json::parse(doc, body, &why) || !doc.IsObject()) {
    refuse(400, "the body must be a JSON object: {\"worker_id\", \"models\", \"max_concurrent\"}",
           "invalid_json");
    return;
  }
  auto worker = doc.FindMember("worker_id");
  if (worker == doc.MemberEnd() || !worker->value.IsString() ||
      worker->value.GetStringLength() == 0 || worker->value.GetStringLength() > 128) {
    refuse(400, "\"worker_id\" must be a string of 1-128 characters", "invalid_worker_id");
    return;
  }
  std::vector<std::string> models;
  auto m = doc.FindMember("models");
  if (m != doc.MemberEnd()) {
    if (!m->value.IsArray() || m->value.Size() > 256) {
      refuse(400, "\"models\" must be a list of up to 256 model ids", "invalid_models");
      return;
    }
    for (const auto& v : m->value.GetArray()) {
      if (!v.IsString() || v.GetStringLength() > 256) {
        refuse(400, "\"models\" must be a list of model ids", "invalid_models");
        return;
      }
      models.emplace_back(v.GetString(), v.GetStringLength());
    }
  }
  uint32_t max_concurrent = 1;
  auto mc = doc.FindMember("max_concurrent");
  if (mc != doc.MemberEnd()) {
    if (!mc->value.IsUint() || mc->value.GetUint() == 0) {
      refuse(400, "\"max_concurrent\" must be a whole number from 1", "invalid_max_concurrent");
      return;
    }
    max_concurrent = mc->value.GetUint();
  }
  std::string id, error;
  int status = 0;
  const auto& who = cb_->streamInfo().identity;
  if (!service_->connect(keyIdentity(), who->client_name,
                         std::string(worker->value.GetString(), worker->value.GetStringLength()),
                         std::move(models), max_concurrent, &id, &status, &error)) {
    refuse(status, error, "too_many_tunnels");
    return;
  }
  const TunnelLimits limits = service_->limits();
  std::string out = "{\"tunnel_id\":";
  log::appendJsonString(out, id);
  out += ",\"poll_timeout_ms\":" + std::to_string(limits.poll_timeout_ms);
  // What the Edge granted: polls past it are refused (429).
  out += ",\"max_concurrent\":" +
         std::to_string(std::clamp<uint32_t>(max_concurrent, 1, limits.max_concurrent)) + "}";
  replyJson(200, out);
}

void TunnelFilter::startForward(const std::string& body) {
  auto r = std::make_shared<TunnelRequest>();
  r->id = newId();
  r->tunnel_id = tunnel_id_;
  r->method = "POST";
  r->path =
      !forward_path_.empty()
          ? forward_path_
          : std::string(
                request_->headers.get("x-eldric-tunnel-path").value_or("/v1/chat/completions"));
  // Already in normal form (no "..", "%2e", "//"): a path that would climb
  // out of where the worker's server was put is refused, not cleaned.
  std::string normal;
  const char* why = "";
  bool ok = !r->path.empty() && r->path[0] == '/' && r->path.size() <= 1024 &&
            http::normalizePath(r->path, &normal, &why) == http::PathResult::Unchanged;
  if (!ok) {
    refuse(400,
           "the worker's path (after /forward, or x-eldric-tunnel-path) must be an origin-form "
           "path of up to 1024 visible characters (\"/v1/chat/completions\")",
           "invalid_path");
    return;
  }
  // The body travels to the worker as a JSON string: text only.
  if (!json::validUtf8(body)) {
    refuse(400, "the request body must be UTF-8 text to go through a tunnel", "invalid_body");
    return;
  }
  r->content_type = std::string(request_->headers.get("content-type").value_or("application/json"));
  r->accept = std::string(request_->headers.get("accept").value_or(""));
  r->body = body;
  r->forward_loop = &cb_->dispatcher();
  forward_ = std::make_shared<ForwardState>();
  forward_->filter = this;
  r->sink = forward_;
  request_out_ = r;
  std::string error;
  int st = service_->forward(r, &error);
  if (st == 404 && relay(body)) {
    request_out_.reset();
    forward_.reset();
    return;
  }
  if (st != 200) {
    request_out_.reset();
    done_ = true;
    cb_->sendLocalReply(
        http::ErrorReply{st, error, "", st == 404 ? "tunnel_not_found" : "tunnel_queue_full"},
        [st](http::ResponseHeaders& h) {
          if (st == 503) h.headers.add("retry-after", "1");
        });
    return;
  }
  cb_->addDownstreamWatermarkCallbacks(*this);
  watching_downstream_ = true;
  // Waiting for a poll to take it: not forever.
  timer_ = cb_->dispatcher().createTimer([this] {
    service_->stats().no_poll.fetch_add(1, std::memory_order_relaxed);
    if (request_out_) service_->cancel(request_out_);
    failed(504, "tunnel_no_poll",
           "no poll of the worker took the request in time (tunnel.queue_timeout_ms)");
  });
  timer_->enable(service_->limits().queue_timeout_ms);
}

bool TunnelFilter::relay(const std::string& body) {
  // One hop: a member that was relayed to answers for itself.
  if (request_->headers.get("x-eldric-relayed")) return false;
  std::string member;
  auto target = service_->relayTarget(tunnel_id_, &member);
  if (!target) return false;
  relay_ = std::make_unique<RelayState>(*this, cb_->dispatcher(), std::move(target), member);
  http::RequestHeaders h;
  h.method = "POST";
  h.path = request_->path;
  // The router's key goes along (kept by the auth filter for this route):
  // every member knows the farm's keys, and the owner checks it again
  // (scope, tunnel, limits).
  if (const std::string* key = cb_->streamInfo().filter_state.get(http::kClientCredential)) {
    h.headers.add("authorization", "Bearer " + *key);
  }
  for (const char* name : {"content-type", "accept", "x-eldric-tunnel-path"}) {
    if (auto v = request_->headers.get(name)) h.headers.add(name, *v);
  }
  h.headers.add("x-eldric-relayed", service_->selfId());
  h.headers.add("content-length", std::to_string(body.size()));
  const TunnelLimits limits = service_->limits();
  // Silence from the owner: it answers once its worker starts to.
  relay_->client.start(h, relay_.get(),
                       limits.queue_timeout_ms + limits.first_byte_timeout_ms + 5000);
  relay_->client.send(body);
  cb_->addDownstreamWatermarkCallbacks(*this);
  watching_downstream_ = true;
  service_->stats().relayed.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void RelayState::onHeaders(const http::ResponseHeaders& headers, bool end) {
  filter.relayHead(headers, end);
}
void RelayState::onData(Buffer& data, bool end) { filter.relayData(data, end); }
void RelayState::onError(const std::string& why) {
  filter.failed(502, "tunnel_relay_failed",
                "relaying to the member that holds the tunnel (" + member + ") failed: " + why);
}

void AnswerState::onResume() {
  if (filter) filter->resumeAnswer();
}

void TunnelFilter::resumeAnswer() {
  if (!answer_paused_) return;
  answer_paused_ = false;
  cb_->readDisableDownstream(false);
}

void TunnelFilter::onAboveWriteBufferHighWatermark() {
  if (relay_) relay_->client.readDisable(true);
  if (request_out_) request_out_->router_full.store(true);
}

void TunnelFilter::onBelowWriteBufferLowWatermark() {
  if (relay_) relay_->client.readDisable(false);
  if (request_out_) {
    request_out_->router_full.store(false);
    request_out_->resumeAnswerIfRoom();
  }
}

void TunnelFilter::relayHead(const http::ResponseHeaders& in, bool end) {
  if (done_ || head_sent_) return;
  head_sent_ = true;
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = in.status;
  std::string ct(in.headers.get("content-type").value_or("application/json"));
  sse_ = ct.rfind("text/event-stream", 0) == 0;
  h->headers.add("content-type", ct);
  for (const char* name : {"cache-control", "retry-after"}) {
    if (auto v = in.headers.get(name)) h->headers.add(name, *v);
  }
  if (end) done_ = true;
  cb_->encodeHeaders(std::move(h), end);
}

void TunnelFilter::relayData(Buffer& data, bool end) {
  if (done_ || !head_sent_) {
    data.clear();
    return;
  }
  if (end) done_ = true;
  cb_->encodeData(data, end);
}

void TunnelFilter::workers() {
  std::string out = "{\"object\":\"list\",\"data\":[";
  bool first = true;
  auto add = [&](const TunnelInfo& t, const std::string& member) {
    if (!first) out += ',';
    first = false;
    out += "{\"tunnel_id\":";
    log::appendJsonString(out, t.id);
    out += ",\"worker_id\":";
    log::appendJsonString(out, t.worker_id);
    out += ",\"client\":";
    log::appendJsonString(out, t.client_name);
    out += ",\"models\":[";
    for (size_t i = 0; i < t.models.size(); ++i) {
      if (i) out += ',';
      log::appendJsonString(out, t.models[i]);
    }
    out += "],\"max_concurrent\":" + std::to_string(t.max_concurrent);
    out += ",\"connected_unix_ms\":" + std::to_string(t.connected_unix_ms);
    out += ",\"last_poll_unix_ms\":" +
           (t.last_poll_unix_ms ? std::to_string(t.last_poll_unix_ms) : std::string("null"));
    out += ",\"in_flight\":" + std::to_string(t.in_flight);
    out += ",\"queued\":" + std::to_string(t.queued);
    out += ",\"parked_polls\":" + std::to_string(t.parked);
    // In a farm, the member whose worker polls it (null standalone).
    out += ",\"member\":";
    if (member.empty()) {
      out += "null";
    } else {
      log::appendJsonString(out, member);
    }
    out += "}";
  };
  for (const auto& t : service_->list()) add(t, service_->selfId());
  // The other members' tunnels, as of their last report.
  for (const auto& r : service_->directory()) add(r.info, r.member_id);
  out += "]}";
  replyJson(200, out);
}

void TunnelFilter::deliver(const TunnelRequestPtr& r) {
  if (done_) {
    service_->requeue(r);
    return;
  }
  if (parked_) {
    parked_ = false;
    timer_.reset();
  }
  // What the worker needs to run the request locally.
  std::string out = "{\"id\":";
  log::appendJsonString(out, r->id);
  out += ",\"method\":";
  log::appendJsonString(out, r->method);
  out += ",\"path\":";
  log::appendJsonString(out, r->path);
  out += ",\"headers\":{\"content-type\":";
  log::appendJsonString(out, r->content_type);
  if (!r->accept.empty()) {
    out += ",\"accept\":";
    log::appendJsonString(out, r->accept);
  }
  out += "},\"body\":";
  log::appendJsonString(out, r->body);
  out += "}";
  replyJson(200, out);
}

void TunnelFilter::pollClosed(const std::string& why) {
  if (done_) return;
  parked_ = false;
  timer_.reset();
  refuse(410, "the tunnel is closed: " + why, "tunnel_closed");
}

void TunnelFilter::delivered() {
  if (done_ || head_sent_) return;
  // Taken by a poll: the worker now has first_byte_timeout_ms to begin.
  timer_ = cb_->dispatcher().createTimer([this] {
    service_->stats().no_answer.fetch_add(1, std::memory_order_relaxed);
    if (request_out_) service_->cancel(request_out_);
    failed(504, "tunnel_no_answer",
           "the worker did not start answering in time (tunnel.first_byte_timeout_ms)");
  });
  timer_->enable(service_->limits().first_byte_timeout_ms);
}

void TunnelFilter::head(int status, const std::string& content_type) {
  if (done_ || head_sent_) return;
  head_sent_ = true;
  timer_.reset();
  sse_ = content_type.rfind("text/event-stream", 0) == 0;
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = status;
  h->headers.add("content-type", content_type);
  if (sse_) h->headers.add("cache-control", "no-cache");
  cb_->encodeHeaders(std::move(h), false);
}

void TunnelFilter::data(const std::string& bytes, bool end) {
  if (request_out_) {
    // Written to the router's connection (or dropped): no longer on its way.
    request_out_->in_transit.fetch_sub(bytes.size());
    request_out_->resumeAnswerIfRoom();
  }
  if (done_ || !head_sent_) return;
  Buffer b;
  b.add(bytes);
  if (end) {
    done_ = true;
    service_->stats().forwarded_ok.fetch_add(1, std::memory_order_relaxed);
  }
  cb_->encodeData(b, end);
}

void TunnelFilter::failed(int status, const std::string& code, const std::string& message) {
  if (done_) return;
  done_ = true;
  timer_.reset();
  service_->stats().forwarded_failed.fetch_add(1, std::memory_order_relaxed);
  if (relay_) service_->stats().relay_failed.fetch_add(1, std::memory_order_relaxed);
  if (!head_sent_) {
    cb_->sendLocalReply(http::ErrorReply{status, message, "", code});
    return;
  }
  if (sse_) {
    Buffer b;
    b.add(http::sseErrorEvent(message, "server_error", code));
    cb_->encodeData(b, true);
    return;
  }
  cb_->resetStream(code);
}

void TunnelFilter::onDestroy() {
  timer_.reset();
  if (watching_downstream_) {
    watching_downstream_ = false;
    cb_->removeDownstreamWatermarkCallbacks(*this);
  }
  // A relay still under way: closing it tells the owner the router left.
  // Not deleted here: this may run inside the relay client's own callback
  // (the answer's last byte ends the stream), with its codec still on the
  // stack; the loop deletes it once that has returned.
  if (relay_) {
    relay_->client.abandon();
    cb_->dispatcher().deferredDelete(std::move(relay_));
  }
  if (answer_state_) {
    answer_state_->filter = nullptr;
    answer_state_.reset();
  }
  if (poll_) {
    poll_->filter = nullptr;
    if (parked_) service_->unpark(tunnel_id_, poll_serial_);
    parked_ = false;
    poll_.reset();
  }
  if (forward_) {
    forward_->filter = nullptr;
    forward_.reset();
    // The router is gone (or was answered): the worker's POST learns it.
    if (request_out_) service_->cancel(request_out_);
    request_out_.reset();
  }
  if (answering_ && !answer_ended_) {
    // The worker went away mid-answer.
    TunnelRequestPtr r = std::move(answering_);
    toRouter(r, [](ForwardSink& s) {
      s.onFailure(502, "tunnel_worker_gone", "the worker went away before its answer ended");
    });
    service_->finish(r);
  }
  answering_.reset();
}

}  // namespace

http::FilterFactory makeFactory(std::shared_ptr<TunnelService> service) {
  return [service = std::move(service)](http::FilterChainBuilder& chain) {
    chain.addDecoderFilter(std::make_unique<TunnelFilter>(service));
  };
}

}  // namespace eldric::filters::tunnel
