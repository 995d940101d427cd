// benchclient: the native client of the benchmark's connection-heavy rows,
// where a Node or OpenSSL 3.0 client would measure itself more than the
// proxy. Two modes, one thread, epoll, BoringSSL; the plumbing (sockets,
// TLS, HTTP parsing, histograms) is test/bench/client.h, shared with
// loadgen.
//
//   handshake: K workers, each in a loop: connect, full TLS 1.3 handshake
//     (no session cache, no tickets), one request, close. Connections/s,
//     errors, handshake latency (connect() to handshake done).
//   sse: S streams, connected (and handshaken) before the clock starts, a
//     few at a time; then each POSTs a streaming chat request, the sends
//     spread evenly over --ramp seconds (or, --arrivals uniform, each at a
//     random moment of it: streams whose token schedules are not in step).
//     Time to first byte is measured from the request's send on its
//     established connection to the kernel's arrival stamp of the first
//     response bytes (SO_TIMESTAMPNS: a client late to read on a busy
//     machine does not add its lateness); gaps
//     between the arrivals of reads that delivered SSE events; token events
//     that arrived in one TLS record (plaintext: in one HTTP chunk) count as
//     merged (also reported: in one HTTP chunk, i.e. re-chunked by the
//     proxy; in one socket read); token numbers skipped (the fake router numbers them "tok0 ",
//     "tok1 ", ...) as lost. The fake router sends one event per chunk, 20 ms apart.
//
// Both modes report the client's own CPU time, to show how much of the
// machine the client took.
//
// Loopback targets only. One JSON line on stdout, one human line on stderr.

#include <errno.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "test/bench/client.h"
#include "test/bench/histogram.h"
#include "test/bench/sse.h"

