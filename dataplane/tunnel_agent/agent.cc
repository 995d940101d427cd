#include "dataplane/tunnel_agent/agent.h"

#include <rapidjson/document.h>

#include <algorithm>
#include <cstring>

#include "common/json.h"
#include "common/log.h"
#include "dataplane/common/random.h"
#include "dataplane/http/errors.h"
#include "dataplane/tls/client_context.h"
#include "dataplane/tunnel_agent/work.h"

namespace eldric::tunnel_agent {

namespace {

constexpr const char* kUserAgent = "eldric-tunnel/1";
// What a control answer (connect, models) may weigh.
constexpr size_t kMaxControlBytes = 1u << 20;
// After the answer's last byte, how long the Edge may take to confirm it.
constexpr uint64_t kConfirmTimeoutMs = 60000;
constexpr uint64_t kControlTimeoutMs = 15000;
// A connection to the Edge idle longer than this is not trusted to be open
// (the Edge's limits.idle_timeout_ms may have closed it).
constexpr uint64_t kReuseAfterIdleMs = 10000;

}  // namespace

// One request and its whole (bounded) answer: the tunnel's control calls
// and the local server's model list.
class Agent::Fetch : public http::Http1Client::Handler {
 public:
  using Done = std::function<void(int status, const std::string& body, const std::string& error)>;

  Fetch(Dispatcher& dispatcher, const http::ClientTarget& target) : client_(dispatcher, target) {}

  void run(http::RequestHeaders& head, const std::string& body, Done done) {
    done_ = std::move(done);
    status_ = 0;
    body_.clear();
    if (!body.empty() || head.method == "POST") {
      head.headers.set("content-length", std::to_string(body.size()));
    }
    client_.start(head, this, kControlTimeoutMs);
    if (!body.empty()) client_.send(body);
  }
  void cancel() {
    done_ = nullptr;
    client_.abandon();
  }

 private:
  void onHeaders(const http::ResponseHeaders& headers, bool end) override {
    status_ = headers.status;
    if (end) finish("");
  }
  void onData(Buffer& data, bool end) override {
    if (body_.size() + data.length() > kMaxControlBytes) {
      data.clear();
      client_.abandon();
      finish("the answer is larger than " + std::to_string(kMaxControlBytes) + " bytes");
      return;
    }
    body_ += data.toString();
    data.clear();
    if (end) finish("");
  }
  void onError(const std::string& why) override { finish(why); }
  void finish(const std::string& error) {
    Done done = std::move(done_);
    done_ = nullptr;
    if (done) done(error.empty() ? status_ : 0, body_, error);
  }

  http::Http1Client client_;
  Done done_;
  int status_ = 0;
  std::string body_;
};

// One request at a time: poll, run it locally, post the answer, poll again.
class Agent::Slot : public http::Http1Client::Handler {
 public:
  Slot(Agent& agent, uint32_t index)
      : agent_(agent),
        index_(index),
        edge_(agent.dispatcher_, agent.edge_),
        local_(agent.dispatcher_, agent.local_),
        local_handler_(*this) {
    retry_ = agent.dispatcher_.createTimer([this] { poll(); });
  }

  bool idle() const { return state_ == State::Idle; }

  void poll() {
    if (agent_.stopping_) {
      goIdle();
      return;
    }
    state_ = State::Polling;
    poll_status_ = 0;
    poll_body_.clear();
    http::RequestHeaders head;
    head.method = "GET";
    head.path = "/api/v1/tunnel/" + agent_.tunnel_id_ + "/poll";
    agent_.authorize(head);
    edge_.start(head, this, agent_.poll_timeout_ms_ + 15000);
  }

  // The agent stops: a parked poll (or a wait before one) ends now; an
  // answer under way finishes first.
  void stop() {
    if (state_ == State::Polling || state_ == State::Waiting) {
      retry_->disable();
      edge_.abandon();
      state_ = State::Idle;
    }
  }

 private:
  enum class State { Idle, Waiting, Polling, Running, Answering };

  // The local server's side of the request.
  class LocalHandler : public http::Http1Client::Handler {
   public:
    explicit LocalHandler(Slot& slot) : slot_(slot) {}
    void onHeaders(const http::ResponseHeaders& h, bool end) override {
      slot_.localHeaders(h, end);
    }
    void onData(Buffer& data, bool end) override { slot_.localData(data, end); }
    void onError(const std::string& why) override { slot_.localFailed(why); }

