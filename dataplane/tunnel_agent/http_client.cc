#include "dataplane/tunnel_agent/http_client.h"

#include <cstdio>

namespace eldric::tunnel_agent {

HttpClient::HttpClient(Dispatcher& dispatcher, const Target& target)
    : dispatcher_(dispatcher), target_(target), codec_(*this) {
  idle_ = dispatcher_.createTimer(
      [this] { fail("no answer for " + std::to_string(idle_timeout_ms_) + " ms"); });
}

HttpClient::~HttpClient() {
  handler_ = nullptr;
  closeConnection();
}

void HttpClient::start(http::RequestHeaders& head, Handler* handler, uint64_t idle_timeout_ms) {
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
  http::Http1ClientCodec::encodeRequestHead(head, out);
  conn_->write(out);
}

void HttpClient::armIdle() {
  if (idle_timeout_ms_ > 0 && !read_disabled_) {
    idle_->enable(idle_timeout_ms_);
  } else {
    idle_->disable();
  }
}

void HttpClient::setIdleTimeout(uint64_t ms) {
  idle_timeout_ms_ = ms;
  if (handler_ != nullptr) armIdle();
}

void HttpClient::send(Buffer& data) {
  if (conn_ != nullptr && handler_ != nullptr) {
    conn_->write(data);
  } else {
    data.clear();
  }
}

void HttpClient::send(std::string_view bytes) {
  Buffer b;
  b.add(bytes);
  send(b);
}

void HttpClient::readDisable(bool disable) {
  if (conn_ == nullptr || read_disabled_ == disable) return;
  read_disabled_ = disable;
  conn_->readDisable(disable);
  // Not reading on purpose is not the server being silent.
  if (handler_ != nullptr) armIdle();
}

void HttpClient::abandon() {
  handler_ = nullptr;
  idle_->disable();
  closeConnection();
}

void HttpClient::closeConnection() {
  if (conn_ == nullptr) return;
  network::Connection* c = conn_;
  conn_ = nullptr;
  c->setCallbacks(nullptr);
  c->close(network::CloseType::NoFlush);
}

void HttpClient::onData(Buffer& data) {
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

void HttpClient::onEvent(network::ConnectionEvent event) {
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

void HttpClient::onBelowWriteBufferLowWatermark() {
  if (handler_ != nullptr) handler_->onWritable();
}

void HttpClient::onResponseHeaders(http::ResponseHeadersPtr headers, bool end_stream) {
  if (handler_ == nullptr) return;
  if (end_stream) {
    Handler* h = handler_;
    complete();
    h->onHeaders(*headers, true);
    return;
  }
  handler_->onHeaders(*headers, false);
}

void HttpClient::onResponseData(Buffer& data, bool end_stream) {
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

void HttpClient::onResponseError(const std::string& reason) { fail(reason); }

void HttpClient::complete() {
  handler_ = nullptr;
  idle_->disable();
  if (!codec_.keepAlive()) closeConnection();
}

void HttpClient::fail(const std::string& why) {
  Handler* h = handler_;
  handler_ = nullptr;
  stale_failure_ = reused_ && !got_bytes_;
  idle_->disable();
  closeConnection();
  if (h != nullptr) h->onError(why);
}

}  // namespace eldric::tunnel_agent
