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

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
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

#include "llhttp.h"
#include "test/bench/histogram.h"

namespace {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

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

[[noreturn]] void Usage(const std::string& err) {
  if (!err.empty()) {
    fprintf(stderr, "loadgen: %s (see --help)\n", err.c_str());
    exit(2);
  }
  fputs(kUsage, stdout);
  exit(0);
}

double ParseNum(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  errno = 0;
  double d = strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !std::isfinite(d) || d < 0)
    Usage("bad value for " + flag + ": " + v);
  return d;
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  bool method_set = false;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i], v;
    bool has_inline = false;
    if (a.rfind("--", 0) == 0) {
      size_t eq = a.find('=');
      if (eq != std::string::npos) {
        v = a.substr(eq + 1);
        a = a.substr(0, eq);
        has_inline = true;
      }
    }
    auto value = [&]() -> std::string {
      if (has_inline) return v;
      if (i + 1 >= argc) Usage("missing value for " + a);
      return argv[++i];
    };
    if (a == "--help" || a == "-h")
      Usage("");
    else if (a == "--url")
      o.url = value();
    else if (a == "--rate")
      o.rate = ParseNum(a, value());
    else if (a == "--duration")
      o.duration = ParseNum(a, value());
    else if (a == "--warmup")
      o.warmup = ParseNum(a, value());
    else if (a == "--connections" || a == "-c")
      o.connections = int(ParseNum(a, value()));
    else if (a == "--dist") {
      std::string d = value();
      if (d == "poisson")
        o.poisson = true;
      else if (d != "constant")
        Usage("--dist is constant or poisson");
    } else if (a == "--method" || a == "-X") {
      o.method = value();
      method_set = true;
    } else if (a == "--header" || a == "-H")
      o.headers.push_back(value());
    else if (a == "--body")
      o.body = value();
    else if (a == "--body-file") {
      std::string path = value();
      std::ifstream f(path, std::ios::binary);
      if (!f) Usage("cannot read " + path);
      std::stringstream ss;
      ss << f.rdbuf();
      o.body = ss.str();
    } else if (a == "--timeout-ms")
      o.timeout_ms = ParseNum(a, value());
    else if (a == "--max-outstanding")
      o.max_outstanding = uint64_t(ParseNum(a, value()));
    else if (a == "--seed")
      o.seed = uint64_t(ParseNum(a, value()));
    else if (a == "--spin-us")
      o.spin_us = ParseNum(a, value());
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

struct Target {
  bool tls = false;
  std::string host, port, path, host_header;
};

Target ParseUrl(const std::string& url) {
  Target t;
  std::string rest;
  if (url.rfind("http://", 0) == 0)
    rest = url.substr(7);
  else if (url.rfind("https://", 0) == 0) {
    t.tls = true;
    rest = url.substr(8);
  } else
    Usage("URL must start with http:// or https://");
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  t.host_header = authority;
  if (!authority.empty() && authority[0] == '[') {  // [::1]:443
    size_t close = authority.find(']');
    if (close == std::string::npos) Usage("bad URL host");
    t.host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      t.port = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    t.host = authority.substr(0, colon);
    if (colon != std::string::npos) t.port = authority.substr(colon + 1);
  }
  if (t.port.empty()) t.port = t.tls ? "443" : "80";
  if (t.host.empty()) Usage("URL has no host");
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
  bool complete = false, keep_alive = true;
  bool eof = false, reset = false;  // TLS: the socket ended (cleanly or not) under the BIO
  int status = 0;
  int fails = 0;  // consecutive connection failures
  uint64_t reconnect_at = 0;
  llhttp_t parser;
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
  void Pull(Conn& c);
  void Completed(Conn& c, uint64_t now);
  void MakeIdle(Conn& c);
  void Dispatch();
  uint64_t NextInterval();
  static int OnMessageComplete(llhttp_t* p);

  const Options& o_;
  const Target& t_;
  std::mt19937_64 rng_;
  std::string request_;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  SSL_CTX* ctx_ = nullptr;
  int ep_ = -1;
  llhttp_settings_t settings_{};
  std::vector<std::unique_ptr<Conn>> conns_;
  std::deque<Conn*> idle_;
  std::deque<uint64_t> queue_;  // intended send times of requests waiting for a connection
  uint64_t busy_ = 0;
  uint64_t measure_from_ = 0;  // requests intended before this are warm-up
  bool head_ = false;
  Stats s_;
  char buf_[65536];
};

