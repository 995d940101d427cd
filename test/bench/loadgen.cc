// loadgen: an open-loop HTTP/1.1 load generator with coordinated-omission
// corrected latency, in the spirit of wrk2 (which Debian does not ship).
//
// Requests are scheduled at a fixed total rate (constant interval or
// Poisson arrivals), independent of how fast responses come back. A request
// that comes due while every connection is busy waits in a queue; its
// latency runs from its INTENDED send time to the last byte of its response,
// so a stalled server shows up as growing latency instead of as fewer,
// fast-looking samples. Single thread, epoll, non-blocking sockets,
// plaintext or TLS (BoringSSL), K keep-alive connections, no pipelining.
// Loopback benchmarks only: the peer's certificate is not verified.
//
// Output: one JSON line on stdout, one human line on stderr.

#include <errno.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test/bench/client.h"
#include "test/bench/histogram.h"

namespace {

using loadgen::FlagReader;
using loadgen::NowNs;
using loadgen::Target;

// --- flags ---------------------------------------------------------------------
struct Options {
  std::string url;
  std::string method = "GET";
  std::vector<std::string> headers;
  std::string body;
  double rate = 0;       // requests per second, all connections together
  double duration = 10;  // seconds measured
  double warmup = 0;     // seconds scheduled before the measured window
  int connections = 1;
  bool poisson = false;
  double timeout_ms = 2000;          // per request, from its actual send
  uint64_t max_outstanding = 10000;  // queued + in flight
  uint64_t seed = 1;
  double spin_us = 0;  // poll instead of sleeping this close to a deadline
  bool quiet = false;
};

const char* kUsage = R"(usage: loadgen --url URL --rate N [flags]

Open-loop HTTP/1.1 load at a fixed request rate; latency from each request's
intended send time to the last byte of its response (coordinated omission
corrected, like wrk2). One JSON line on stdout, one human line on stderr.

  --url URL               http://HOST:PORT/PATH or https://... (also positional)
  --rate N                requests/s, all connections together (required)
  --duration S            measured seconds (default 10)
  --warmup S              seconds of load before the measured window (default 0)
  --connections K, -c K   keep-alive connections, opened before the clock starts (default 1)
  --dist constant|poisson arrival process (default constant)
  --method M, -X M        request method (default GET, POST if a body is given)
  --header 'N: V', -H     extra request header (repeatable)
  --body STRING           request body (Content-Length is added)
  --body-file PATH        request body from a file
  --timeout-ms N          a request unanswered N ms after it was sent is a
                          timeout; its connection is closed and reopened (default 2000)
  --max-outstanding N     hard cap on queued + in-flight requests; requests due
                          beyond it are dropped and counted (default 10000)
  --seed N                Poisson seed (default 1)
  --spin-us N             busy-poll the last N µs before each send instead of
                          sleeping: sends on time, costs a core (default 0)
  --quiet                 no human line
Loopback targets only (127.0.0.0/8, ::1): anything else is refused.
TLS: the certificate is not verified; ALPN http/1.1.
Exit code: 0 if every scheduled request got a 2xx answer, 1 otherwise, 2 on bad usage.
)";

[[noreturn]] void Usage(const std::string& err) { loadgen::ExitWithUsage("loadgen", kUsage, err); }

