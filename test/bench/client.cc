#include "test/bench/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace loadgen {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// --- flags ---------------------------------------------------------------------
bool FlagReader::Next() {
  if (++i_ >= argc_) return false;
  name_ = argv_[i_];
  has_inline_ = false;
  if (name_.rfind("--", 0) == 0) {
    size_t eq = name_.find('=');
    if (eq != std::string::npos) {
      inline_ = name_.substr(eq + 1);
      name_ = name_.substr(0, eq);
      has_inline_ = true;
    }
  }
  return true;
}

std::string FlagReader::Value() {
  if (has_inline_) return inline_;
  if (i_ + 1 >= argc_) Fail("missing value for " + name_);
  return argv_[++i_];
}

double FlagReader::Num() {
  std::string v = Value();
  char* end = nullptr;
  errno = 0;
  double d = strtod(v.c_str(), &end);
  if (v.empty() || *end || errno || !std::isfinite(d) || d < 0)
    Fail("bad value for " + name_ + ": " + v);
  return d;
}

void ExitWithUsage(const char* prog, const char* text, const std::string& err) {
  if (!err.empty()) {
    fprintf(stderr, "%s: %s (see --help)\n", prog, err.c_str());
    exit(2);
  }
  fputs(text, stdout);
  exit(0);
}

void FlagReader::Fail(const std::string& err) const {
  usage_(err);
  abort();  // usage_ does not return
}

// --- target --------------------------------------------------------------------
bool ParseUrl(const std::string& url, Target* t, std::string* err) {
  *t = Target{};
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    t->tls = true;
    rest = url.substr(8);
  } else {
    *err = "URL must start with http:// or https://";
    return false;
  }
  size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  t->path = slash == std::string::npos ? "/" : rest.substr(slash);
  t->host_header = authority;
  if (!authority.empty() && authority[0] == '[') {  // [::1]:443
    size_t close = authority.find(']');
    if (close == std::string::npos) {
      *err = "bad URL host";
      return false;
    }
    t->host = authority.substr(1, close - 1);
    if (close + 1 < authority.size() && authority[close + 1] == ':')
      t->port = authority.substr(close + 2);
  } else {
    size_t colon = authority.rfind(':');
    t->host = authority.substr(0, colon);
    if (colon != std::string::npos) t->port = authority.substr(colon + 1);
  }
  if (t->port.empty()) t->port = t->tls ? "443" : "80";
  if (t->host.empty()) {
    *err = "URL has no host";
    return false;
  }
  return true;
}

bool ResolveLoopback(const Target& t, sockaddr_storage* addr, socklen_t* len, std::string* err) {
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0 || !res) {
    *err = "cannot resolve " + t.host;
    return false;
  }
  memcpy(addr, res->ai_addr, res->ai_addrlen);
  *len = res->ai_addrlen;
  freeaddrinfo(res);
  bool loopback = false;
  if (addr->ss_family == AF_INET) {
    loopback = (ntohl(reinterpret_cast<sockaddr_in*>(addr)->sin_addr.s_addr) >> 24) == 127;
  } else if (addr->ss_family == AF_INET6) {
    const in6_addr& a = reinterpret_cast<sockaddr_in6*>(addr)->sin6_addr;
    loopback = IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127);
  }
  if (!loopback) {
    *err = t.host + " is not a loopback address; refusing";
    return false;
  }
  return true;
}

std::string BuildRequest(const std::string& method, const Target& t,
                         const std::vector<std::string>& headers, const std::string& body) {
  std::string req = method + " " + t.path + " HTTP/1.1\r\n";
  bool has_host = false, has_len = false;
  for (const auto& h : headers) {
    std::string lower = h.substr(0, h.find(':'));
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    has_host |= lower == "host";
    has_len |= lower == "content-length";
    req += h + "\r\n";
  }
  if (!has_host) req += "Host: " + t.host_header + "\r\n";
  if (!has_len && (!body.empty() || method == "POST" || method == "PUT"))
    req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  return req;
}

// --- sockets ---------------------------------------------------------------------
int ConnectNonBlocking(const sockaddr_storage& addr, socklen_t len, bool* failed) {
  *failed = false;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0 && errno != EINPROGRESS)
    *failed = true;
  return fd;
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err;
}

void EnableArrivalTimes(int fd) {
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one);
}

namespace {
// CLOCK_REALTIME minus CLOCK_MONOTONIC: kernel receive stamps are wall-clock
// time. Sampled once; a run is too short for the difference to drift.
int64_t RealMinusMono() {
  static const int64_t off = [] {
    timespec r, m;
    clock_gettime(CLOCK_REALTIME, &r);
    clock_gettime(CLOCK_MONOTONIC, &m);
    return (int64_t(r.tv_sec) - int64_t(m.tv_sec)) * 1000000000ll +
           (int64_t(r.tv_nsec) - int64_t(m.tv_nsec));
  }();
  return off;
}
}  // namespace

ssize_t RecvStamped(int fd, char* buf, size_t cap, uint64_t* arrival) {
  iovec iov{buf, cap};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec))];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = recvmsg(fd, &msg, 0);
  if (n <= 0) return n;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
      timespec ts;
      memcpy(&ts, CMSG_DATA(c), sizeof ts);
      int64_t real = int64_t(ts.tv_sec) * 1000000000ll + int64_t(ts.tv_nsec);
      if (real > 0) *arrival = uint64_t(real - RealMinusMono());
    }
  }
  return n;
}

SSL_CTX* NewClientContext(bool fresh_handshakes) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  static const unsigned char alpn[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn);
  if (fresh_handshakes) {
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  }
  return ctx;
}

