#include "dataplane/http/http1_client.h"

#include <cstdio>

namespace eldric::http {

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
  handler_ = handler;
  idle_timeout_ms_ = idle_timeout_ms;
  reused_ = conn_ != nullptr;
  got_bytes_ = false;
  stale_failure_ = false;
  armIdle();
  if (in_dispatch_) {
    begin_pending_ = true;
  } else {
    codec_.beginResponse(head.method == "HEAD");
  }
  if (conn_ == nullptr) {
    network::ConnectionOptions options;
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
  handler_ = nullptr;
  idle_->disable();
  closeConnection();
}

void Http1Client::closeConnection() {
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
  if (begin_pending_) {
    begin_pending_ = false;
    codec_.beginResponse(false);
  }
  data.clear();
}

void Http1Client::onEvent(network::ConnectionEvent event) {
  switch (event) {
    case network::ConnectionEvent::Connected:
      return;
    case network::ConnectionEvent::ConnectFailed: {
      std::string why = conn_ && !conn_->tlsError().empty() ? conn_->tlsError() : "cannot connect";
      conn_ = nullptr;
      if (handler_ != nullptr) fail(why);
      return;
    }
    case network::ConnectionEvent::RemoteClose: {
      std::string tls = conn_ ? conn_->tlsError() : std::string();
      conn_ = nullptr;
      if (handler_ == nullptr) return;
      if (codec_.responseStarted() && codec_.onEof()) {
        complete();  // a body delimited by the close
        return;
      }
      fail(tls.empty() ? "the connection closed before the answer ended" : tls);
      return;
    }
    case network::ConnectionEvent::LocalClose:
      conn_ = nullptr;
      return;
  }
}

void Http1Client::onBelowWriteBufferLowWatermark() {
  if (handler_ != nullptr) handler_->onWritable();
}

void Http1Client::onResponseHeaders(ResponseHeadersPtr headers, bool end_stream) {
  if (handler_ == nullptr) return;
  if (end_stream) {
    Handler* h = handler_;
    complete();
    h->onHeaders(*headers, true);
    return;
  }
  handler_->onHeaders(*headers, false);
}

void Http1Client::onResponseData(Buffer& data, bool end_stream) {
  if (handler_ == nullptr) {
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

void Http1Client::onResponseError(const std::string& reason) { fail(reason); }

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