Options ParseFlags(int argc, char** argv) {
  Options o;
  bool method_set = false;
  FlagReader f(argc, argv, Usage);
  while (f.Next()) {
    const std::string& a = f.name();
    if (a == "--help" || a == "-h")
      Usage("");
    else if (a == "--url")
      o.url = f.Value();
    else if (a == "--rate")
      o.rate = f.Num();
    else if (a == "--duration")
      o.duration = f.Num();
    else if (a == "--warmup")
      o.warmup = f.Num();
    else if (a == "--connections" || a == "-c")
      o.connections = int(f.Num());
    else if (a == "--dist") {
      std::string d = f.Value();
      if (d == "poisson")
        o.poisson = true;
      else if (d != "constant")
        Usage("--dist is constant or poisson");
    } else if (a == "--method" || a == "-X") {
      o.method = f.Value();
      method_set = true;
    } else if (a == "--header" || a == "-H")
      o.headers.push_back(f.Value());
    else if (a == "--body")
      o.body = f.Value();
    else if (a == "--body-file") {
      std::string path = f.Value();
      std::ifstream in(path, std::ios::binary);
      if (!in) Usage("cannot read " + path);
      std::stringstream ss;
      ss << in.rdbuf();
      o.body = ss.str();
    } else if (a == "--timeout-ms")
      o.timeout_ms = f.Num();
    else if (a == "--max-outstanding")
      o.max_outstanding = uint64_t(f.Num());
    else if (a == "--seed")
      o.seed = uint64_t(f.Num());
    else if (a == "--spin-us")
      o.spin_us = f.Num();
    else if (a == "--quiet")
      o.quiet = true;
    else if (a.rfind("-", 0) != 0 && o.url.empty())
      o.url = a;
    else
      Usage("unknown flag " + a);
  }
  if (o.url.empty()) Usage("--url is required");
  if (!(o.rate > 0) || o.rate > 1e6) Usage("--rate must be in (0, 1000000]");
  if (o.connections < 1 || o.connections > 10000) Usage("--connections must be 1..10000");
  if (!(o.duration > 0) || o.duration + o.warmup > 3600)
    Usage("--duration must be > 0, and --duration + --warmup at most 3600 s");
  if (o.max_outstanding < 1) Usage("--max-outstanding must be >= 1");
  if (!method_set && !o.body.empty()) o.method = "POST";
  return o;
}

Target ParseUrl(const std::string& url) {
  Target t;
  std::string err;
  if (!loadgen::ParseUrl(url, &t, &err)) Usage(err);
  return t;
}

// --- the run ---------------------------------------------------------------------
enum class State { kDown, kConnecting, kHandshake, kIdle, kBusy };

struct Conn {
  int fd = -1;
  SSL* ssl = nullptr;
  State state = State::kDown;
  uint32_t events = 0;      // current epoll interest
  bool want_write = false;  // a write (or the handshake) waits for EPOLLOUT
  bool want_read_for_write = false;
  size_t woff = 0;  // bytes of the request written
  uint64_t intended = 0, sent = 0;
  loadgen::TlsInput in;  // TLS: what the socket under the BIO did
  int fails = 0;         // consecutive connection failures
  uint64_t reconnect_at = 0;
  loadgen::ResponseParser parser;
};

struct Stats {
  loadgen::Histogram latency;   // intended send -> last byte (what is reported)
  loadgen::Histogram service;   // actual send -> last byte (coordinated omission NOT corrected)
  loadgen::Histogram send_lag;  // intended -> actual send (queueing + timer lateness)
  uint64_t scheduled = 0, ok = 0, non2xx = 0, timeouts = 0, failed = 0, overflow = 0,
           unfinished = 0;
  uint64_t conn_errors = 0, reconnects = 0;
  uint64_t last_complete = 0;
};

class Runner {
 public:
  Runner(const Options& o, const Target& t) : o_(o), t_(t), rng_(o.seed) {}

  int Run();

 private:
  void Fail(const char* what) {
    fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
    exit(1);
  }
  void Open(Conn& c, uint64_t now);
  enum class Why { kError, kPeerClosed, kTimeout, kDone };
  void Close(Conn& c, uint64_t now, Why why);
  void SetEvents(Conn& c);
  void OnEvent(Conn& c, uint32_t ev, uint64_t now);
  void Handshake(Conn& c, uint64_t now);
  void Send(Conn& c, uint64_t intended, uint64_t now);
  void TryWrite(Conn& c, uint64_t now);
  void TryRead(Conn& c, uint64_t now);
  void Completed(Conn& c, uint64_t now);
  void MakeIdle(Conn& c);
  void Dispatch();
  uint64_t NextInterval();

