// The pieces every benchmark client here shares (test/bench/loadgen and
// test/bench/benchclient): flags, the target URL and its loopback-only
// resolution, the request bytes, non-blocking sockets with or without TLS
// (BoringSSL), an HTTP/1.1 response parser (llhttp), and the JSON of a
// latency distribution. One concept, one place: the clients keep only their
// own scheduling and state machines.
#ifndef ELDRIC_TEST_BENCH_CLIENT_H_
#define ELDRIC_TEST_BENCH_CLIENT_H_

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "llhttp.h"
#include "test/bench/histogram.h"

namespace loadgen {

uint64_t NowNs();

// --- flags ---------------------------------------------------------------------
// Walks argv: `--name value`, `--name=value`, short flags, positionals.
// Errors go to `usage` (which does not return).
class FlagReader {
 public:
  using UsageFn = void (*)(const std::string& err);
  FlagReader(int argc, char** argv, UsageFn usage) : argc_(argc), argv_(argv), usage_(usage) {}
  bool Next();                                       // false past the last argument
  const std::string& name() const { return name_; }  // the flag (without =value)
  std::string Value();                               // its value: inline or the next argument
  double Num();                                      // the value as a finite number >= 0
  [[noreturn]] void Fail(const std::string& err) const;

 private:
  int argc_;
  char** argv_;
  UsageFn usage_;
  int i_ = 0;
  std::string name_, inline_;
  bool has_inline_ = false;
};

// What a tool's usage function does: with `err`, "PROG: ERR (see --help)"
// on stderr and exit 2; without, `text` on stdout and exit 0.
[[noreturn]] void ExitWithUsage(const char* prog, const char* text, const std::string& err);

// --- target --------------------------------------------------------------------
struct Target {
  bool tls = false;
  std::string host, port, path, host_header;
};
// http://HOST[:PORT]/PATH or https://...; [v6] hosts. False (and why) if not.
bool ParseUrl(const std::string& url, Target* t, std::string* err);
// Resolves the host and refuses anything but loopback (127.0.0.0/8, ::1): a
// load generator aimed elsewhere by mistake is a flood.
bool ResolveLoopback(const Target& t, sockaddr_storage* addr, socklen_t* len, std::string* err);
// The request bytes: Host and Content-Length added unless given.
std::string BuildRequest(const std::string& method, const Target& t,
                         const std::vector<std::string>& headers, const std::string& body);

// --- sockets ---------------------------------------------------------------------
// A non-blocking TCP socket with TCP_NODELAY, connect() started. -1 if the
// socket could not be made (errno set); *failed if connect() failed at once.
int ConnectNonBlocking(const sockaddr_storage& addr, socklen_t len, bool* failed);
// The pending error of a connect() (SO_ERROR), 0 once connected.
int SocketError(int fd);
// Asks the kernel to stamp received data with its arrival time
// (SO_TIMESTAMPNS): reads then report when the bytes reached the socket,
// not when a busy client got round to reading them.
void EnableArrivalTimes(int fd);
// recv() that also reports, in *arrival (CLOCK_MONOTONIC ns), the kernel's
// arrival time of the last segment read, when the socket has one (it keeps
// *arrival otherwise).
ssize_t RecvStamped(int fd, char* buf, size_t cap, uint64_t* arrival);

// TLS client context: no certificate verification (loopback benchmarks),
// ALPN http/1.1. With `fresh_handshakes`: TLS 1.3 only, no session cache and
// no tickets, so every connection is a full handshake.
SSL_CTX* NewClientContext(bool fresh_handshakes);
// A client SSL on `fd`: reads come from a memory BIO that PullTls fills with
// one large recv() per readiness event (BoringSSL ignores read-ahead and
// would otherwise read each record's header and body with two syscalls);
// writes go to the socket. SNI for a host name (not for an address).
SSL* NewTlsClient(SSL_CTX* ctx, int fd, const std::string& host);
// What PullTls saw of the socket under the BIO.
struct TlsInput {
  bool eof = false;    // the socket ended, cleanly or not
  bool reset = false;  // ... not
};
// With `arrival`, the read is RecvStamped's.
void PullTls(int fd, SSL* ssl, char* buf, size_t cap, TlsInput* in, uint64_t* arrival = nullptr);
// Handshake step: 1 done, 0 wants more (*want_write says which way), -1 failed.
int HandshakeStep(SSL* ssl, bool* want_write);

// Reads and writes on a plaintext (ssl == nullptr) or TLS socket.
// Returns bytes (> 0), 0 at a clean end of stream, or one of these:
constexpr ssize_t kIoError = -1;      // errno set (ECONNRESET for TLS failures)
constexpr ssize_t kIoWantRead = -2;   // retry when readable
constexpr ssize_t kIoWantWrite = -3;  // retry when writable
// A TLS read that needs more bytes after PullTls saw the end is the end.
// Plaintext with `arrival`: the read is RecvStamped's.
ssize_t ReadSome(int fd, SSL* ssl, const TlsInput& in, char* buf, size_t cap,
                 uint64_t* arrival = nullptr);
// A TLS write must be retried with the same arguments after kIoWant*.
ssize_t WriteSome(int fd, SSL* ssl, const char* p, size_t n);
// Writes what is left of `data` from *off (advanced as bytes go) until all
// is written (returns 0) or the socket would block (kIoWantRead or
// kIoWantWrite: call again with the same data and offset) or fails
// (kIoError).
ssize_t WriteRest(int fd, SSL* ssl, std::string_view data, size_t* off);

// --- HTTP/1.1 response -----------------------------------------------------------
// llhttp for one response at a time; Reset() before each request. Stops at
// the end of the message (no pipelining: whatever follows is not ours).
// Must not move once Reset() (llhttp keeps a pointer to it).
class ResponseParser {
 public:
  using BodyFn = void (*)(void* ctx, const char* p, size_t n);
  using ChunkEndFn = void (*)(void* ctx);
  ResponseParser() = default;
  ResponseParser(const ResponseParser&) = delete;
  ResponseParser& operator=(const ResponseParser&) = delete;
  // `head`: the response to a HEAD request (no body whatever its headers say).
  // `body`: called with each run of de-chunked body bytes; `chunk_end` at
  // the end of each chunk of a chunked body.
  void Reset(bool head = false, BodyFn body = nullptr, void* ctx = nullptr,
             ChunkEndFn chunk_end = nullptr);
  bool Feed(const char* p, size_t n);  // false on a malformed response
  void Finish();                       // the stream ended: a body delimited by the close
  bool complete() const { return complete_; }
  bool headers_done() const { return status_ != 0; }
  int status() const { return status_; }
  bool keep_alive() const { return keep_alive_; }

 private:
  llhttp_t p_;
  llhttp_settings_t s_;
  BodyFn body_ = nullptr;
  ChunkEndFn chunk_end_ = nullptr;
  void* ctx_ = nullptr;
  bool head_ = false, complete_ = false, keep_alive_ = true;
  int status_ = 0;
};

// --- report ------------------------------------------------------------------------
// {"p50":..,"p99":..,"max":..} in µs; `full` adds p90, p99.9, min and mean.
std::string DistJson(const Histogram& h, bool full);
std::string JsonEscape(const std::string& s);

}  // namespace loadgen

#endif  // ELDRIC_TEST_BENCH_CLIENT_H_