   private:
    Slot& slot_;
  };

  void goIdle() {
    state_ = State::Idle;
    agent_.slotIdle();
  }

  void retryLater(const std::string& why) {
    ++failures_;
    uint64_t delay = agent_.backoffMs(failures_);
    log::warn("tunnel poll failed; polling again later",
              {{"slot", log::num(index_)}, {"why", log::str(why)}, {"retry_ms", log::num(delay)}});
    state_ = State::Waiting;
    retry_->enable(delay);
  }

  // The Edge's side: a poll's answer, or the answer post's confirmation.
  void onHeaders(const http::ResponseHeaders& h, bool end) override {
    if (state_ == State::Polling) {
      poll_status_ = h.status;
      if (end) pollDone();
      return;
    }
    if (state_ == State::Answering) {
      answer_status_ = h.status;
      if (end) answerConfirmed();
    }
  }

  void onData(Buffer& data, bool end) override {
    if (state_ == State::Polling) {
      if (poll_body_.size() + data.length() > kMaxWorkBytes) {
        data.clear();
        edge_.abandon();
        retryLater("the poll's answer is larger than " + std::to_string(kMaxWorkBytes) + " bytes");
        return;
      }
      poll_body_ += data.toString();
      data.clear();
      if (end) pollDone();
      return;
    }
    data.clear();
    if (state_ == State::Answering && end) answerConfirmed();
  }

  void onError(const std::string& why) override {
    if (state_ == State::Polling) {
      retryLater(why);
    } else if (state_ == State::Answering) {
      // The Edge went away under the answer: the router's request is lost
      // with it; stop the local work.
      local_.abandon();
      retryLater("posting the answer failed: " + why);
    }
  }

  void onWritable() override {
    if (state_ == State::Answering) local_.readDisable(false);
  }

  void pollDone() {
    switch (poll_status_) {
      case 200: {
        std::string error;
        Work w;
        if (!parseWork(poll_body_, &w, &error)) {
          retryLater(error);
          return;
        }
        failures_ = 0;
        poll_body_.clear();
        work_ = std::move(w);
        local_retried_ = false;
        poll_done_ms_ = agent_.dispatcher_.nowMs();
        if (!agent_.pathAllowed(work_.path)) {
          // Only what the operator serves (--paths): not the local
          // server's whole API (model pulls, deletes) to any router key.
          std::string body = http::errorBody(
              "this worker does not serve " + work_.path.substr(0, work_.path.find('?')),
              "invalid_request_error", "path_not_served");
          beginAnswer(403, "application/json", &body);
          return;
        }
        run();
        return;
      }
      case 204:
        failures_ = 0;
        poll();
        return;
      case 401:
      case 403:
      case 404:
      case 410:
        agent_.lost("the Edge answered a poll with " + std::to_string(poll_status_));
        return;
      default:
        retryLater("the Edge answered a poll with " + std::to_string(poll_status_));
    }
  }

  void run() {
    state_ = State::Running;
    head_sent_ = false;
    local_ended_ = false;
    answer_status_ = 0;
    http::RequestHeaders head;
    head.method = work_.method;
    head.path = work_.path;
    head.headers.add("user-agent", kUserAgent);
    head.headers.add("content-type", work_.content_type);
    if (!work_.accept.empty()) head.headers.add("accept", work_.accept);
    if (!agent_.options_.local_key.empty()) {
      head.headers.add("authorization", "Bearer " + agent_.options_.local_key);
    }
    bool has_body = !work_.body.empty() || work_.method == "POST" || work_.method == "PUT";
    if (has_body) head.headers.add("content-length", std::to_string(work_.body.size()));
    local_.start(head, &local_handler_, agent_.options_.local_timeout_ms);
    if (!work_.body.empty()) local_.send(work_.body);
    log::debug("tunnel request", {{"slot", log::num(index_)},
                                  {"request", log::str(work_.id)},
                                  {"path", log::str(work_.path)}});
  }