  const Options& o_;
  const Target& t_;
  std::mt19937_64 rng_;
  std::string request_;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  SSL_CTX* ctx_ = nullptr;
  int ep_ = -1;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<Conn*> idle_;
  std::deque<uint64_t> queue_;  // intended send times of requests waiting for a connection
  uint64_t busy_ = 0;
  uint64_t measure_from_ = 0;  // requests intended before this are warm-up
  bool head_ = false;
  Stats s_;
  char buf_[65536];
};

uint64_t Runner::NextInterval() {
  double mean_ns = 1e9 / o_.rate;
  if (!o_.poisson) return 0;  // constant: computed from the index instead
  std::exponential_distribution<double> d(1.0 / mean_ns);
  return uint64_t(d(rng_));
}

void Runner::SetEvents(Conn& c) {
  uint32_t want = EPOLLIN | EPOLLRDHUP;
  if (c.want_write || c.state == State::kConnecting) want |= EPOLLOUT;
  if (want == c.events) return;
  epoll_event e{};
  e.events = want;
  e.data.ptr = &c;
  if (epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e) != 0) Fail("epoll_ctl");
  c.events = want;
}

void Runner::Open(Conn& c, uint64_t now) {
  bool failed = false;
  c.fd = loadgen::ConnectNonBlocking(addr_, addr_len_, &failed);
  if (c.fd < 0) Fail("socket");
  c.state = State::kConnecting;
  c.want_write = false;
  c.want_read_for_write = false;
  epoll_event e{};
  e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  e.data.ptr = &c;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e) != 0) Fail("epoll_ctl");
  c.events = e.events;
  if (failed) Close(c, now, Why::kError);
}

// Closes the connection and schedules its reopening: at once, or after a
// growing backoff while it keeps failing. A request in flight on it is lost:
// a timeout or a failure, by `why`.
void Runner::Close(Conn& c, uint64_t now, Why why) {
  if (c.state == State::kBusy) {
    busy_--;
    if (c.intended >= measure_from_) (why == Why::kTimeout ? s_.timeouts : s_.failed)++;
  }
  if (c.state == State::kIdle) idle_.erase(std::find(idle_.begin(), idle_.end(), &c));
  if (c.ssl) {
    SSL_free(c.ssl);
    c.ssl = nullptr;
  }
  if (c.fd >= 0) {
    close(c.fd);  // also leaves the epoll set
    c.fd = -1;
  }
  c.state = State::kDown;
  if (why == Why::kError) {
    s_.conn_errors++;
    c.fails++;
  } else {
    s_.reconnects++;
  }
  c.reconnect_at =
      now + (c.fails ? std::min<uint64_t>(500000000ull, 1000000ull << std::min(c.fails, 9)) : 0);
}

void Runner::Handshake(Conn& c, uint64_t now) {
  int r = loadgen::HandshakeStep(c.ssl, &c.want_write);
  if (r == 1) {
    MakeIdle(c);
    return;
  }
  if (r < 0) {
    Close(c, now, Why::kError);
    return;
  }
  SetEvents(c);
}

void Runner::MakeIdle(Conn& c) {
  c.state = State::kIdle;
  c.fails = 0;
  c.want_write = false;
  idle_.push_back(&c);
  SetEvents(c);
}

void Runner::Send(Conn& c, uint64_t intended, uint64_t now) {
  idle_.erase(std::find(idle_.begin(), idle_.end(), &c));
  c.state = State::kBusy;
  busy_++;
  c.intended = intended;
  c.sent = now;
  c.woff = 0;
  c.parser.Reset(head_);
  if (intended >= measure_from_) s_.send_lag.Record(now - intended);
  TryWrite(c, now);
}

