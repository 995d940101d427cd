#include "dataplane/http/http1_client.h"

#include <netdb.h>

#include <cstdio>
#include <cstring>

namespace eldric::http {

bool makeClientTarget(const network::Url& url, SSL_CTX* tls, ClientTarget* out,
                      std::string* error) {
  if (!network::parseIpAddress(url.host, url.port, &out->addr)) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int rc = getaddrinfo(url.host.c_str(), std::to_string(url.port).c_str(), &hints, &res);
    if (rc != 0 || res == nullptr) {
      *error = "cannot resolve " + url.host + ": " + gai_strerror(rc);
      return false;
    }
    memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
  }
  std::string host = url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host;
  out->authority =
      url.port == (url.https ? 443 : 80) ? host : host + ":" + std::to_string(url.port);
  out->base_path = url.path;
  while (!out->base_path.empty() && out->base_path.back() == '/') out->base_path.pop_back();
  out->tls = url.https ? tls : nullptr;
  out->server_name = url.https ? url.host : std::string();
  return true;
}

Http1Client::Http1Client(Dispatcher& dispatcher, const ClientTarget& target)
    : dispatcher_(dispatcher), target_(target), codec_(*this) {
  idle_ = dispatcher_.createTimer(
      [this] { fail("no answer for " + std::to_string(idle_timeout_ms_) + " ms"); });
}

Http1Client::~Http1Client() {
  handler_ = nullptr;
  closeConnection();
}

void Http1Client::start(RequestHeaders& head, Handler* handler, uint64_t idle_timeout_ms) {
  if (conn_ != nullptr && read_disabled_) {
    read_disabled_ = false;
    conn_->readDisable(false);
  }
  ++gen_;
  handler_ = handler;
  idle_timeout_ms_ = idle_timeout_ms;
  reused_ = conn_ != nullptr;
  got_bytes_ = false;
  stale_failure_ = false;
  armIdle();
  if (in_dispatch_) {
    begin_pending_ = true;
    pending_head_ = head.method == "HEAD";
  } else {
    codec_.beginResponse(head.method == "HEAD");
    dispatch_gen_ = gen_;
  }
  if (conn_ == nullptr) {
    network::ConnectionOptions options;
    read_disabled_ = false;
    conn_ = network::Connection::connect(
        dispatcher_, reinterpret_cast<const sockaddr*>(&target_.addr), target_.connect_timeout_ms,
        options, target_.tls, target_.server_name);
    conn_->setCallbacks(this);
  }
  head.headers.set("host", target_.authority);
  if (!target_.base_path.empty()) head.path = target_.base_path + head.path;
  Buffer out;
  Http1ClientCodec::encodeRequestHead(head, out);
  conn_->write(out);
}

void Http1Client::runPendingBegin() {
  if (!begin_pending_) return;
  begin_pending_ = false;
  // The connection the new exchange was written on: bytes after the last
  // answer (a confused server) mean it cannot carry another.
  bool reusable = codec_.keepAlive() || conn_ == nullptr;
  codec_.beginResponse(pending_head_);
  dispatch_gen_ = gen_;
  if (!reusable && handler_ != nullptr && reused_) {
    fail("the server sent bytes after its answer; the connection is not reused");
  }
}

void Http1Client::armIdle() {
  if (idle_timeout_ms_ > 0 && !read_disabled_) {
    idle_->enable(idle_timeout_ms_);
  } else {
    idle_->disable();
  }
}

void Http1Client::setIdleTimeout(uint64_t ms) {
  idle_timeout_ms_ = ms;
  if (handler_ != nullptr) armIdle();
}

void Http1Client::send(Buffer& data) {
  if (conn_ != nullptr && handler_ != nullptr) {
    conn_->write(data);
  } else {
    data.clear();
  }
}

void Http1Client::send(std::string_view bytes) {
  Buffer b;
  b.add(bytes);
  send(b);
}

void Http1Client::readDisable(bool disable) {
  if (conn_ == nullptr || read_disabled_ == disable) return;
  read_disabled_ = disable;
  conn_->readDisable(disable);
  // Not reading on purpose is not the server being silent.
  if (handler_ != nullptr) armIdle();
}

void Http1Client::abandon() {
  ++gen_;
  handler_ = nullptr;
  idle_->disable();
  closeConnection();
}

void Http1Client::closeConnection() {
  read_disabled_ = false;
  if (conn_ == nullptr) return;
  network::Connection* c = conn_;
  conn_ = nullptr;
  c->setCallbacks(nullptr);
  c->close(network::CloseType::NoFlush);
}

void Http1Client::onData(Buffer& data) {
  if (handler_ == nullptr) {
    // Bytes nobody asked for (or after an exchange we gave up on).
    data.clear();
    closeConnection();
    return;
  }
  armIdle();
  got_bytes_ = true;
  in_dispatch_ = true;
  codec_.dispatch(data);
  in_dispatch_ = false;
  runPendingBegin();
  data.clear();
}

void Http1Client::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      return;
    case network::ConnectionEvent::ConnectFailed: {
      std::string why = conn_ && !conn_->tlsError().empty() ? conn_->tlsError() : "cannot connect";
      conn_ = nullptr;
      read_disabled_ = false;
      if (handler_ != nullptr) fail(why);
      return;
    }
    case network::ConnectionEvent::RemoteClose: {
      std::string tls = conn_ ? conn_->tlsError() : std::string();
      conn_ = nullptr;
      read_disabled_ = false;
      if (handler_ == nullptr) return;
      // A body delimited by the close ends here; its handler may start the
      // next exchange from inside that, which must not be failed below.
      uint64_t gen = gen_;
      in_dispatch_ = true;
      bool ended = codec_.responseStarted() && codec_.onEof();
      in_dispatch_ = false;
      runPendingBegin();
      if (gen != gen_ || handler_ == nullptr) return;
      if (ended) {
        complete();
        return;
      }
      fail(tls.empty() ? "the connection closed before the answer ended" : tls);
      return;
    }
    case network::ConnectionEvent::LocalClose:
      conn_ = nullptr;
      read_disabled_ = false;
      return;
  }
}

void Http1Client::onBelowWriteBufferLowWatermark() {
  if (handler_ != nullptr) handler_->onWritable();
}

void Http1Client::onResponseHeaders(ResponseHeadersPtr headers, bool end_stream) {
  if (!current()) return;
  if (end_stream) {
    Handler* h = handler_;
    complete();
    h->onHeaders(*headers, true);
    return;
  }
  handler_->onHeaders(*headers, false);
}

void Http1Client::onResponseData(Buffer& data, bool end_stream) {
  if (!current()) {
    data.clear();
    return;
  }
  if (end_stream) {
    Handler* h = handler_;
    complete();
    h->onData(data, true);
    return;
  }
  handler_->onData(data, false);
}

void Http1Client::onResponseError(const std::string& reason) {
  if (current()) fail(reason);
}

void Http1Client::complete() {
  handler_ = nullptr;
  idle_->disable();
  if (!codec_.keepAlive()) closeConnection();
}

void Http1Client::fail(const std::string& why) {
  Handler* h = handler_;
  handler_ = nullptr;
  stale_failure_ = reused_ && !got_bytes_;
  idle_->disable();
  closeConnection();
  if (h != nullptr) h->onError(why);
}

}  // namespace eldric::http