int Runner::OnMessageComplete(llhttp_t* p) {
  Conn* c = static_cast<Conn*>(p->data);
  c->complete = true;
  c->keep_alive = llhttp_should_keep_alive(p);
  return HPE_PAUSED;  // no pipelining: whatever follows is not ours
}

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
  c.fd = socket(addr_.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (c.fd < 0) Fail("socket");
  int one = 1;
  setsockopt(c.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  c.state = State::kConnecting;
  c.want_write = false;
  c.want_read_for_write = false;
  epoll_event e{};
  e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  e.data.ptr = &c;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e) != 0) Fail("epoll_ctl");
  c.events = e.events;
  if (connect(c.fd, reinterpret_cast<sockaddr*>(&addr_), addr_len_) != 0 && errno != EINPROGRESS) {
    Close(c, now, Why::kError);
  }
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
  int r = SSL_do_handshake(c.ssl);
  if (r == 1) {
    MakeIdle(c);
    return;
  }
  int err = SSL_get_error(c.ssl, r);
  if (err == SSL_ERROR_WANT_READ)
    c.want_write = false;
  else if (err == SSL_ERROR_WANT_WRITE)
    c.want_write = true;
  else {
    ERR_clear_error();
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
  c.complete = false;
  c.status = 0;
  llhttp_init(&c.parser, HTTP_RESPONSE, &settings_);
  c.parser.data = &c;
  if (intended >= measure_from_) s_.send_lag.Record(now - intended);
  TryWrite(c, now);
}

void Runner::TryWrite(Conn& c, uint64_t now) {
  while (c.woff < request_.size()) {
    const char* p = request_.data() + c.woff;
    size_t n = request_.size() - c.woff;
    if (c.ssl) {
      int r = SSL_write(c.ssl, p, int(n));  // retried with the same arguments
      if (r > 0) {
        c.woff += size_t(r);
        continue;
      }
      int err = SSL_get_error(c.ssl, r);
      if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
        c.want_write = err == SSL_ERROR_WANT_WRITE;
        c.want_read_for_write = err == SSL_ERROR_WANT_READ;
        SetEvents(c);
        return;
      }
      ERR_clear_error();
      Close(c, now, Why::kError);
      return;
    }
    ssize_t r = send(c.fd, p, n, MSG_NOSIGNAL);
    if (r > 0) {
      c.woff += size_t(r);
      continue;
    }
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
      c.want_write = true;
      SetEvents(c);
      return;
    }
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
    if (c.status >= 200 && c.status < 300)
      s_.ok++;
    else
      s_.non2xx++;
    s_.last_complete = now;
  }
  if (!c.keep_alive) {       // the server said Connection: close
    c.state = State::kDown;  // no longer busy, not idle
    Close(c, now, Why::kDone);
    return;
  }
  MakeIdle(c);
}