void Runner::TryWrite(Conn& c, uint64_t now) {
  // TLS: retried with the same arguments (the request and offset).
  ssize_t r = loadgen::WriteRest(c.fd, c.ssl, request_, &c.woff);
  if (r == loadgen::kIoWantWrite || r == loadgen::kIoWantRead) {
    c.want_write = r == loadgen::kIoWantWrite;
    c.want_read_for_write = r == loadgen::kIoWantRead;
    SetEvents(c);
    return;
  }
  if (r != 0) {
    Close(c, now, Why::kError);
    return;
  }
  c.want_write = false;
  c.want_read_for_write = false;
  SetEvents(c);
}

void Runner::Completed(Conn& c, uint64_t now) {
  busy_--;
  if (c.intended >= measure_from_) {
    s_.latency.Record(now - c.intended);
    s_.service.Record(now - c.sent);
    if (c.parser.status() >= 200 && c.parser.status() < 300)
      s_.ok++;
    else
      s_.non2xx++;
    s_.last_complete = now;
  }
  if (!c.parser.keep_alive()) {  // the server said Connection: close
    c.state = State::kDown;      // no longer busy, not idle
    Close(c, now, Why::kDone);
    return;
  }
  MakeIdle(c);
}

void Runner::TryRead(Conn& c, uint64_t now) {
  for (;;) {
    ssize_t n = loadgen::ReadSome(c.fd, c.ssl, c.in, buf_, sizeof buf_);
    if (n == loadgen::kIoWantRead) break;
    if (n == loadgen::kIoWantWrite) {
      c.want_write = true;
      SetEvents(c);
      break;
    }
    if (n <= 0) {  // end of stream or error
      if (c.state == State::kBusy && n == 0 && c.woff == request_.size()) {
        c.parser.Finish();  // a body delimited by the close
        if (c.parser.complete()) {
          Completed(c, NowNs());
          return;
        }
      }
      if (c.state == State::kIdle && n == 0)
        Close(c, now, Why::kPeerClosed);  // keep-alive closed by the server
      else
        Close(c, now, Why::kError);
      return;
    }
    if (c.state != State::kBusy) {  // bytes nobody asked for
      Close(c, now, Why::kError);
      return;
    }
    bool ok = c.parser.Feed(buf_, size_t(n));
    if (c.parser.complete()) {
      Completed(c, NowNs());
      return;
    }
    if (!ok) {
      Close(c, now, Why::kError);
      return;
    }
  }
}

void Runner::OnEvent(Conn& c, uint32_t ev, uint64_t now) {
  if (c.state == State::kDown) return;  // closed earlier in this batch
  if (c.ssl && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
    loadgen::PullTls(c.fd, c.ssl, buf_, sizeof buf_, &c.in);
  if (c.state == State::kConnecting) {
    if (loadgen::SocketError(c.fd) || (ev & (EPOLLERR | EPOLLHUP))) {
      Close(c, now, Why::kError);
      return;
    }
    if (!(ev & EPOLLOUT)) return;
    if (!ctx_) {
      MakeIdle(c);
      return;
    }
    c.ssl = loadgen::NewTlsClient(ctx_, c.fd, t_.host);
    c.in = loadgen::TlsInput{};
    c.state = State::kHandshake;
    Handshake(c, now);
    return;
  }
  if (c.state == State::kHandshake) {
    if (c.in.eof)
      Close(c, now, Why::kError);
    else
      Handshake(c, now);
    return;
  }
  if (c.state == State::kBusy && (c.want_write || c.want_read_for_write) &&
      (ev & (EPOLLOUT | EPOLLIN))) {
    TryWrite(c, now);
    if (c.state != State::kBusy) return;
  }
  if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) TryRead(c, now);
}

void Runner::Dispatch() {
  while (!queue_.empty() && !idle_.empty()) {
    uint64_t intended = queue_.front();
    queue_.pop_front();
    Send(*idle_.front(), intended, NowNs());
  }
}