namespace {

using loadgen::Histogram;
using loadgen::NowNs;

// CPU seconds this process has used (user + system): the client's own cost.
double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return double(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         double(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

struct Options {
  std::string mode;
  std::string url;
  std::string method;
  std::vector<std::string> headers;
  std::string body;
  int concurrency = 16;  // handshake: workers
  double duration = 10, warmup = 0;
  int streams = 100;     // sse
  int tokens = 0;        // sse: expected per stream (0: not checked)
  double ramp = 1;       // sse: seconds over which the requests are sent
  bool uniform = false;  // sse: each send at a random moment of the ramp
  uint64_t seed = 1;
  int connect_parallel = 32;
  double timeout = 120;  // sse: seconds after the last send
  bool quiet = false;
  bool resume = false;  // handshake: offer the previous connection's ticket
};

const char* kUsage = R"(usage: benchclient --mode handshake|sse --url URL [flags]

  --mode handshake        K workers loop: connect, full TLS 1.3 handshake (no
                          resumption), one request (Connection: close), close
    --concurrency K, -c K   workers (default 16)
    --duration S            measured seconds (default 10)
    --warmup S              seconds run before the measured window (default 0)
    --resume                each worker offers the ticket its previous connection
                            got: resumed TLS 1.3 handshakes (a full one counts as
                            an error after the first)
  --mode sse              S streaming requests on connections opened first
    --streams S             streams (default 100)
    --tokens N              token events each stream must deliver (default: not checked)
    --ramp S                the requests' sends spread evenly over S seconds (default 1)
    --arrivals even|uniform even: a send every S/streams seconds (with 20 ms tokens
                            and a period dividing 20 ms, streams' tokens come in
                            step); uniform: each send at a random moment of the
                            ramp (default even)
    --seed N                uniform arrivals' seed (default 1): the same seed, the
                            same schedule
    --connect-parallel N    connections opened at once before the clock (default 32)
    --timeout S             give up S seconds after the last send (default 120)
  --url URL               http://HOST:PORT/PATH or https://... (also positional)
  --method M, -X M        default GET, POST if a body is given
  --header 'N: V', -H     extra request header (repeatable)
  --body STRING           request body (Content-Length is added)
  --quiet                 no human line
Loopback targets only. TLS: the certificate is not verified; ALPN http/1.1.
Exit code: 0 if nothing failed, 1 otherwise, 2 on bad usage.
)";

[[noreturn]] void Usage(const std::string& err) {
  loadgen::ExitWithUsage("benchclient", kUsage, err);
}

Options ParseFlags(int argc, char** argv) {
  Options o;
  loadgen::FlagReader f(argc, argv, Usage);
  while (f.Next()) {
    const std::string& a = f.name();
    if (a == "--help" || a == "-h")
      Usage("");
    else if (a == "--mode")
      o.mode = f.Value();
    else if (a == "--url")
      o.url = f.Value();
    else if (a == "--method" || a == "-X")
      o.method = f.Value();
    else if (a == "--header" || a == "-H")
      o.headers.push_back(f.Value());
    else if (a == "--body")
      o.body = f.Value();
    else if (a == "--concurrency" || a == "-c")
      o.concurrency = int(f.Num());
    else if (a == "--duration")
      o.duration = f.Num();
    else if (a == "--warmup")
      o.warmup = f.Num();
    else if (a == "--streams")
      o.streams = int(f.Num());
    else if (a == "--tokens")
      o.tokens = int(f.Num());
    else if (a == "--ramp")
      o.ramp = f.Num();
    else if (a == "--arrivals") {
      std::string v = f.Value();
      if (v != "even" && v != "uniform") Usage("--arrivals is even or uniform");
      o.uniform = v == "uniform";
    } else if (a == "--seed") {
      double v = f.Num();
      if (!(v >= 0) || v > 1e15) Usage("--seed must be a whole number >= 0");
      o.seed = uint64_t(v);
    } else if (a == "--connect-parallel")
      o.connect_parallel = int(f.Num());
    else if (a == "--timeout")
      o.timeout = f.Num();
    else if (a == "--quiet")
      o.quiet = true;
    else if (a == "--resume")
      o.resume = true;
    else if (a.rfind("-", 0) != 0 && o.url.empty())
      o.url = a;
    else
      Usage("unknown flag " + a);
  }
  if (o.mode != "handshake" && o.mode != "sse") Usage("--mode is handshake or sse");
  if (o.url.empty()) Usage("--url is required");
  if (o.concurrency < 1 || o.concurrency > 10000) Usage("--concurrency must be 1..10000");
  if (o.streams < 1 || o.streams > 20000) Usage("--streams must be 1..20000");
  if (o.connect_parallel < 1) Usage("--connect-parallel must be >= 1");
  if (!(o.duration > 0) || o.duration + o.warmup > 3600 || o.ramp > 3600 || o.timeout > 3600)
    Usage("durations must be > 0 and at most an hour");
  if (o.method.empty()) o.method = o.body.empty() ? "GET" : "POST";
  return o;
}

enum class St { kDown, kConnecting, kHandshake, kReady, kWriting, kReading, kDone };

struct Conn {
  int index = 0;
  int fd = -1;
  SSL* ssl = nullptr;
  St st = St::kDown;
  uint32_t events = 0;
  bool want_write = false;
  int attempts = 0;
  loadgen::TlsInput in;
  loadgen::ResponseParser parser;
  size_t woff = 0;
  uint64_t t_start = 0, t_sent = 0, t_first = 0, t_last_event = 0, due = 0;
  bool got_event = false;
  loadgen::SseScanner sse;
  loadgen::SseScanner::Counts piece;  // what the body callback saw of the current read
  int chunk_tokens = 0;               // token events completed in the current HTTP chunk
  uint64_t chunk_merged = 0;          // token events beyond the first in one HTTP chunk
  SSL_SESSION* ticket = nullptr;      // --resume: the last ticket the server sent
  bool offered = false;               // this connection offered one
};

// The response body of a stream, de-chunked: into its SSE scanner, and the
// counts into what the current read delivered.
void SseBody(void* ctx, const char* p, size_t n) {
  Conn* c = static_cast<Conn*>(ctx);
  loadgen::SseScanner::Counts got = c->sse.Feed(p, n);
  c->piece.events += got.events;
  c->piece.tokens += got.tokens;
  c->chunk_tokens += got.tokens;
}

// The end of an HTTP chunk: two token events in one chunk means the proxy
// re-chunked what it read (the fake router sends one event per chunk).
void SseChunkEnd(void* ctx) {
  Conn* c = static_cast<Conn*>(ctx);
  if (c->chunk_tokens > 1) c->chunk_merged += uint64_t(c->chunk_tokens - 1);
  c->chunk_tokens = 0;
}

class Client {
 public:
  Client(const Options& o, const loadgen::Target& t) : o_(o), t_(t) {}
  int Run();

 private:
  enum class Phase { kConnect, kTls, kHttp };
  void Open(Conn& c, uint64_t now);
  void Close(Conn& c);
  void Fail(Conn& c, Phase p, uint64_t now);
  void SetEvents(Conn& c);
  void OnEvent(Conn& c, uint32_t ev, uint64_t now);
  void Connected(Conn& c, uint64_t now);
  void StartRequest(Conn& c, uint64_t now);
  void TryWrite(Conn& c, uint64_t now);
  void TryRead(Conn& c, uint64_t now, uint64_t arrival);
  void Finished(Conn& c, uint64_t now, bool ok);
  int RunHandshakes();
  int RunSse();
  void Wait(uint64_t until);

  const Options& o_;
  const loadgen::Target& t_;
  bool sse_ = false;
  sockaddr_storage addr_{};
  socklen_t addr_len_ = 0;
  SSL_CTX* ctx_ = nullptr;
  int ep_ = -1;
  std::string request_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::vector<epoll_event> evs_;
  char buf_[65536];
  bool stopping_ = false;
  uint64_t measure_from_ = 0, measure_to_ = UINT64_MAX;

  // handshake mode
  Histogram hs_, total_;
  uint64_t done_ = 0, ok_ = 0, non2xx_ = 0, resumed_ = 0, not13_ = 0, not_resumed_ = 0;
  uint64_t err_connect_ = 0, err_tls_ = 0, err_http_ = 0;
  std::string group_, cipher_;
  // sse mode
  Histogram ttfb_, ttfe_, gaps_, lag_;
  uint64_t events_ = 0, tokens_ = 0, lost_ = 0, misordered_ = 0, merged_ = 0, batched_ = 0,
           rechunked_ = 0;
  uint64_t streams_ok_ = 0, streams_failed_ = 0, non200_ = 0, incomplete_ = 0;
  int pending_ = 0;  // connecting or handshaking
  uint64_t opened_ = 0, all_done_ = 0;
  uint64_t stamped_ = 0;  // event reads with a kernel arrival time
  Histogram wake_late_;   // how long after arrival the client read them
};

void Client::SetEvents(Conn& c) {
  uint32_t want = EPOLLIN | EPOLLRDHUP;
  if (c.want_write || c.st == St::kConnecting) want |= EPOLLOUT;
  if (want == c.events) return;
  epoll_event e{};
  e.events = want;
  e.data.ptr = &c;
  epoll_ctl(ep_, EPOLL_CTL_MOD, c.fd, &e);
  c.events = want;
}

void Client::Open(Conn& c, uint64_t now) {
  bool failed = false;
  c.fd = loadgen::ConnectNonBlocking(addr_, addr_len_, &failed);
  if (c.fd < 0) {
    perror("benchclient: socket");
    exit(1);
  }
  c.st = St::kConnecting;
  c.t_start = now;
  c.want_write = false;
  c.attempts++;
  pending_++;
  opened_++;
  epoll_event e{};
  e.events = c.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  e.data.ptr = &c;
  if (epoll_ctl(ep_, EPOLL_CTL_ADD, c.fd, &e) != 0) {
    perror("benchclient: epoll_ctl");
    exit(1);
  }
  if (sse_) loadgen::EnableArrivalTimes(c.fd);
  if (failed) Fail(c, Phase::kConnect, now);
}

void Client::Close(Conn& c) {
  if (c.st == St::kConnecting || c.st == St::kHandshake) pending_--;
  if (c.ssl) SSL_free(c.ssl);
  c.ssl = nullptr;
  if (c.fd >= 0) close(c.fd);
  c.fd = -1;
  c.st = St::kDown;
}

void Client::Fail(Conn& c, Phase p, uint64_t now) {
  bool counted = !sse_ && now >= measure_from_ && now <= measure_to_ && !stopping_;
  if (counted) (p == Phase::kConnect ? err_connect_ : p == Phase::kTls ? err_tls_ : err_http_)++;
  bool was_request = c.st == St::kWriting || c.st == St::kReading;
  Close(c);
  if (sse_) {
    if (was_request) {
      c.sse.End(uint64_t(o_.tokens));
      Finished(c, now, false);
    } else if (c.attempts >= 3) {
      c.st = St::kDone;  // never connected: counted as a setup failure
      streams_failed_++;
    }
  }
}

void Client::Connected(Conn& c, uint64_t now) {
  pending_--;
  if (!sse_) {
    if (now >= measure_from_) hs_.Record(now - c.t_start);
    if (c.ssl) {
      if (SSL_session_reused(c.ssl)) {
        resumed_++;
      } else if (c.offered && now >= measure_from_) {
        not_resumed_++;  // the server refused a ticket it issued
      }
      if (SSL_version(c.ssl) != TLS1_3_VERSION) not13_++;
      if (group_.empty()) {
        const char* g = SSL_get_curve_name(SSL_get_curve_id(c.ssl));
        group_ = g ? g : "?";
        cipher_ = SSL_CIPHER_get_name(SSL_get_current_cipher(c.ssl));
      }
    }
    StartRequest(c, now);
    return;
  }
  c.st = St::kReady;
  c.want_write = false;
  SetEvents(c);
}

void Client::StartRequest(Conn& c, uint64_t now) {
  c.st = St::kWriting;
  c.woff = 0;
  c.t_sent = now;
  c.got_event = false;
  c.t_first = 0;
  c.sse = loadgen::SseScanner();
  c.chunk_tokens = 0;
  c.parser.Reset(o_.method == "HEAD", sse_ ? SseBody : nullptr, &c, sse_ ? SseChunkEnd : nullptr);
  TryWrite(c, now);
}

void Client::TryWrite(Conn& c, uint64_t now) {
  ssize_t r = loadgen::WriteRest(c.fd, c.ssl, request_, &c.woff);
  if (r == loadgen::kIoWantWrite || r == loadgen::kIoWantRead) {
    c.want_write = r == loadgen::kIoWantWrite;
    SetEvents(c);
    return;
  }
  if (r != 0) {
    Fail(c, Phase::kHttp, now);
    return;
  }
  c.st = St::kReading;
  c.want_write = false;
  SetEvents(c);
}

// One stream or one connection's request is over.
void Client::Finished(Conn& c, uint64_t now, bool ok) {
  if (!sse_) {
    Close(c);
    all_done_++;
    if (now < measure_from_ || now > measure_to_) return;
    done_++;
    total_.Record(now - c.t_start);
    (ok ? ok_ : non2xx_)++;
    return;
  }
  if (c.st != St::kDown) Close(c);
  c.st = St::kDone;
  events_ += c.sse.events();
  tokens_ += c.sse.tokens();
  lost_ += c.sse.lost();
  misordered_ += c.sse.out_of_order();
  rechunked_ += c.chunk_merged;
  if (!t_.tls) merged_ += c.chunk_merged;
  int status = c.parser.status();
  if (status && status != 200) non200_++;
  bool good = ok && status == 200 && c.sse.done() && !c.sse.lost() && !c.sse.out_of_order();
  if (ok && status == 200 && !good) incomplete_++;
  (good ? streams_ok_ : streams_failed_)++;
}

// `arrival`: when the bytes read reached the socket (the kernel's stamp in
// SSE mode; the wake-up time otherwise). Plaintext reads update it.
void Client::TryRead(Conn& c, uint64_t now, uint64_t arrival) {
  loadgen::SseScanner::Counts batch;
  for (;;) {
    ssize_t n = loadgen::ReadSome(c.fd, c.ssl, c.in, buf_, sizeof buf_, sse_ ? &arrival : nullptr);
    if (n == loadgen::kIoWantRead) break;
    if (n == loadgen::kIoWantWrite) {
      c.want_write = true;
      SetEvents(c);
      break;
    }
    if (n <= 0) {
      if (c.st == St::kReading && n == 0) {
        c.parser.Finish();
        if (c.parser.complete()) {
          if (sse_) c.sse.End(uint64_t(o_.tokens));
          Finished(c, now, c.parser.status() >= 200 && c.parser.status() < 300);
          return;
        }
      }
      Fail(c, c.st == St::kHandshake ? Phase::kTls : Phase::kHttp, now);
      return;
    }
    if (c.st != St::kReading) {  // bytes nobody asked for
      Fail(c, Phase::kHttp, now);
      return;
    }
    arrival = std::max(arrival, c.t_sent);
    if (!c.t_first) {
      c.t_first = arrival;
      if (sse_) ttfb_.Record(arrival - c.t_sent);
    }
    c.piece = {};
    bool okp = c.parser.Feed(buf_, size_t(n));
    // One TLS record that completed two token events: the proxy merged
    // chunks the upstream sent apart. (SSL_read returns one record at most.
    // A plaintext read has no sender boundary: a client late to read merges
    // too; there the HTTP chunk is the boundary, counted in SseChunkEnd.)
    if (c.ssl && c.piece.tokens > 1) merged_ += uint64_t(c.piece.tokens - 1);
    batch.events += c.piece.events;
    batch.tokens += c.piece.tokens;
    if (c.parser.complete()) break;
    if (!okp) {
      Fail(c, Phase::kHttp, now);
      return;
    }
  }
  if (sse_ && batch.events) {
    if (batch.tokens > 1) batched_ += uint64_t(batch.tokens - 1);
    if (!c.got_event)
      ttfe_.Record(arrival - c.t_sent);
    else
      gaps_.Record(arrival > c.t_last_event ? arrival - c.t_last_event : 0);
    c.got_event = true;
    c.t_last_event = arrival;
    if (arrival != now) stamped_++;
    wake_late_.Record(now - std::min(now, arrival));
  }
  if (c.parser.complete()) {
    if (sse_) c.sse.End(uint64_t(o_.tokens));
    int s = c.parser.status();
    Finished(c, now, s >= 200 && s < 300);
  }
}

void Client::OnEvent(Conn& c, uint32_t ev, uint64_t now) {
  if (c.st == St::kDown || c.st == St::kDone) return;
  uint64_t arrival = now;
  if (c.ssl && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
    loadgen::PullTls(c.fd, c.ssl, buf_, sizeof buf_, &c.in, sse_ ? &arrival : nullptr);
  if (c.st == St::kConnecting) {
    if (loadgen::SocketError(c.fd) || (ev & (EPOLLERR | EPOLLHUP))) {
      Fail(c, Phase::kConnect, now);
      return;
    }
    if (!(ev & EPOLLOUT)) return;
    if (!ctx_) {
      Connected(c, now);
      return;
    }
    c.ssl = loadgen::NewTlsClient(ctx_, c.fd, t_.host);
    SSL_set_app_data(c.ssl, &c);
    c.offered = c.ticket != nullptr;
    if (c.ticket) SSL_set_session(c.ssl, c.ticket);
    c.in = loadgen::TlsInput{};
    c.st = St::kHandshake;
  }
  if (c.st == St::kHandshake) {
    if (c.in.eof) {
      Fail(c, Phase::kTls, now);
      return;
    }
    int r = loadgen::HandshakeStep(c.ssl, &c.want_write);
    if (r < 0) {
      Fail(c, Phase::kTls, now);
      return;
    }
    if (r == 1)
      Connected(c, now);
    else
      SetEvents(c);
    return;
  }
  if (c.st == St::kReady) {  // waiting for its send time: only an end can come
    if (c.ssl) {             // (or a post-handshake message, such as a ticket)
      ssize_t n = loadgen::ReadSome(c.fd, c.ssl, c.in, buf_, sizeof buf_);
      if (n == loadgen::kIoWantRead || n == loadgen::kIoWantWrite) return;
    }
    Close(c);  // closed (or spoke) before the request
    c.sse.End(uint64_t(o_.tokens));
    Finished(c, now, false);
    return;
  }
  if (c.st == St::kWriting && (ev & (EPOLLOUT | EPOLLIN))) {
    TryWrite(c, now);
    if (c.st != St::kReading) return;
  }
  if (c.st == St::kReading && (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
    TryRead(c, now, arrival);
}

void Client::Wait(uint64_t until) {
  uint64_t now = NowNs();
  timespec ts{0, 0};
  if (until > now) {
    uint64_t d = std::min<uint64_t>(until - now, 10000000ull);  // at most 10 ms
    ts.tv_nsec = long(d);
  }
  int n = epoll_pwait2(ep_, evs_.data(), int(evs_.size()), &ts, nullptr);
  if (n < 0 && errno != EINTR) {
    perror("benchclient: epoll_pwait2");
    exit(1);
  }
  now = NowNs();
  for (int i = 0; i < n; i++) OnEvent(*static_cast<Conn*>(evs_[i].data.ptr), evs_[i].events, now);
}

int Client::RunHandshakes() {
  uint64_t t0 = NowNs();
  measure_from_ = t0 + uint64_t(o_.warmup * 1e9);
  measure_to_ = measure_from_ + uint64_t(o_.duration * 1e9);
  double cpu0 = CpuSeconds();
  for (int i = 0; i < o_.concurrency; i++) {
    conns_.push_back(std::make_unique<Conn>());
    conns_.back()->index = i;
  }
  for (;;) {
    uint64_t now = NowNs();
    if (now >= measure_to_) break;
    for (auto& c : conns_)
      if (c->st == St::kDown) Open(*c, now);
    Wait(measure_to_);
  }
  stopping_ = true;
  for (auto& c : conns_) Close(*c);
  double rate = double(done_) / o_.duration;
  // Per connection over the whole run (warm-up included: it opened them too).
  double cpu_us = (CpuSeconds() - cpu0) * 1e6 / double(std::max<uint64_t>(1, opened_));
  uint64_t errors = non2xx_ + err_connect_ + err_tls_ + err_http_;
  printf(
      "{\"mode\":\"handshake\",\"url\":\"%s\",\"concurrency\":%d,\"duration_s\":%.3f,"
      "\"conn_per_s\":%.1f,\"completed\":%llu,\"completed_with_warmup\":%llu,\"ok\":%llu,"
      "\"non2xx\":%llu,"
      "\"connect_errors\":%llu,\"tls_errors\":%llu,\"http_errors\":%llu,\"errors\":%llu,"
      "\"resumed\":%llu,\"not_resumed\":%llu,\"not_tls13\":%llu,\"group\":\"%s\","
      "\"cipher\":\"%s\","
      "\"client_cpu_us_per_conn\":%.1f,\"handshake_us\":%s,\"connection_us\":%s}\n",
      loadgen::JsonEscape(o_.url).c_str(), o_.concurrency, o_.duration, rate,
      (unsigned long long)done_, (unsigned long long)all_done_, (unsigned long long)ok_,
      (unsigned long long)non2xx_, (unsigned long long)err_connect_, (unsigned long long)err_tls_,
      (unsigned long long)err_http_, (unsigned long long)errors, (unsigned long long)resumed_,
      (unsigned long long)not_resumed_, (unsigned long long)not13_, group_.c_str(), cipher_.c_str(),
      cpu_us, loadgen::DistJson(hs_, true).c_str(), loadgen::DistJson(total_, true).c_str());
  fflush(stdout);
  if (!o_.quiet)
    fprintf(stderr,
            "benchclient: %s handshake x%d for %.1f s: %.1f conn/s, %llu ok, %llu errors; %s %s%s; "
            "handshake us p50 %.1f p99 %.1f; connection us p50 %.1f p99 %.1f; client CPU %.1f "
            "us/conn\n",
            o_.url.c_str(), o_.concurrency, o_.duration, rate, (unsigned long long)ok_,
            (unsigned long long)errors, group_.c_str(), cipher_.c_str(),
            o_.resume  ? " (resumed)"
            : resumed_ ? " (some RESUMED)"
                       : "",
            hs_.Percentile(50) / 1e3, hs_.Percentile(99) / 1e3, total_.Percentile(50) / 1e3,
            total_.Percentile(99) / 1e3, cpu_us);
  bool wrong_kind = o_.resume ? not_resumed_ > 0 : resumed_ > 0;
  return errors || wrong_kind || not13_ || !done_ ? 1 : 0;
}

int Client::RunSse() {
  // Connections first, a few at a time, before the clock: the connect
  // storm is not what TTFB measures.
  for (int i = 0; i < o_.streams; i++) {
    conns_.push_back(std::make_unique<Conn>());
    conns_.back()->index = i;
  }
  uint64_t setup_deadline = NowNs() + 60000000000ull;
  size_t next = 0;
  uint64_t setup_start = NowNs();
  for (;;) {
    uint64_t now = NowNs();
    size_t ready = 0, settled = 0;
    for (auto& c : conns_) {
      if (c->st == St::kReady) ready++;
      if (c->st == St::kReady || c->st == St::kDone) settled++;
      if (c->st == St::kDown && c->attempts > 0 && pending_ < o_.connect_parallel) Open(*c, now);
    }
    while (next < conns_.size() && pending_ < o_.connect_parallel) Open(*conns_[next++], now);
    if (settled == conns_.size() || now >= setup_deadline) break;
    (void)ready;
    Wait(now + 10000000ull);
  }
  double setup_s = double(NowNs() - setup_start) / 1e9;
  uint64_t setup_failed = streams_failed_;
  for (auto& c : conns_)
    if (c->st != St::kReady && c->st != St::kDone) {
      Close(*c);
      c->st = St::kDone;
      streams_failed_++;
      setup_failed++;
    }

  uint64_t t0 = NowNs() + 1000000ull;
  double step = o_.streams > 1 ? o_.ramp * 1e9 / double(o_.streams) : 0;
  std::mt19937_64 rng(o_.seed);
  std::uniform_real_distribution<double> moment(0, o_.ramp * 1e9);
  for (auto& c : conns_) c->due = t0 + uint64_t(o_.uniform ? moment(rng) : step * c->index);
  // Send order: due times ascending.
  std::vector<Conn*> order;
  for (auto& c : conns_) order.push_back(c.get());
  std::stable_sort(order.begin(), order.end(),
                   [](const Conn* a, const Conn* b) { return a->due < b->due; });
  uint64_t last_due = order.back()->due;
  uint64_t deadline = last_due + uint64_t(o_.timeout * 1e9);
  size_t to_send = 0;
  for (;;) {
    uint64_t now = NowNs();
    while (to_send < order.size() && order[to_send]->due <= now) {
      Conn& c = *order[to_send++];
      if (c.st != St::kReady) continue;
      lag_.Record(now - c.due);
      StartRequest(c, now);
    }
    bool open = false;
    for (auto& c : conns_)
      if (c->st != St::kDone) {
        open = true;
        break;
      }
    if (!open || now >= deadline) break;
    Wait(to_send < order.size() ? order[to_send]->due : deadline);
  }
  uint64_t unfinished = 0;
  for (auto& c : conns_)
    if (c->st != St::kDone) {
      unfinished++;
      c->sse.End(uint64_t(o_.tokens));
      lost_ += c->sse.lost();
      Close(*c);
    }
  uint64_t errors = streams_failed_ + unfinished;
  printf(
      "{\"mode\":\"sse\",\"url\":\"%s\",\"streams\":%d,\"tokens\":%d,\"ramp_s\":%.3f,"
      "\"arrivals\":\"%s\","
      "\"setup_s\":%.3f,\"ok\":%llu,\"errors\":%llu,\"setup_errors\":%llu,\"non200\":%llu,"
      "\"incomplete\":%llu,\"unfinished\":%llu,\"events\":%llu,\"token_events\":%llu,"
      "\"lost\":%llu,\"out_of_order\":%llu,\"merged\":%llu,\"merged_per_read\":%llu,"
      "\"merged_per_chunk\":%llu,\"client_cpu_s\":%.3f,\"kernel_arrival_times\":%s,"
      "\"read_after_arrival_us\":%s,"
      "\"ttfb_us\":%s,\"first_event_us\":%s,\"gaps_us\":%s,\"send_lag_us\":%s}\n",
      loadgen::JsonEscape(o_.url).c_str(), o_.streams, o_.tokens, o_.ramp,
      o_.uniform ? "uniform" : "even", setup_s, (unsigned long long)streams_ok_,
      (unsigned long long)errors, (unsigned long long)setup_failed, (unsigned long long)non200_,
      (unsigned long long)incomplete_, (unsigned long long)unfinished, (unsigned long long)events_,
      (unsigned long long)tokens_, (unsigned long long)lost_, (unsigned long long)misordered_,
      (unsigned long long)merged_, (unsigned long long)batched_, (unsigned long long)rechunked_,
      CpuSeconds(), stamped_ ? "true" : "false", loadgen::DistJson(wake_late_, false).c_str(),
      loadgen::DistJson(ttfb_, true).c_str(), loadgen::DistJson(ttfe_, true).c_str(),
      loadgen::DistJson(gaps_, true).c_str(), loadgen::DistJson(lag_, false).c_str());
  fflush(stdout);
  if (!o_.quiet)
    fprintf(stderr,
            "benchclient: %s sse %d streams (set up in %.2f s, sent over %.1f s): %llu ok, %llu "
            "errors, %llu lost, %llu merged; ttfb us p50 %.1f p99 %.1f; gap us p50 %.1f p99 %.1f "
            "max %.1f\n",
            o_.url.c_str(), o_.streams, setup_s, o_.ramp, (unsigned long long)streams_ok_,
            (unsigned long long)errors, (unsigned long long)lost_, (unsigned long long)merged_,
            ttfb_.Percentile(50) / 1e3, ttfb_.Percentile(99) / 1e3, gaps_.Percentile(50) / 1e3,
            gaps_.Percentile(99) / 1e3, gaps_.max() / 1e3);
  return errors || lost_ || merged_ ? 1 : 0;
}

int Client::Run() {
  signal(SIGPIPE, SIG_IGN);
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  sse_ = o_.mode == "sse";
  std::string err;
  if (!loadgen::ResolveLoopback(t_, &addr_, &addr_len_, &err)) {
    fprintf(stderr, "benchclient: %s\n", err.c_str());
    return 2;
  }
  std::vector<std::string> headers = o_.headers;
  if (!sse_) {
    bool has_conn = false;
    for (const auto& h : headers) has_conn |= strncasecmp(h.c_str(), "connection:", 11) == 0;
    if (!has_conn) headers.push_back("Connection: close");
  }
  request_ = loadgen::BuildRequest(o_.method, t_, headers, o_.body);
  if (t_.tls) ctx_ = loadgen::NewClientContext(/*fresh_handshakes=*/!sse_);
  if (ctx_ && o_.resume && !sse_) {
    // TLS 1.3 tickets come after the handshake: the callback keeps the
    // newest on its connection, for that worker's next one.
    SSL_CTX_clear_options(ctx_, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx_, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx_, [](SSL* ssl, SSL_SESSION* session) {
      auto* c = static_cast<Conn*>(SSL_get_app_data(ssl));
      if (!c) return 0;
      if (c->ticket) SSL_SESSION_free(c->ticket);
      c->ticket = session;
      return 1;  // the reference is ours
    });
  }
  ep_ = epoll_create1(EPOLL_CLOEXEC);
  if (ep_ < 0) {
    perror("benchclient: epoll_create1");
    return 1;
  }
  evs_.resize(size_t(std::max(64, sse_ ? o_.streams : o_.concurrency)));
  return sse_ ? RunSse() : RunHandshakes();
}

}  // namespace

int main(int argc, char** argv) {
  Options o = ParseFlags(argc, argv);
  loadgen::Target t;
  std::string err;
  if (!loadgen::ParseUrl(o.url, &t, &err)) Usage(err);
  Client c(o, t);
  return c.Run();
}
