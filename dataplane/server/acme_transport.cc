#include "dataplane/server/acme_transport.h"

#include <mutex>

#include "common/address.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http1_client.h"
#include "dataplane/tls/client_context.h"

namespace eldric::server {
namespace {

namespace acme = controlplane::acme;

// One exchange may take this long in all: connect, TLS, the CA's answer.
constexpr uint64_t kExchangeMs = 30000;

class Exchange : public http::Http1Client::Handler {
 public:
  Exchange(Dispatcher& dispatcher, http::Http1Client& client, acme::HttpResponse* out)
      : dispatcher_(dispatcher), client_(client), out_(out) {}

  const std::string& error() const { return error_; }
  bool done() const { return done_; }

  void onHeaders(const http::ResponseHeaders& headers, bool end) override {
    out_->status = headers.status;
    auto copy = [&](std::string_view name, std::string* to) {
      if (auto v = headers.headers.get(name)) to->assign(v->data(), v->size());
    };
    copy("content-type", &out_->content_type);
    copy("location", &out_->location);
    copy("replay-nonce", &out_->replay_nonce);
    copy("retry-after", &out_->retry_after);
    if (end) finish("");
  }
  void onData(Buffer& data, bool end) override {
    if (out_->body.size() + data.length() > acme::kMaxResponseBytes) {
      data.clear();
      client_.abandon();
      finish("the answer is larger than " + std::to_string(acme::kMaxResponseBytes) + " bytes");
      return;
    }
    out_->body += data.toString();
    data.clear();
    if (end) finish("");
  }
  void onError(const std::string& why) override {
    finish(why.empty() ? "the exchange failed" : why);
  }
  void finish(const std::string& error) {
    if (done_) return;
    done_ = true;
    error_ = error;
    dispatcher_.exit();
  }

 private:
  Dispatcher& dispatcher_;
  http::Http1Client& client_;
  acme::HttpResponse* out_;
  std::string error_;
  bool done_ = false;
};

class EdgeTransport : public acme::Transport {
 public:
  explicit EdgeTransport(tls::SslCtxPtr tls) : tls_(std::move(tls)) {}

  bool fetch(const acme::HttpRequest& request, acme::HttpResponse* out,
             std::string* error) override {
    *out = acme::HttpResponse{};
    network::Url url;
    if (!network::parseUrl(request.url, &url, error)) {
      *error = request.url + " " + *error;
      return false;
    }
    std::string path = url.path;
    url.path = "/";  // the whole path goes in the request line
    http::ClientTarget target;
    target.connect_timeout_ms = kExchangeMs;
    if (!http::makeClientTarget(url, tls_.get(), &target, error)) return false;
    // A loop per exchange: ACME talks a few times a day, and nothing of it
    // outlives the call.
    Dispatcher dispatcher;
    bool ok = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (interrupted_) {
        *error = request.url + ": interrupted (shutting down)";
        return false;
      }
      current_ = &dispatcher;
    }
    {
      http::Http1Client client(dispatcher, target);
      Exchange exchange(dispatcher, client, out);
      auto deadline = dispatcher.createTimer([&] {
        client.abandon();
        exchange.finish("no whole answer within " + std::to_string(kExchangeMs / 1000) + " s");
      });
      deadline->enable(kExchangeMs);
      http::RequestHeaders head;
      head.method = request.method;
      head.path = path;
      head.headers.add("user-agent", "eldric-edge-acme/1");
      head.headers.add("accept", "application/json, application/pem-certificate-chain");
      if (request.method == "POST") {
        head.headers.add("content-type", "application/jose+json");
        head.headers.add("content-length", std::to_string(request.body.size()));
      }
      client.start(head, &exchange, kExchangeMs);
      if (!request.body.empty()) client.send(request.body);
      if (!exchange.done()) dispatcher.run();
      deadline->disable();
      ok = exchange.done() && exchange.error().empty();
      if (!ok)
        *error = request.url + ": " +
                 (exchange.done() ? exchange.error() : "interrupted (shutting down)");
      client.abandon();
    }
    std::lock_guard<std::mutex> lock(mu_);
    current_ = nullptr;
    return ok;
  }

  void interrupt() override {
    std::lock_guard<std::mutex> lock(mu_);
    interrupted_ = true;
    if (current_) current_->exit();
  }

 private:
  tls::SslCtxPtr tls_;
  std::mutex mu_;
  bool interrupted_ = false;
  Dispatcher* current_ = nullptr;  // the exchange under way
};

}  // namespace

std::unique_ptr<acme::Transport> makeAcmeTransport(const std::string& ca_file, std::string* error) {
  auto tls = tls::makeClientContext(ca_file, "", "", {"http/1.1"}, error);
  if (!tls) return nullptr;
  return std::make_unique<EdgeTransport>(std::move(tls));
}

}  // namespace eldric::server