  void beginAnswer(int status, const std::string& content_type, const std::string* whole) {
    state_ = State::Answering;
    head_sent_ = true;
    // The poll's connection sat idle while the local server worked: the
    // Edge may have closed it meanwhile, so the answer takes a fresh one.
    if (agent_.dispatcher_.nowMs() - poll_done_ms_ > kReuseAfterIdleMs) edge_.abandon();
    http::RequestHeaders head;
    head.method = "POST";
    head.path = "/api/v1/tunnel/" + agent_.tunnel_id_ + "/response/" + work_.id;
    agent_.authorize(head);
    head.headers.add("x-eldric-status", std::to_string(status));
    head.headers.add("content-type", content_type);
    if (whole != nullptr) {
      head.headers.add("content-length", std::to_string(whole->size()));
    } else {
      head.headers.add("transfer-encoding", "chunked");
    }
    // No idle limit while the answer flows: the local server's own
    // timeout covers silence; the Edge replies only once it has it all.
    edge_.start(head, this, whole != nullptr ? kConfirmTimeoutMs : 0);
    if (whole != nullptr) {
      local_ended_ = true;
      edge_.send(*whole);
    }
  }

  void localHeaders(const http::ResponseHeaders& h, bool end) {
    std::string ct(h.headers.get("content-type").value_or("application/json"));
    bool ok = true;
    for (char c : ct) ok = ok && static_cast<unsigned char>(c) >= 0x20 && c != 0x7f;
    if (!ok || ct.size() > 256) ct = "application/octet-stream";
    if (end) {
      std::string empty;
      beginAnswer(h.status, ct, &empty);
      return;
    }
    beginAnswer(h.status, ct, nullptr);
  }

  void localData(Buffer& data, bool end) {
    if (state_ != State::Answering) {
      data.clear();
      return;
    }
    if (!data.empty()) {
      char size[24];
      int n = snprintf(size, sizeof size, "%zx\r\n", data.length());
      edge_.send(std::string_view(size, static_cast<size_t>(n)));
      edge_.send(data);
      edge_.send("\r\n");
    }
    if (end) {
      local_ended_ = true;
      edge_.send("0\r\n\r\n");
      edge_.setIdleTimeout(kConfirmTimeoutMs);
      return;
    }
    // The Edge (or the router behind it) reads slower than the model
    // writes: stop reading the model until it drains.
    if (edge_.congested()) local_.readDisable(true);
  }

  void localFailed(const std::string& why) {
    if (state_ == State::Running) {
      if (local_.failedOnStaleConnection() && !local_retried_) {
        local_retried_ = true;  // the local server closed an idle connection
        run();
        return;
      }
      log::warn("the local server did not answer",
                {{"request", log::str(work_.id)}, {"why", log::str(why)}});
      std::string body = http::errorBody("the worker's local server did not answer: " + why,
                                         "tunnel_error", "worker_unreachable");
      beginAnswer(502, "application/json", &body);
      return;
    }
    if (state_ == State::Answering && !local_ended_) {
      // Cut short: the Edge ends the router's stream with an error.
      log::warn("the local server failed mid-answer",
                {{"request", log::str(work_.id)}, {"why", log::str(why)}});
      edge_.abandon();
      poll();
    }
  }

  // The Edge replied to the answer post.
  void answerConfirmed() {
    if (!local_ended_) {
      // It did not wait for the end: the router went away (410) or the
      // answer passed a limit (413). The local work stops; the connection,
      // with half a body sent on it, is not reused.
      local_.abandon();
      edge_.abandon();
      log::info("the Edge stopped the answer",
                {{"request", log::str(work_.id)}, {"status", log::num(answer_status_)}});
    } else if (answer_status_ != 200) {
      log::warn("the Edge refused the answer",
                {{"request", log::str(work_.id)}, {"status", log::num(answer_status_)}});
    }
    poll();
  }