SSL* NewTlsClient(SSL_CTX* ctx, int fd, const std::string& host) {
  SSL* ssl = SSL_new(ctx);
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO_set_mem_eof_return(rbio, -1);  // empty means "retry", not end of stream
  SSL_set_bio(ssl, rbio, BIO_new_socket(fd, BIO_NOCLOSE));
  SSL_set_connect_state(ssl);
  if (!host.empty() && !isdigit(static_cast<unsigned char>(host[0])) &&
      host.find(':') == std::string::npos)
    SSL_set_tlsext_host_name(ssl, host.c_str());
  return ssl;
}

void PullTls(int fd, SSL* ssl, char* buf, size_t cap, TlsInput* in, uint64_t* arrival) {
  ssize_t n = arrival ? RecvStamped(fd, buf, cap, arrival) : recv(fd, buf, cap, 0);
  if (n > 0) {
    BIO_write(SSL_get_rbio(ssl), buf, int(n));
  } else if (n == 0) {
    in->eof = true;
  } else if (errno != EAGAIN && errno != EINTR) {
    in->eof = in->reset = true;
  }
}

int HandshakeStep(SSL* ssl, bool* want_write) {
  int r = SSL_do_handshake(ssl);
  if (r == 1) return 1;
  int err = SSL_get_error(ssl, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    *want_write = err == SSL_ERROR_WANT_WRITE;
    return 0;
  }
  ERR_clear_error();
  return -1;
}

ssize_t ReadSome(int fd, SSL* ssl, const TlsInput& in, char* buf, size_t cap, uint64_t* arrival) {
  if (!ssl) {
    ssize_t n = arrival ? RecvStamped(fd, buf, cap, arrival) : recv(fd, buf, cap, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return kIoWantRead;
    return n < 0 ? kIoError : n;
  }
  int r = SSL_read(ssl, buf, int(cap));
  if (r > 0) return r;
  int err = SSL_get_error(ssl, r);
  if (err == SSL_ERROR_WANT_READ && !in.eof) return kIoWantRead;
  if (err == SSL_ERROR_WANT_READ) err = in.reset ? SSL_ERROR_SYSCALL : SSL_ERROR_ZERO_RETURN;
  if (err == SSL_ERROR_WANT_WRITE) return kIoWantWrite;
  ERR_clear_error();
  if (err == SSL_ERROR_ZERO_RETURN) return 0;
  errno = ECONNRESET;
  return kIoError;
}

ssize_t WriteSome(int fd, SSL* ssl, const char* p, size_t n) {
  if (!ssl) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    if (r > 0) return r;
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return kIoWantWrite;
    return kIoError;
  }
  int r = SSL_write(ssl, p, int(n));
  if (r > 0) return r;
  int err = SSL_get_error(ssl, r);
  if (err == SSL_ERROR_WANT_WRITE) return kIoWantWrite;
  if (err == SSL_ERROR_WANT_READ) return kIoWantRead;
  ERR_clear_error();
  errno = ECONNRESET;
  return kIoError;
}

ssize_t WriteRest(int fd, SSL* ssl, std::string_view data, size_t* off) {
  while (*off < data.size()) {
    ssize_t r = WriteSome(fd, ssl, data.data() + *off, data.size() - *off);
    if (r <= 0) return r == 0 ? kIoError : r;
    *off += size_t(r);
  }
  return 0;
}

// --- HTTP/1.1 response -----------------------------------------------------------
void ResponseParser::Reset(bool head, BodyFn body, void* ctx, ChunkEndFn chunk_end) {
  llhttp_settings_init(&s_);
  head_ = head;
  body_ = body;
  chunk_end_ = chunk_end;
  ctx_ = ctx;
  complete_ = false;
  keep_alive_ = true;
  status_ = 0;
  s_.on_headers_complete = [](llhttp_t* p) -> int {
    auto* self = static_cast<ResponseParser*>(p->data);
    self->status_ = p->status_code;
    return self->head_ ? 1 : 0;  // 1: no body
  };
  s_.on_body = [](llhttp_t* p, const char* at, size_t n) -> int {
    auto* self = static_cast<ResponseParser*>(p->data);
    if (self->body_) self->body_(self->ctx_, at, n);
    return 0;
  };
  if (chunk_end_) {
    s_.on_chunk_complete = [](llhttp_t* p) -> int {
      auto* self = static_cast<ResponseParser*>(p->data);
      self->chunk_end_(self->ctx_);
      return 0;
    };
  }
  s_.on_message_complete = [](llhttp_t* p) -> int {
    auto* self = static_cast<ResponseParser*>(p->data);
    self->complete_ = true;
    self->keep_alive_ = llhttp_should_keep_alive(p);
    return HPE_PAUSED;  // no pipelining: whatever follows is not ours
  };
  llhttp_init(&p_, HTTP_RESPONSE, &s_);
  p_.data = this;
}

bool ResponseParser::Feed(const char* p, size_t n) {
  llhttp_errno_t e = llhttp_execute(&p_, p, n);
  return complete_ || e == HPE_OK;
}

void ResponseParser::Finish() {
  llhttp_finish(&p_);
  if (complete_) keep_alive_ = false;
}

// --- report ------------------------------------------------------------------------
std::string DistJson(const Histogram& h, bool full) {
  auto us = [](uint64_t ns) { return double(ns) / 1000.0; };
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
  return b;
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') out += '\\';
    if (static_cast<unsigned char>(ch) >= 0x20) out += ch;
  }
  return out;
}

}  // namespace loadgen