int Runner::Run() {
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);  // wake up on time, not up to 50 µs late

  std::string err;
  if (!loadgen::ResolveLoopback(t_, &addr_, &addr_len_, &err)) {
    fprintf(stderr, "loadgen: %s\n", err.c_str());
    return 2;
  }

  // The request, built once.
  request_ = loadgen::BuildRequest(o_.method, t_, o_.headers, o_.body);
  head_ = o_.method == "HEAD";
  if (t_.tls) ctx_ = loadgen::NewClientContext(false);

  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) Fail("epoll_create1");
  std::vector<epoll_event> evs(std::max(64, o_.connections));

  // Open every connection (and finish every handshake) before the clock
  // starts: the run measures requests, not connection set-up.
  uint64_t now = NowNs();
  for (int i = 0; i < o_.connections; i++) {
    conns_.push_back(std::make_unique<Conn>());
    Open(*conns_.back(), now);
  }
  uint64_t connect_deadline = now + 5000000000ull;
  while (idle_.size() < conns_.size() && (now = NowNs()) < connect_deadline) {
    for (auto& c : conns_)
      if (c->state == State::kDown && c->reconnect_at <= now && c->fails < 3) Open(*c, now);
    int n = epoll_wait(ep_, evs.data(), int(evs.size()), 10);
    now = NowNs();
    for (int i = 0; i < n; i++) OnEvent(*static_cast<Conn*>(evs[i].data.ptr), evs[i].events, now);
  }
  if (idle_.empty()) {
    fprintf(stderr, "loadgen: could not connect to %s\n", o_.url.c_str());
    return 1;
  }
  if (idle_.size() < conns_.size())
    fprintf(stderr, "loadgen: only %zu of %zu connections opened\n", idle_.size(), conns_.size());
  uint64_t setup_errors = s_.conn_errors;
  s_.conn_errors = 0;
  s_.reconnects = 0;

  const uint64_t timeout_ns = uint64_t(o_.timeout_ms * 1e6);
  const uint64_t spin_ns = uint64_t(o_.spin_us * 1e3);
  const uint64_t t0 = NowNs();
  measure_from_ = t0 + uint64_t(o_.warmup * 1e9);
  const uint64_t t_end = measure_from_ + uint64_t(o_.duration * 1e9);
  const uint64_t t_drain = t_end + timeout_ns;
  const double interval_ns = 1e9 / o_.rate;
  uint64_t index = 0;  // constant arrivals: t0 + index * interval (no drift)
  uint64_t next_due = t0;

  for (;;) {
    now = NowNs();
    // Everything that came due, in order; beyond the cap it is dropped.
    while (next_due <= now && next_due < t_end) {
      if (next_due >= measure_from_) s_.scheduled++;
      if (queue_.size() + busy_ < o_.max_outstanding)
        queue_.push_back(next_due);
      else if (next_due >= measure_from_)
        s_.overflow++;
      index++;
      next_due =
          o_.poisson ? next_due + NextInterval() : t0 + uint64_t(double(index) * interval_ns);
    }
    // Reopen closed connections; expire requests waiting too long for a response.
    uint64_t wake = next_due < t_end ? next_due : t_drain;
    for (auto& cp : conns_) {
      Conn& c = *cp;
      if (c.state == State::kDown) {
        if (c.reconnect_at <= now)
          Open(c, now);
        else
          wake = std::min(wake, c.reconnect_at);
      } else if (c.state == State::kBusy) {
        if (now - c.sent >= timeout_ns) {
          Close(c, now, Why::kTimeout);
          wake = std::min(wake, now);
        } else {
          wake = std::min(wake, c.sent + timeout_ns);
        }
      }
    }
    Dispatch();
    if (now >= t_end && queue_.empty() && busy_ == 0) break;
    if (now >= t_drain) break;

    now = NowNs();
    timespec ts{0, 0};
    // With --spin-us, sleep until that long before the deadline and poll
    // from there: timer wake-ups on a VM run tens of µs late.
    if (wake > now + spin_ns) {
      uint64_t d = wake - now - spin_ns;
      ts.tv_sec = time_t(d / 1000000000ull);
      ts.tv_nsec = long(d % 1000000000ull);
    }
    int n = epoll_pwait2(ep_, evs.data(), int(evs.size()), &ts, nullptr);
    if (n < 0 && errno != EINTR) Fail("epoll_pwait2");
    now = NowNs();
    for (int i = 0; i < n; i++) OnEvent(*static_cast<Conn*>(evs[i].data.ptr), evs[i].events, now);
  }
  // Whatever is still queued or in flight after the drain never finished.
  for (uint64_t q : queue_)
    if (q >= measure_from_) s_.unfinished++;
  for (auto& c : conns_)
    if (c->state == State::kBusy && c->intended >= measure_from_) s_.unfinished++;

  // --- report ---
  const double dur_s = o_.duration;
  uint64_t completed = s_.ok + s_.non2xx;
  double span_s = std::max(dur_s, s_.last_complete > measure_from_
                                      ? double(s_.last_complete - measure_from_) / 1e9
                                      : 0.0);
  double achieved = completed / span_s;
  uint64_t errors = s_.non2xx + s_.timeouts + s_.failed + s_.overflow + s_.unfinished;
  auto us = [](uint64_t ns) { return double(ns) / 1000.0; };
  auto dist = loadgen::DistJson;
  std::string url_json = loadgen::JsonEscape(o_.url);
  printf(
      "{\"url\":\"%s\",\"rate\":%.1f,\"dist\":\"%s\",\"duration_s\":%.3f,\"connections\":%d,"
      "\"achieved_rate\":%.1f,\"scheduled\":%llu,\"completed\":%llu,\"ok\":%llu,\"non2xx\":%llu,"
      "\"timeouts\":%llu,\"failed\":%llu,\"overflow\":%llu,\"unfinished\":%llu,\"errors\":%llu,"
      "\"conn_errors\":%llu,\"reconnects\":%llu,\"setup_conn_errors\":%llu,"
      "\"latency_us\":%s,\"service_us\":%s,\"send_lag_us\":%s}\n",
      url_json.c_str(), o_.rate, o_.poisson ? "poisson" : "constant", dur_s, o_.connections,
      achieved, (unsigned long long)s_.scheduled, (unsigned long long)completed,
      (unsigned long long)s_.ok, (unsigned long long)s_.non2xx, (unsigned long long)s_.timeouts,
      (unsigned long long)s_.failed, (unsigned long long)s_.overflow,
      (unsigned long long)s_.unfinished, (unsigned long long)errors,
      (unsigned long long)s_.conn_errors, (unsigned long long)s_.reconnects,
      (unsigned long long)setup_errors, dist(s_.latency, true).c_str(),
      dist(s_.service, true).c_str(), dist(s_.send_lag, false).c_str());
  fflush(stdout);
  if (!o_.quiet) {
    fprintf(stderr,
            "loadgen: %s %.0f req/s (%s) for %.1f s over %d conns: achieved %.1f req/s, %llu ok, "
            "%llu errors "
            "(non-2xx %llu, timeouts %llu, failed %llu, dropped %llu, unfinished %llu); latency us "
            "p50 %.1f p90 %.1f "
            "p99 %.1f p99.9 %.1f max %.1f (uncorrected p50 %.1f p99 %.1f)\n",
            o_.url.c_str(), o_.rate, o_.poisson ? "poisson" : "constant", dur_s, o_.connections,
            achieved, (unsigned long long)s_.ok, (unsigned long long)errors,
            (unsigned long long)s_.non2xx, (unsigned long long)s_.timeouts,
            (unsigned long long)s_.failed, (unsigned long long)s_.overflow,
            (unsigned long long)s_.unfinished, us(s_.latency.Percentile(50)),
            us(s_.latency.Percentile(90)), us(s_.latency.Percentile(99)),
            us(s_.latency.Percentile(99.9)), us(s_.latency.max()), us(s_.service.Percentile(50)),
            us(s_.service.Percentile(99)));
  }
  return errors ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseFlags(argc, argv);
  Target t = ParseUrl(o.url);
  Runner r(o, t);
  return r.Run();
}
