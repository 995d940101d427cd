#include "dataplane/server/acme_transport.h"

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <set>

#include "common/address.h"
#include "dataplane/http/http1_client.h"
#include "dataplane/tls/client_context.h"

namespace eldric::server {
namespace {

namespace acme = controlplane::acme;

// One exchange may take this long in all: connect, TLS, the CA's answer.
constexpr uint64_t kExchangeMs = 30000;
// The caller gives up this much later if the loop never ran it.
constexpr uint64_t kLoopGraceMs = 5000;

struct Exchange;
// The exchanges the loop runs (touched on the loop's thread only; the
// transport is made and destroyed there too): they own themselves through
// it until they finish, and the transport's end drops any left.
struct Registry {
  std::set<std::shared_ptr<Exchange>> active;
};

// One exchange, shared by the calling thread (which waits on `cv`) and the
// main loop (which runs it). Fields under `mu` are the hand-over; the rest
// belong to the loop.
struct Exchange : http::Http1Client::Handler {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;            // under mu
  std::string error;            // under mu
  acme::HttpResponse response;  // under mu once done

  // The loop's.
  http::ClientTarget target;
  std::unique_ptr<http::Http1Client> client;
  std::unique_ptr<Timer> deadline;
  acme::HttpResponse building;
  Dispatcher* loop = nullptr;
  std::shared_ptr<Registry> registry;
  bool finished = false;

  void onHeaders(const http::ResponseHeaders& headers, bool end) override {
    building.status = headers.status;
    auto copy = [&](std::string_view name, std::string* to) {
      if (auto v = headers.headers.get(name)) to->assign(v->data(), v->size());
    };
    copy("content-type", &building.content_type);
    copy("location", &building.location);
    copy("replay-nonce", &building.replay_nonce);
    copy("retry-after", &building.retry_after);
    if (end) finish("");
  }
  void onData(Buffer& data, bool end) override {
    if (building.body.size() + data.length() > acme::kMaxResponseBytes) {
      data.clear();
      finish("the answer is larger than " + std::to_string(acme::kMaxResponseBytes) + " bytes");
      return;
    }
    building.body += data.toString();
    data.clear();
    if (end) finish("");
  }
  void onError(const std::string& why) override {
    finish(why.empty() ? "the exchange failed" : why);
  }

  // On the loop: hands the outcome over and lets the client go (later:
  // not from inside its own callback).
  void finish(const std::string& why) {
    if (finished) return;
    finished = true;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!done) {
        done = true;
        error = why;
        if (why.empty()) response = std::move(building);
      }
    }
    cv.notify_all();
    if (deadline) deadline->disable();
    // The transport already ended (its destructor let every exchange go):
    // nothing is left to clean up.
    if (!registry) return;
    loop->post([reg = registry, raw = this] {
      for (auto it = reg->active.begin(); it != reg->active.end(); ++it) {
        if (it->get() != raw) continue;
        std::shared_ptr<Exchange> keep = *it;
        reg->active.erase(it);
        if (keep->client) keep->client->abandon();
        keep->client.reset();
        keep->deadline.reset();
        keep->registry.reset();
        return;
      }
    });
  }
};

class EdgeTransport : public acme::Transport {
 public:
  EdgeTransport(Dispatcher& loop, tls::SslCtxPtr tls) : loop_(loop), tls_(std::move(tls)) {}
  // On the loop's thread (or after it ended): exchanges still running end.
  ~EdgeTransport() override {
    auto active = std::move(registry_->active);
    for (const auto& ex : active) ex->registry.reset();
  }

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
    auto ex = std::make_shared<Exchange>();
    ex->loop = &loop_;
    ex->registry = registry_;
    ex->target.connect_timeout_ms = kExchangeMs;
    // The name is looked up here, on the caller's thread.
    if (!http::makeClientTarget(url, tls_.get(), &ex->target, error)) return false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (interrupted_) {
        *error = request.url + ": interrupted (shutting down)";
        return false;
      }
      current_ = ex;
    }
    std::string type =
        request.content_type.empty() ? "application/jose+json" : request.content_type;
    loop_.post([ex, method = request.method, path, body = request.body, type] {
      if (ex->finished || !ex->registry) return;  // interrupted before it began
      ex->registry->active.insert(ex);
      ex->client = std::make_unique<http::Http1Client>(*ex->loop, ex->target);
      ex->deadline = ex->loop->createTimer([raw = ex.get()] {
        raw->finish("no whole answer within " + std::to_string(kExchangeMs / 1000) + " s");
      });
      ex->deadline->enable(kExchangeMs);
      http::RequestHeaders head;
      head.method = method;
      head.path = path;
      head.headers.add("user-agent", "eldric-edge-acme/1");
      head.headers.add("accept",
                       "application/json, application/pem-certificate-chain, "
                       "application/ocsp-response");
      if (method == "POST") {
        head.headers.add("content-type", type);
        head.headers.add("content-length", std::to_string(body.size()));
      }
      ex->client->start(head, ex.get(), kExchangeMs);
      if (!body.empty() && !ex->finished) ex->client->send(body);
    });
    bool ok = false;
    {
      std::unique_lock<std::mutex> lock(ex->mu);
      ex->cv.wait_for(lock, std::chrono::milliseconds(kExchangeMs + kLoopGraceMs),
                      [&] { return ex->done; });
      if (!ex->done) {
        *error = request.url + ": the event loop did not run the exchange";
      } else if (!ex->error.empty()) {
        *error = request.url + ": " + ex->error;
      } else {
        *out = std::move(ex->response);
        ok = true;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    current_.reset();
    return ok;
  }

  // Ends the exchange under way for its caller at once; the loop drops
  // the connection when it next runs.
  void interrupt() override {
    std::shared_ptr<Exchange> ex;
    {
      std::lock_guard<std::mutex> lock(mu_);
      interrupted_ = true;
      ex = current_;
    }
    if (!ex) return;
    {
      std::lock_guard<std::mutex> lock(ex->mu);
      if (!ex->done) {
        ex->done = true;
        ex->error = "interrupted (shutting down)";
      }
    }
    ex->cv.notify_all();
    loop_.post([ex] { ex->finish("interrupted"); });
  }

 private:
  Dispatcher& loop_;
  tls::SslCtxPtr tls_;
  std::mutex mu_;
  bool interrupted_ = false;
  std::shared_ptr<Exchange> current_;
  std::shared_ptr<Registry> registry_ = std::make_shared<Registry>();
};

}  // namespace

std::unique_ptr<acme::Transport> makeAcmeTransport(Dispatcher& loop, const std::string& ca_file,
                                                   std::string* error) {
  auto tls = tls::makeClientContext(ca_file, "", "", {"http/1.1"}, error);
  if (!tls) return nullptr;
  return std::make_unique<EdgeTransport>(loop, std::move(tls));
}

}  // namespace eldric::server