void Runner::TryRead(Conn& c, uint64_t now) {
  for (;;) {
    ssize_t n;
    if (c.ssl) {
      int r = SSL_read(c.ssl, buf_, sizeof buf_);
      if (r > 0)
        n = r;
      else {
        int err = SSL_get_error(c.ssl, r);
        if (err == SSL_ERROR_WANT_READ && !c.eof) break;
        if (err == SSL_ERROR_WANT_READ) err = c.reset ? SSL_ERROR_SYSCALL : SSL_ERROR_ZERO_RETURN;
        if (err == SSL_ERROR_WANT_WRITE) {
          c.want_write = true;
          SetEvents(c);
          break;
        }
        ERR_clear_error();
        n = err == SSL_ERROR_ZERO_RETURN ? 0 : -1;
        if (n < 0) errno = ECONNRESET;
      }
    } else {
      n = recv(c.fd, buf_, sizeof buf_, 0);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) break;
    }
    if (n <= 0) {  // end of stream or error
      if (c.state == State::kBusy && n == 0 && c.woff == request_.size()) {
        llhttp_finish(&c.parser);  // a body delimited by the close
        if (c.complete) {
          c.keep_alive = false;
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
    llhttp_errno_t e = llhttp_execute(&c.parser, buf_, size_t(n));
    if (c.complete) {
      Completed(c, NowNs());
      return;
    }
    if (e != HPE_OK) {
      Close(c, now, Why::kError);
      return;
    }
  }
}

// TLS reads go through a memory BIO fed by one large recv() per readiness
// event: BoringSSL ignores read-ahead and would otherwise read each record's
// header and body with two syscalls.
void Runner::Pull(Conn& c) {
  ssize_t n = recv(c.fd, buf_, sizeof buf_, 0);
  if (n > 0) {
    BIO_write(SSL_get_rbio(c.ssl), buf_, int(n));
  } else if (n == 0) {
    c.eof = true;
  } else if (errno != EAGAIN && errno != EINTR) {
    c.eof = c.reset = true;
  }
}

void Runner::OnEvent(Conn& c, uint32_t ev, uint64_t now) {
  if (c.state == State::kDown) return;  // closed earlier in this batch
  if (c.ssl && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))) Pull(c);
  if (c.state == State::kConnecting) {
    int err = 0;
    socklen_t len = sizeof err;
    getsockopt(c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err || (ev & (EPOLLERR | EPOLLHUP))) {
      Close(c, now, Why::kError);
      return;
    }
    if (!(ev & EPOLLOUT)) return;
    if (!ctx_) {
      MakeIdle(c);
      return;
    }
    c.ssl = SSL_new(ctx_);
    BIO* rbio = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(rbio, -1);  // empty means "retry", not end of stream
    SSL_set_bio(c.ssl, rbio, BIO_new_socket(c.fd, BIO_NOCLOSE));
    c.eof = c.reset = false;
    SSL_set_connect_state(c.ssl);
    if (!t_.host.empty() && !isdigit(static_cast<unsigned char>(t_.host[0])) &&
        t_.host.find(':') == std::string::npos)
      SSL_set_tlsext_host_name(c.ssl, t_.host.c_str());
    c.state = State::kHandshake;
    Handshake(c, now);
    return;
  }
  if (c.state == State::kHandshake) {
    if (c.eof)
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

  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(t_.host.c_str(), t_.port.c_str(), &hints, &res) != 0 || !res) {
    fprintf(stderr, "loadgen: cannot resolve %s\n", t_.host.c_str());
    return 2;
  }
  memcpy(&addr_, res->ai_addr, res->ai_addrlen);
  addr_len_ = res->ai_addrlen;
  freeaddrinfo(res);
  // A load generator aimed elsewhere by mistake is a flood: loopback only.
  bool loopback = false;
  if (addr_.ss_family == AF_INET) {
    loopback = (ntohl(reinterpret_cast<sockaddr_in*>(&addr_)->sin_addr.s_addr) >> 24) == 127;
  } else if (addr_.ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<sockaddr_in6*>(&addr_)->sin6_addr;
    loopback = IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  if (!loopback) {
    fprintf(stderr, "loadgen: %s is not a loopback address; refusing\n", t_.host.c_str());
    return 2;
  }

  // The request, built once.
  std::string req = o_.method + " " + t_.path + " HTTP/1.1\r\n";
  bool has_host = false, has_len = false;
  for (const auto& h : o_.headers) {
    std::string lower = h.substr(0, h.find(':'));
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    has_host |= lower == "host";
    has_len |= lower == "content-length";
    req += h + "\r\n";
  }
  if (!has_host) req += "Host: " + t_.host_header + "\r\n";
  if (!has_len && (!o_.body.empty() || o_.method == "POST" || o_.method == "PUT"))
    req += "Content-Length: " + std::to_string(o_.body.size()) + "\r\n";
  req += "\r\n" + o_.body;
  request_ = req;
  head_ = o_.method == "HEAD";

  llhttp_settings_init(&settings_);
  settings_.on_message_complete = OnMessageComplete;
  settings_.on_headers_complete = [](llhttp_t* p) -> int {
    Conn* c = static_cast<Conn*>(p->data);
    c->status = p->status_code;
    return 0;
  };
  if (head_) {
    // A response to HEAD has no body whatever its headers say.
    settings_.on_headers_complete = [](llhttp_t* p) -> int {
      static_cast<Conn*>(p->data)->status = p->status_code;
      return 1;
    };
  }

  if (t_.tls) {
    ctx_ = SSL_CTX_new(TLS_method());
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_NONE, nullptr);
    static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
    SSL_CTX_set_alpn_protos(ctx_, alpn, sizeof alpn);
  }

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
  auto dist = [&](const loadgen::Histogram& h, bool full) {
    char b[512];
    if (full)
      snprintf(b, sizeof b,
               "{\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,\"max\":%.1f,\"min\":%.1f,"
               "\"mean\":%.1f}",
               us(h.Percentile(50)), us(h.Percentile(90)), us(h.Percentile(99)),
               us(h.Percentile(99.9)), us(h.max()), us(h.min()), h.mean() / 1000.0);
    else
      snprintf(b, sizeof b, "{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", us(h.Percentile(50)),
               us(h.Percentile(99)), us(h.max()));
    return std::string(b);
  };
  std::string url_json;
  for (char ch : o_.url) {
    if (ch == '"' || ch == '\\') url_json += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) url_json += ch;
  }
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