  Agent& agent_;
  uint32_t index_;
  http::Http1Client edge_;
  http::Http1Client local_;
  LocalHandler local_handler_;
  std::unique_ptr<Timer> retry_;
  State state_ = State::Idle;
  int poll_status_ = 0;
  std::string poll_body_;
  Work work_;
  bool head_sent_ = false;
  bool local_ended_ = false;
  bool local_retried_ = false;
  int answer_status_ = 0;
  uint32_t failures_ = 0;
  uint64_t poll_done_ms_ = 0;
};

Agent::Agent(Dispatcher& dispatcher, AgentOptions options)
    : dispatcher_(dispatcher), options_(std::move(options)) {
  reopen_ = dispatcher_.createTimer([this] { open(); });
  drain_ = dispatcher_.createTimer([this] { finishStop(); });
}

Agent::~Agent() = default;

bool Agent::init(std::string* error) {
  if (options_.edge.https) {
    edge_tls_ = tls::makeClientContext(options_.ca_file, "", "", {"http/1.1"}, error);
    if (!edge_tls_) return false;
  }
  if (options_.local.https) {
    *error = "the local server is reached over http:// (it runs beside the agent)";
    return false;
  }
  edge_.connect_timeout_ms = options_.connect_timeout_ms;
  local_.connect_timeout_ms = options_.connect_timeout_ms;
  if (!resolveAll(error)) return false;
  control_ = std::make_unique<Fetch>(dispatcher_, edge_);
  probe_ = std::make_unique<Fetch>(dispatcher_, local_);
  return true;
}

bool Agent::resolveAll(std::string* error) {
  return http::makeClientTarget(options_.edge, edge_tls_.get(), &edge_, error) &&
         http::makeClientTarget(options_.local, nullptr, &local_, error);
}

uint64_t Agent::backoffMs(uint32_t attempt) const {
  uint64_t base = options_.backoff_initial_ms;
  for (uint32_t i = 1; i < attempt && base < options_.backoff_max_ms; ++i) base *= 2;
  if (base > options_.backoff_max_ms) base = options_.backoff_max_ms;
  uint64_t half = base / 2;
  return half + (half ? random::next() % (base - half + 1) : 0);
}

bool Agent::pathAllowed(const std::string& path) const {
  for (const auto& p : options_.paths) {
    if (path.compare(0, p.size(), p) == 0) return true;
  }
  return false;
}

void Agent::authorize(http::RequestHeaders& head) const {
  head.headers.add("authorization", "Bearer " + options_.key);
  head.headers.add("user-agent", kUserAgent);
}

void Agent::start() { open(); }

void Agent::open() {
  if (stopping_) return;
  reopening_ = true;
  // Names may move (a restarted Edge, a new load balancer): look again.
  std::string error;
  if (!resolveAll(&error)) {
    openLater(error);
    return;
  }
  if (!options_.models.empty()) {
    models_ = options_.models;
    connectTunnel();
    return;
  }
  http::RequestHeaders head;
  head.method = "GET";
  head.path = "/v1/models";
  head.headers.add("user-agent", kUserAgent);
  if (!options_.local_key.empty()) {
    head.headers.add("authorization", "Bearer " + options_.local_key);
  }
  probe_->run(head, "", [this](int status, const std::string& body, const std::string& err) {
    models_.clear();
    rapidjson::Document doc;
    std::string why;
    if (status == 200 && json::parse(doc, body, &why) && doc.IsObject()) {
      auto data = doc.FindMember("data");
      if (data != doc.MemberEnd() && data->value.IsArray()) {
        for (const auto& m : data->value.GetArray()) {
          if (models_.size() >= 256) break;
          if (!m.IsObject()) continue;
          auto id = m.FindMember("id");
          if (id != m.MemberEnd() && id->value.IsString() && id->value.GetStringLength() > 0 &&
              id->value.GetStringLength() <= 256) {
            models_.emplace_back(id->value.GetString(), id->value.GetStringLength());
          }
        }
      }
    } else {
      log::warn("the local server's model list did not load; the tunnel opens without models",
                {{"status", log::num(status)},
                 {"why", log::str(err.empty() ? (why.empty() ? "not a model list" : why) : err)}});
    }
    connectTunnel();
  });
}

void Agent::connectTunnel() {
  std::string body = "{\"worker_id\":";
  log::appendJsonString(body, options_.worker_id);
  body += ",\"models\":[";
  for (size_t i = 0; i < models_.size(); ++i) {
    if (i) body += ',';
    log::appendJsonString(body, models_[i]);
  }
  body += "],\"max_concurrent\":" + std::to_string(options_.max_concurrent) + "}";
  http::RequestHeaders head;
  head.method = "POST";
  head.path = "/api/v1/tunnel/connect";
  authorize(head);
  head.headers.add("content-type", "application/json");
  control_->run(head, body, [this](int status, const std::string& text, const std::string& err) {
    if (!err.empty()) {
      openLater("connecting to the Edge failed: " + err);
      return;
    }
    if (status != 200) {
      // The Edge's error message says why (a key without the worker
      // scope, too many tunnels); it never holds the key.
      rapidjson::Document doc;
      std::string why, message;
      if (json::parse(doc, text, &why) && doc.IsObject() && doc.HasMember("error") &&
          doc["error"].IsObject() && doc["error"].HasMember("message") &&
          doc["error"]["message"].IsString()) {
        message = doc["error"]["message"].GetString();
      }
      openLater("the Edge refused the tunnel (" + std::to_string(status) + ")" +
                (message.empty() ? "" : ": " + message.substr(0, 300)));
      return;
    }
    rapidjson::Document doc;
    std::string why;
    if (!json::parse(doc, text, &why) || !doc.IsObject() || !doc.HasMember("tunnel_id") ||
        !doc["tunnel_id"].IsString() || doc["tunnel_id"].GetStringLength() == 0 ||
        doc["tunnel_id"].GetStringLength() > 128) {
      openLater("the Edge's answer to connect has no tunnel id");
      return;
    }
    std::string id = doc["tunnel_id"].GetString();
    if (!isId(id)) {
      openLater("the Edge's tunnel id is not an id");
      return;
    }
    uint64_t poll_ms = 30000;
    if (doc.HasMember("poll_timeout_ms") && doc["poll_timeout_ms"].IsUint64()) {
      poll_ms = std::clamp<uint64_t>(doc["poll_timeout_ms"].GetUint64(), 100, 600000);
    }
    // The Edge may grant fewer parked polls than asked (tunnel.max_concurrent).
    uint32_t slots = options_.max_concurrent;
    if (doc.HasMember("max_concurrent") && doc["max_concurrent"].IsUint()) {
      slots = std::clamp<uint32_t>(doc["max_concurrent"].GetUint(), 1, slots);
    }
    opened(id, poll_ms, slots);
  });
}

void Agent::opened(const std::string& tunnel_id, uint64_t poll_timeout_ms, uint32_t slots) {
  tunnel_id_ = tunnel_id;
  poll_timeout_ms_ = poll_timeout_ms;
  open_failures_ = 0;
  reopening_ = false;
  // Stopped while it opened: it is closed again, not served.
  if (stopping_) {
    slotIdle();
    return;
  }
  std::string models;
  for (const auto& m : models_) models += (models.empty() ? "" : ",") + m;
  log::info("tunnel open", {{"tunnel", log::str(tunnel_id_)},
                            {"worker", log::str(options_.worker_id)},
                            {"models", log::str(models)},
                            {"slots", log::num(slots)}});
  slots_.clear();
  for (uint32_t i = 0; i < slots; ++i) {
    slots_.push_back(std::make_unique<Slot>(*this, i));
  }
  for (auto& s : slots_) s->poll();
}

void Agent::lost(const std::string& why) {
  if (reopening_ || stopping_) return;
  reopening_ = true;
  log::warn("tunnel lost; opening it again", {{"why", log::str(why)}});
  tunnel_id_.clear();
  // The slot that noticed is inside its own callback: let it return first.
  dispatcher_.post([this] {
    slots_.clear();
    open_failures_ = 0;
    openLater("");
  });
}

void Agent::openLater(const std::string& why) {
  reopening_ = true;
  uint64_t delay = backoffMs(++open_failures_);
  if (!why.empty()) {
    log::warn("the tunnel is not open; trying again later",
              {{"why", log::str(why)}, {"retry_ms", log::num(delay)}});
  }
  reopen_->enable(delay);
}

void Agent::stop(std::function<void()> done) {
  if (stopping_) return;
  stopping_ = true;
  stop_done_ = std::move(done);
  reopen_->disable();
  probe_->cancel();
  for (auto& s : slots_) s->stop();
  drain_->enable(options_.drain_timeout_ms);
  slotIdle();
}

void Agent::slotIdle() {
  if (!stopping_) return;
  for (const auto& s : slots_) {
    if (!s->idle()) return;
  }
  // Not from inside the slot's callback.
  dispatcher_.post([this] { finishStop(); });
}

void Agent::finishStop() {
  if (!stop_done_) return;
  drain_->disable();
  auto done = std::move(stop_done_);
  stop_done_ = nullptr;
  slots_.clear();
  if (tunnel_id_.empty()) {
    done();
    return;
  }
  http::RequestHeaders head;
  head.method = "POST";
  head.path = "/api/v1/tunnel/" + tunnel_id_ + "/disconnect";
  authorize(head);
  control_->cancel();
  control_->run(head, "", [this, done](int status, const std::string&, const std::string& err) {
    log::info(
        "tunnel closed",
        {{"tunnel", log::str(tunnel_id_)}, {"status", log::num(status)}, {"why", log::str(err)}});
    done();
  });
}

}  // namespace eldric::tunnel_agent
