// The data plane's gRPC client (BoringSSL + nghttp2 + libuv) against the
// real libgrpc++ server in interop_server, which runs as a child process
// (libgrpc's OpenSSL 3 must never be loaded beside BoringSSL).
//
// Every wait is bounded; the whole suite runs in a few seconds.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "dataplane/event/dispatcher.h"
#include "dataplane/grpc/channel.h"
#include "dataplane/grpc/framing.h"
#include "interop.pb.h"

namespace eldric::grpc {
namespace {

std::string g_server_path;
std::string g_cert_dir;

using interop::EchoRequest;
using interop::EchoResponse;

constexpr const char* kUnary = "/eldric.interop.Echo/Unary";
constexpr const char* kServerStream = "/eldric.interop.Echo/ServerStream";
constexpr const char* kBidi = "/eldric.interop.Echo/Bidi";

// --- The server process ---

class InteropServer {
 public:
  ~InteropServer() { kill(); }

  // Starts interop_server with `args` and waits for its "listening" line.
  void start(std::vector<std::string> args) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    pid_t parent = getpid();
    pid_ = fork();
    ASSERT_GE(pid_, 0);
    if (pid_ == 0) {
      // Dies with the test, however the test ends.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      dup2(fds[1], 1);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      argv.push_back(const_cast<char*>(g_server_path.c_str()));
      for (auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    std::string line;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (line.find('\n') == std::string::npos) {
      int left = static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      deadline - std::chrono::steady_clock::now())
                                      .count());
      ASSERT_GT(left, 0) << "interop_server did not start";
      pollfd p{fds[0], POLLIN, 0};
      if (poll(&p, 1, left) <= 0) continue;
      char buf[256];
      ssize_t n = read(fds[0], buf, sizeof buf);
      ASSERT_GT(n, 0) << "interop_server exited";
      line.append(buf, static_cast<size_t>(n));
    }
    close(fds[0]);
    size_t at = line.find("\"port\":");
    ASSERT_NE(at, std::string::npos) << line;
    port_ = std::atoi(line.c_str() + at + 7);
    ASSERT_GT(port_, 0);
  }

  void kill() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void signal(int sig) { ::kill(pid_, sig); }
  int port() const { return port_; }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  pid_t pid_ = -1;
  int port_ = 0;
};

// --- The client side's loop ---

class Loop {
 public:
  // Lets what the tests closed finish closing (deferred deletes, socket
  // close callbacks) before the dispatcher goes: a Connection whose close
  // callback runs inside ~Dispatcher would close its timers a second time.
  ~Loop() { runFor(20); }

  // Runs the dispatcher until `done()` or `timeout_ms`; returns done().
  bool runUntil(const std::function<bool()>& done, uint64_t timeout_ms = 5000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    // Wakes the loop so the predicate and the deadline are checked.
    auto tick = dispatcher.createTimer([] {});
    while (!done()) {
      if (std::chrono::steady_clock::now() > deadline) return false;
      // Armed from the loop's clock as of now: from the clock cached at
      // the last iteration, the tick can fall due before uv_run polls,
      // fire in its timer phase, and leave UV_RUN_ONCE (libuv 1.44)
      // blocking in poll with nothing left to wake it.
      uv_update_time(dispatcher.loop());
      tick->enable(5);
      uv_run(dispatcher.loop(), UV_RUN_ONCE);
    }
    return true;
  }
  // Runs the dispatcher for `ms` regardless.
  void runFor(uint64_t ms) {
    runUntil([] { return false; }, ms);
  }

  Dispatcher dispatcher;
};

struct Recorder : StreamCallbacks {
  void onMessage(std::string m) override {
    EchoResponse r;
    EXPECT_TRUE(r.ParseFromString(m));
    responses.push_back(r);
    if (on_message) on_message(r);
  }
  void onClose(int s, std::string m) override {
    EXPECT_FALSE(closed) << "onClose twice";
    closed = true;
    status = s;
    message = std::move(m);
    if (on_close) on_close();
  }
  std::vector<EchoResponse> responses;
  std::function<void(const EchoResponse&)> on_message;
  std::function<void()> on_close;
  bool closed = false;
  int status = -1;
  std::string message;
};

struct UnaryResult {
  bool done = false;
  int calls = 0;
  int status = -1;
  std::string message;
  EchoResponse response;
  std::chrono::steady_clock::time_point at;
};

std::string echoRequest(const std::string& message, int status = 0,
                        const std::string& error_message = "") {
  EchoRequest r;
  r.set_message(message);
  r.set_status(status);
  r.set_error_message(error_message);
  return r.SerializeAsString();
}

std::function<void(int, std::string, std::string)> capture(UnaryResult* out) {
  return [out](int status, std::string message, std::string response) {
    ++out->calls;
    out->done = true;
    out->status = status;
    out->message = std::move(message);
    out->at = std::chrono::steady_clock::now();
    if (status == 0) {
      EXPECT_TRUE(out->response.ParseFromString(response));
    }
  };
}

ChannelOptions plainOptions(const InteropServer& s) {
  ChannelOptions o;
  o.targets = {s.target()};
  return o;
}

std::string cert(const std::string& name) { return g_cert_dir + "/" + name; }

class GrpcClientTest : public ::testing::Test {
 protected:
  // One unary call, run to completion.
  UnaryResult unary(Channel& ch, const EchoRequest& req, uint64_t timeout_ms = 3000) {
    UnaryResult r;
    ch.unary(kUnary, req.SerializeAsString(), timeout_ms, capture(&r));
    EXPECT_TRUE(loop.runUntil([&] { return r.done; }, timeout_ms + 3000));
    return r;
  }
  UnaryResult echo(Channel& ch, const std::string& message) {
    EchoRequest req;
    req.set_message(message);
    return unary(ch, req);
  }

  Loop loop;
  InteropServer server;
};

// --- Unary ---

TEST_F(GrpcClientTest, UnaryOk) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  EXPECT_FALSE(ch.connected());
  EchoRequest req;
  req.set_message("hello");
  // Long enough that the first call's connect, slow under TSan, leaves
  // most of it.
  UnaryResult r = unary(ch, req, 10000);
  EXPECT_EQ(r.status, 0) << r.message;
  EXPECT_EQ(r.response.message(), "hello");
  // The server saw our grpc-timeout as its deadline.
  EXPECT_GT(r.response.deadline_remaining_ms(), 5000);
  EXPECT_LE(r.response.deadline_remaining_ms(), 10000);
  EXPECT_TRUE(ch.connected());
  EXPECT_EQ(ch.connectedTarget(), server.target());

  // No timeout: no grpc-timeout header, no deadline on the server.
  UnaryResult r2 = unary(ch, req, 0);
  EXPECT_EQ(r2.status, 0);
  EXPECT_EQ(r2.response.deadline_remaining_ms(), -1);
  EXPECT_EQ(ch.stats().connects, 1u);  // one connection, two calls
  EXPECT_EQ(r.calls, 1);
}

TEST_F(GrpcClientTest, UnaryErrorStatusAndMessage) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  // libgrpc percent-encodes grpc-message; it must come back as sent.
  const std::string text = "no such model: 100% \xC3\xBCnicode\nsecond line";
  EchoRequest req;
  req.set_status(kNotFound);
  req.set_error_message(text);
  UnaryResult r = unary(ch, req);  // a trailers-only response
  EXPECT_EQ(r.status, kNotFound);
  EXPECT_EQ(r.message, text);

  UnaryResult u;
  ch.unary("/eldric.interop.Echo/NoSuchMethod", echoRequest("x"), 2000, capture(&u));
  ASSERT_TRUE(loop.runUntil([&] { return u.done; }));
  EXPECT_EQ(u.status, kUnimplemented) << u.message;
}

TEST_F(GrpcClientTest, DeadlineExceeded) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  ASSERT_EQ(echo(ch, "warm").status, 0);  // connected: the deadline is all the call's
  EchoRequest req;
  req.set_sleep_ms(3000);
  auto start = std::chrono::steady_clock::now();
  UnaryResult r = unary(ch, req, 200);
  auto took = std::chrono::duration_cast<std::chrono::milliseconds>(r.at - start).count();
  EXPECT_EQ(r.status, kDeadlineExceeded) << r.message;
  EXPECT_GE(took, 190);
  EXPECT_LT(took, 1000);
  EXPECT_EQ(r.calls, 1);
  loop.runFor(100);  // the server's own DEADLINE_EXCEEDED must not call `done` again
  EXPECT_EQ(r.calls, 1);
  // The connection survives the cancelled call.
  EXPECT_EQ(echo(ch, "after").status, 0);
  EXPECT_EQ(ch.stats().connects, 1u);
}

// A TCP listener that never accepts: connects complete (the kernel's
// backlog), then nothing answers.
class SilentListener {
 public:
  SilentListener() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 16);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
  }
  ~SilentListener() { close(fd_); }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

 private:
  int fd_;
  int port_;
};

TEST_F(GrpcClientTest, DeadlineIsEnforcedLocally) {
  SilentListener silent;
  for (bool tls : {false, true}) {
    // Plaintext: connected, the server never answers. TLS: the handshake
    // never finishes, so the deadline passes while still connecting.
    ChannelOptions o;
    o.targets = {silent.target()};
    o.tls = tls;
    o.ca_file = cert("ca.pem");
    o.connect_timeout_ms = 5000;
    Channel ch(loop.dispatcher, o);
    UnaryResult r;
    ch.unary(kUnary, echoRequest("x"), 150, capture(&r));
    ASSERT_TRUE(loop.runUntil([&] { return r.done; }, 2000));
    EXPECT_EQ(r.status, kDeadlineExceeded) << r.message;
    EXPECT_EQ(ch.connected(), !tls);
    loop.runFor(20);
    EXPECT_EQ(r.calls, 1);
  }
}

// --- Streams ---

TEST_F(GrpcClientTest, BidiEchoesInOrderAndHalfCloses) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  for (int i = 0; i < 100; ++i) stream->send(echoRequest("m" + std::to_string(i)));
  stream->closeSend();
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
  EXPECT_EQ(rec.status, 0) << rec.message;
  ASSERT_EQ(rec.responses.size(), 101u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_EQ(rec.responses[i].message(), "m" + std::to_string(i));
    EXPECT_EQ(rec.responses[i].index(), i);
  }
  // The server's read loop ended: it saw our half-close.
  EXPECT_EQ(rec.responses[100].message(), "done");
  EXPECT_EQ(rec.responses[100].index(), 100);
}

TEST_F(GrpcClientTest, BidiInterleavedSendAndReceive) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  // Send the next message only when the previous echo is back.
  rec.on_message = [&](const EchoResponse& r) {
    if (r.index() < 19) stream->send(echoRequest("n" + std::to_string(r.index() + 1)));
    if (r.index() == 19) stream->closeSend();
  };
  stream->send(echoRequest("n0"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
  EXPECT_EQ(rec.status, 0);
  ASSERT_EQ(rec.responses.size(), 21u);
  EXPECT_EQ(rec.responses[19].message(), "n19");
}

TEST_F(GrpcClientTest, BidiServerEndsWithError) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  for (int i = 0; i < 3; ++i) stream->send(echoRequest("ok"));
  stream->send(echoRequest("", kFailedPrecondition, "stop here"));
  // Not half-closed: the server ends the call while we could still send.
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
  EXPECT_EQ(rec.status, kFailedPrecondition);
  EXPECT_EQ(rec.message, "stop here");
  EXPECT_EQ(rec.responses.size(), 3u);
  stream->send(echoRequest("ignored"));  // after onClose: a no-op
  EXPECT_EQ(echo(ch, "still fine").status, 0);
}

TEST_F(GrpcClientTest, ServerStreamingWithTrailingError) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  EchoRequest req;
  req.set_message("s");
  req.set_count(5);
  req.set_status(kAborted);
  req.set_error_message("aborted after five");
  auto stream = ch.startStream(kServerStream, rec);
  stream->send(req.SerializeAsString());
  stream->closeSend();
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
  EXPECT_EQ(rec.status, kAborted);
  EXPECT_EQ(rec.message, "aborted after five");
  EXPECT_EQ(rec.responses.size(), 5u);
}

TEST_F(GrpcClientTest, MessagesLargerThanFramesAndWindows) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  // 1 MB and 9 MB out: many DATA frames, more than libgrpc's initial
  // window, so our sending waits for its WINDOW_UPDATEs.
  std::string one_mb(1 << 20, 'a');
  std::string nine_mb(9 << 20, 'b');
  stream->send(echoRequest(one_mb));
  stream->send(echoRequest(nine_mb));
  stream->closeSend();
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }, 10000));
  EXPECT_EQ(rec.status, 0) << rec.message;
  ASSERT_EQ(rec.responses.size(), 3u);
  EXPECT_EQ(rec.responses[0].message(), one_mb);
  EXPECT_EQ(rec.responses[1].message(), nine_mb);

  // A 20 MB response.
  EchoRequest big;
  big.set_response_size(20 << 20);
  UnaryResult r = unary(ch, big, 10000);
  EXPECT_EQ(r.status, 0) << r.message;
  EXPECT_EQ(r.response.message().size(), size_t{20} << 20);
}

TEST_F(GrpcClientTest, MaxReceiveMessageSize) {
  server.start({});
  ChannelOptions o = plainOptions(server);
  o.max_receive_message_bytes = 1 << 20;
  Channel ch(loop.dispatcher, o);
  EchoRequest big;
  big.set_response_size(2 << 20);
  UnaryResult r = unary(ch, big);
  EXPECT_EQ(r.status, kResourceExhausted) << r.message;
  EXPECT_NE(r.message.find("larger than max"), std::string::npos) << r.message;
  // Only the call failed, not the connection.
  EXPECT_EQ(echo(ch, "small").status, 0);
  EXPECT_EQ(ch.stats().connects, 1u);
}

TEST_F(GrpcClientTest, CancelIsSilentAndConnectionStays) {
  server.start({});
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  stream->send(echoRequest("one"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.responses.size() == 1; }));
  stream->cancel();
  stream->send(echoRequest("ignored"));
  loop.runFor(50);
  EXPECT_FALSE(rec.closed);
  // Destroying an open stream cancels it too.
  Recorder rec2;
  auto s2 = ch.startStream(kBidi, rec2);
  s2->send(echoRequest("two"));
  ASSERT_TRUE(loop.runUntil([&] { return rec2.responses.size() == 1; }));
  s2.reset();
  // And one cancelled before the connection exists.
  Channel ch2(loop.dispatcher, plainOptions(server));
  Recorder rec3;
  ch2.startStream(kBidi, rec3)->cancel();
  loop.runFor(50);
  EXPECT_FALSE(rec2.closed);
  EXPECT_FALSE(rec3.closed);
  EXPECT_EQ(echo(ch, "after cancel").status, 0);
  EXPECT_EQ(ch.stats().connects, 1u);
}

TEST_F(GrpcClientTest, CallbacksMayDestroyTheStreamAndTheChannel) {
  server.start({});
  auto ch = std::make_unique<Channel>(loop.dispatcher, plainOptions(server));
  Recorder rec;
  std::unique_ptr<Stream> stream = ch->startStream(kBidi, rec);
  rec.on_message = [&](const EchoResponse&) { stream.reset(); };
  stream->send(echoRequest("a"));
  stream->send(echoRequest("b"));
  ASSERT_TRUE(loop.runUntil([&] { return !stream; }));
  loop.runFor(50);
  EXPECT_EQ(rec.responses.size(), 1u);
  EXPECT_FALSE(rec.closed);

  Recorder rec2, rec3;
  auto s2 = ch->startStream(kBidi, rec2);
  auto s3 = ch->startStream(kBidi, rec3);
  rec2.on_message = [&](const EchoResponse&) { ch.reset(); };
  s3->send(echoRequest("pending"));
  UnaryResult u;
  ch->unary(kUnary, echoRequest("x", 0, ""), 0, capture(&u));
  s2->send(echoRequest("boom"));
  ASSERT_TRUE(loop.runUntil([&] { return !ch; }));
  loop.runFor(100);
  // Destroying the Channel is silent.
  EXPECT_FALSE(rec2.closed);
  EXPECT_FALSE(rec3.closed);
  s2->send(echoRequest("after"));  // handles outlive the Channel harmlessly
  s2.reset();
  s3.reset();
}

// --- Connection loss and reconnecting ---

TEST_F(GrpcClientTest, ServerKilledMidStreamThenReconnect) {
  server.start({});
  int port = server.port();
  Channel ch(loop.dispatcher, plainOptions(server));
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  stream->send(echoRequest("before"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.responses.size() == 1; }));
  UnaryResult pending;
  EchoRequest slow;
  slow.set_sleep_ms(5000);
  ch.unary(kUnary, slow.SerializeAsString(), 10000, capture(&pending));
  loop.runFor(50);
  server.kill();
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed && pending.done; }, 3000));
  EXPECT_EQ(rec.status, kUnavailable);
  EXPECT_NE(rec.message.find("lost"), std::string::npos) << rec.message;
  EXPECT_EQ(pending.status, kUnavailable);
  EXPECT_FALSE(ch.connected());

  // Down: the next call tries to connect and fails, UNAVAILABLE.
  UnaryResult down = echo(ch, "nobody home");
  EXPECT_EQ(down.status, kUnavailable);
  EXPECT_NE(down.message.find("failed to connect"), std::string::npos) << down.message;

  // Up again on the same port: the next call reconnects.
  server.start({"--port=" + std::to_string(port)});
  UnaryResult up = echo(ch, "back");
  EXPECT_EQ(up.status, 0) << up.message;
  EXPECT_EQ(ch.stats().connects, 2u);
  EXPECT_TRUE(ch.connected());
}

// The connection is lost with several calls open and the first of them to
// end destroys the Channel: the others end silently (no onClose, no
// `done`), and their handles are inert.
TEST_F(GrpcClientTest, ChannelDestroyedWhileALostConnectionEndsItsCalls) {
  server.start({});
  auto ch = std::make_unique<Channel>(loop.dispatcher, plainOptions(server));
  Recorder rec1, rec2;
  auto s1 = ch->startStream(kBidi, rec1);
  auto s2 = ch->startStream(kBidi, rec2);
  s1->send(echoRequest("one"));
  s2->send(echoRequest("two"));
  ASSERT_TRUE(
      loop.runUntil([&] { return rec1.responses.size() == 1 && rec2.responses.size() == 1; }));
  UnaryResult pending;
  EchoRequest slow;
  slow.set_sleep_ms(5000);
  ch->unary(kUnary, slow.SerializeAsString(), 10000, [&](int s, std::string m, std::string r) {
    capture (&pending)(s, std::move(m), std::move(r));
    ch.reset();
  });
  loop.runFor(50);
  // Whichever call ends first (the order is the session's) destroys the
  // Channel.
  int ended = 0;
  rec1.on_close = [&] {
    ++ended;
    ch.reset();
  };
  rec2.on_close = rec1.on_close;
  server.kill();
  ASSERT_TRUE(loop.runUntil([&] { return !ch; }, 3000));
  loop.runFor(100);
  EXPECT_EQ(ended + pending.calls, 1);
  for (Recorder* r : {&rec1, &rec2}) {
    if (r->closed) {
      EXPECT_EQ(r->status, kUnavailable) << r->message;
    }
  }
  if (pending.done) {
    EXPECT_EQ(pending.status, kUnavailable) << pending.message;
  }
  // The calls left open were silenced: sending on them is ignored.
  for (Stream* s : {s1.get(), s2.get()}) {
    s->send(echoRequest("after"));
    EXPECT_EQ(s->queuedBytes(), 0u);
  }
  s1.reset();
  s2.reset();
}

TEST_F(GrpcClientTest, TargetsAreTriedInOrder) {
  server.start({});
  // A port nothing listens on: the first target is refused.
  InteropServer gone;
  gone.start({});
  std::string dead = gone.target();
  gone.kill();
  ChannelOptions o;
  o.targets = {dead, "not a target", server.target()};
  Channel ch(loop.dispatcher, o);
  EXPECT_EQ(echo(ch, "x").status, 0);
  EXPECT_EQ(ch.connectedTarget(), server.target());
  EXPECT_EQ(ch.stats().connect_failures, 1u);

  ChannelOptions none;
  none.targets = {dead};
  Channel ch2(loop.dispatcher, none);
  Recorder rec;
  auto s = ch2.startStream(kBidi, rec);
  EXPECT_FALSE(rec.closed);  // never before startStream returns
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
  EXPECT_EQ(rec.status, kUnavailable);
  EXPECT_NE(rec.message.find(dead), std::string::npos) << rec.message;
}

TEST_F(GrpcClientTest, HostNamesAreResolved) {
  server.start({});
  ChannelOptions o;
  o.targets = {"localhost:" + std::to_string(server.port())};
  Channel ch(loop.dispatcher, o);
  EXPECT_EQ(echo(ch, "by name").status, 0);
}

// --- Keepalive ---

TEST_F(GrpcClientTest, KeepalivePingsKeepAnIdleStream) {
  server.start({"--permit_pings"});
  ChannelOptions o = plainOptions(server);
  o.keepalive_ms = 100;
  Channel ch(loop.dispatcher, o);
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  stream->send(echoRequest("hi"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.responses.size() == 1; }));
  loop.runFor(700);
  EXPECT_GE(ch.stats().pings_sent, 3u);
  EXPECT_FALSE(rec.closed) << rec.message;
  stream->send(echoRequest("still here"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.responses.size() == 2; }));
}

TEST_F(GrpcClientTest, DefaultLibgrpcPolicyRejectsFrequentPings) {
  // What a control plane with libgrpc's default ping policy does to a
  // client that pings an idle stream: after a few pings it ends the open
  // calls with UNAVAILABLE "Too many pings", sends GOAWAY
  // ENHANCE_YOUR_CALM "too_many_pings" and closes the connection.
  server.start({});
  ChannelOptions o = plainOptions(server);
  // The ACK must come within one interval: 50 ms was too short for a
  // server under TSan.
  o.keepalive_ms = 200;
  Channel ch(loop.dispatcher, o);
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  stream->send(echoRequest("hi"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }, 5000));
  EXPECT_EQ(rec.status, kUnavailable);
  EXPECT_NE(rec.message.find("many pings"), std::string::npos) << rec.message;
  ASSERT_TRUE(loop.runUntil([&] { return ch.stats().goaways_received == 1; }));
  ASSERT_TRUE(loop.runUntil([&] { return !ch.connected(); }));
}

TEST_F(GrpcClientTest, MissingPongDropsTheConnection) {
  server.start({"--permit_pings"});
  ChannelOptions o = plainOptions(server);
  o.keepalive_ms = 100;
  Channel ch(loop.dispatcher, o);
  Recorder rec;
  auto stream = ch.startStream(kBidi, rec);
  stream->send(echoRequest("hi"));
  ASSERT_TRUE(loop.runUntil([&] { return rec.responses.size() == 1; }));
  // A stopped process: the kernel keeps the TCP connection up, nothing
  // answers the PING.
  server.signal(SIGSTOP);
  ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }, 2000));
  server.signal(SIGCONT);
  EXPECT_EQ(rec.status, kUnavailable);
  EXPECT_NE(rec.message.find("keepalive"), std::string::npos) << rec.message;
  EXPECT_EQ(ch.stats().keepalive_timeouts, 1u);
}

// --- TLS ---

TEST_F(GrpcClientTest, TlsVerifiesTheServer) {
  server.start({"--tls_cert=" + cert("server.pem"), "--tls_key=" + cert("server.key")});
  ChannelOptions o = plainOptions(server);
  o.tls = true;
  o.ca_file = cert("ca.pem");
  {
    // By IP: the certificate's IP SAN matches.
    Channel ch(loop.dispatcher, o);
    UnaryResult r = echo(ch, "secure");
    EXPECT_EQ(r.status, 0) << r.message;
    EXPECT_EQ(r.response.message(), "secure");
  }
  {
    // By name (SNI and the DNS SAN).
    ChannelOptions named = o;
    named.authority = "localhost";
    Channel ch(loop.dispatcher, named);
    EXPECT_EQ(echo(ch, "named").status, 0);
  }
  {
    // A name the certificate does not carry.
    ChannelOptions wrong = o;
    wrong.authority = "wrong.example";
    Channel ch(loop.dispatcher, wrong);
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable);
    EXPECT_NE(r.message.find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << r.message;
  }
  {
    // Another CA.
    ChannelOptions other = o;
    other.ca_file = cert("other_ca.pem");
    Channel ch(loop.dispatcher, other);
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable);
    EXPECT_NE(r.message.find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << r.message;
    EXPECT_EQ(ch.stats().connects, 0u);
  }
  {
    // Plaintext to a TLS port fails, as UNAVAILABLE.
    Channel ch(loop.dispatcher, plainOptions(server));
    EXPECT_EQ(echo(ch, "x").status, kUnavailable);
  }
  {
    ChannelOptions missing = o;
    missing.ca_file = cert("no-such-file.pem");
    Channel ch(loop.dispatcher, missing);
    EXPECT_FALSE(ch.configError().empty());
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable);
    EXPECT_NE(r.message.find("no-such-file"), std::string::npos) << r.message;
  }
}

TEST_F(GrpcClientTest, MutualTls) {
  server.start({"--tls_cert=" + cert("server.pem"), "--tls_key=" + cert("server.key"),
                "--client_ca=" + cert("ca.pem")});
  ChannelOptions o = plainOptions(server);
  o.tls = true;
  o.ca_file = cert("ca.pem");
  o.cert_file = cert("client.pem");
  o.key_file = cert("client.key");
  {
    Channel ch(loop.dispatcher, o);
    Recorder rec;
    auto stream = ch.startStream(kBidi, rec);
    stream->send(echoRequest("mtls"));
    stream->closeSend();
    ASSERT_TRUE(loop.runUntil([&] { return rec.closed; }));
    EXPECT_EQ(rec.status, 0) << rec.message;
    ASSERT_EQ(rec.responses.size(), 2u);
    EXPECT_EQ(rec.responses[0].message(), "mtls");
  }
  {
    // No client certificate.
    ChannelOptions anon = o;
    anon.cert_file.clear();
    anon.key_file.clear();
    Channel ch(loop.dispatcher, anon);
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable) << r.message;
  }
  {
    // A client certificate from a CA the server does not trust.
    ChannelOptions stranger = o;
    stranger.cert_file = cert("other_client.pem");
    stranger.key_file = cert("other_client.key");
    Channel ch(loop.dispatcher, stranger);
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable) << r.message;
  }
  {
    // The wrong CA on our side fails before any certificate is sent.
    ChannelOptions wrong_ca = o;
    wrong_ca.ca_file = cert("other_ca.pem");
    Channel ch(loop.dispatcher, wrong_ca);
    UnaryResult r = echo(ch, "x");
    EXPECT_EQ(r.status, kUnavailable);
    EXPECT_NE(r.message.find("CERTIFICATE_VERIFY_FAILED"), std::string::npos) << r.message;
  }
}

// --- HTTP/2 edge cases, from a crafted server ---
//
// libgrpc++ cannot be made to send some things: its sync server puts each
// message in its own DATA frame (and a Write() with the buffer hint blocks
// forever), and it never answers with a proxy's 503. A small nghttp2
// server on a thread sends them exactly.

class CraftedServer {
 public:
  CraftedServer() {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    listen(fd_, 16);
    socklen_t len = sizeof a;
    getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~CraftedServer() {
    stop_ = true;
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }
  // The request headers of the last call, "name: value" lines.
  std::vector<std::string> lastRequestHeaders() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_headers_;
  }

 private:
  struct Response {
    std::string body;
    std::vector<std::pair<std::string, std::string>> trailers;
    size_t offset = 0;
  };

  void serve() {
    while (!stop_) {
      int c = accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      handle(c);
      close(c);
    }
  }

  void handle(int c) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(
        cbs, [](nghttp2_session*, const nghttp2_frame* f, const uint8_t* n, size_t nl,
                const uint8_t* v, size_t vl, uint8_t, void* u) {
          auto* self = static_cast<CraftedServer*>(u);
          std::string name(reinterpret_cast<const char*>(n), nl);
          std::string value(reinterpret_cast<const char*>(v), vl);
          if (name == ":path") self->paths_[f->hd.stream_id] = value;
          std::lock_guard<std::mutex> lock(self->mu_);
          self->headers_[f->hd.stream_id].push_back(name + ": " + value);
          return 0;
        });
    nghttp2_session_callbacks_set_on_frame_recv_callback(
        cbs, [](nghttp2_session* s, const nghttp2_frame* f, void* u) {
          if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
              (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
            static_cast<CraftedServer*>(u)->respond(s, f->hd.stream_id);
          }
          return 0;
        });
    nghttp2_session* s;
    nghttp2_session_server_new(&s, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, nullptr, 0);
    while (!stop_ && (nghttp2_session_want_read(s) || nghttp2_session_want_write(s))) {
      const uint8_t* out;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(s, &out)) > 0) {
        if (write(c, out, static_cast<size_t>(n)) != n) break;
      }
      pollfd p{c, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      uint8_t buf[16384];
      ssize_t r = read(c, buf, sizeof buf);
      if (r <= 0 || nghttp2_session_mem_recv(s, buf, static_cast<size_t>(r)) < 0) break;
    }
    nghttp2_session_del(s);
    responses_.clear();
  }

  static std::string frame(const std::string& m) {
    EchoResponse r;
    r.set_message(m);
    std::string b = r.SerializeAsString();
    return framePrefix(static_cast<uint32_t>(b.size())) + b;
  }

  static ssize_t readBody(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len, uint32_t* flags,
                          nghttp2_data_source* src, void*) {
    auto* r = static_cast<Response*>(src->ptr);
    // Everything in one read, so one DATA frame (the bodies are < 16 KB).
    size_t n = std::min(len, r->body.size() - r->offset);
    memcpy(buf, r->body.data() + r->offset, n);
    r->offset += n;
    if (r->offset == r->body.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      if (!r->trailers.empty()) {
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        std::vector<nghttp2_nv> nv;
        for (auto& [k, v] : r->trailers) nv.push_back(makeNv(k, v));
        nghttp2_submit_trailer(s, id, nv.data(), nv.size());
      }
    }
    return static_cast<ssize_t>(n);
  }

  static nghttp2_nv makeNv(const std::string& k, const std::string& v) {
    return {reinterpret_cast<uint8_t*>(const_cast<char*>(k.data())),
            reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), k.size(), v.size(),
            NGHTTP2_NV_FLAG_NONE};
  }

  void respond(nghttp2_session* s, int32_t id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      last_headers_ = headers_[id];
    }
    const std::string path = paths_[id];
    std::string status = "200", content_type = "application/grpc";
    auto r = std::make_unique<Response>();
    bool body = true;
    if (path == "/t.S/Coalesced") {
      // Three messages in one DATA frame, then trailers.
      r->body = frame("one") + frame("two") + frame("three");
      r->trailers = {{"grpc-status", "0"}};
    } else if (path == "/t.S/Http503") {
      status = "503";
      content_type = "text/plain";
      body = false;
    } else if (path == "/t.S/NoGrpcStatus") {
      r->body = frame("orphan");
    } else if (path == "/t.S/Truncated") {
      r->body = frame("truncated").substr(0, 8);
      r->trailers = {{"grpc-status", "0"}};
    } else if (path == "/t.S/Html") {
      content_type = "text/html";
      r->body = "<html></html>";
    } else if (path == "/t.S/Refused") {
      nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, id, NGHTTP2_REFUSED_STREAM);
      return;
    } else if (path == "/t.S/TrailersOnly") {
      // (nghttp2_nv points into these strings: they must outlive the call.)
      static const std::string kS = ":status", k200 = "200", kCt = "content-type",
                               kGrpc = "application/grpc", kGs = "grpc-status", k7 = "7",
                               kGm = "grpc-message", kMsg = "denied%3A%20no%20%E2%9C%93";
      std::vector<nghttp2_nv> nv = {makeNv(kS, k200), makeNv(kCt, kGrpc), makeNv(kGs, k7),
                                    makeNv(kGm, kMsg)};
      nghttp2_submit_response(s, id, nv.data(), nv.size(), nullptr);
      return;
    }
    static const std::string kStatus = ":status", kContentType = "content-type";
    std::vector<nghttp2_nv> nv = {makeNv(kStatus, status), makeNv(kContentType, content_type)};
    if (!body) {
      nghttp2_submit_response(s, id, nv.data(), nv.size(), nullptr);
      return;
    }
    nghttp2_data_provider prd;
    prd.source.ptr = r.get();
    prd.read_callback = &CraftedServer::readBody;
    nghttp2_submit_response(s, id, nv.data(), nv.size(), &prd);
    responses_.push_back(std::move(r));
  }

  int fd_;
  int port_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::map<int32_t, std::string> paths_;
  std::vector<std::unique_ptr<Response>> responses_;
  std::mutex mu_;
  std::map<int32_t, std::vector<std::string>> headers_;
  std::vector<std::string> last_headers_;
};

struct Outcome {
  int status;
  std::string message;
  std::vector<std::string> messages;
};

class CraftedServerTest : public ::testing::Test {
 protected:
  Outcome call(const std::string& path) {
    ChannelOptions o;
    o.targets = {server.target()};
    Channel ch(loop.dispatcher, o);
    Recorder rec;
    auto stream = ch.startStream(path, rec);
    stream->send(echoRequest("q"));
    stream->closeSend();
    EXPECT_TRUE(loop.runUntil([&] { return rec.closed; }));
    Outcome out{rec.status, rec.message, {}};
    for (auto& r : rec.responses) out.messages.push_back(r.message());
    frames = ch.stats().data_frames_received;
    return out;
  }
  Loop loop;
  CraftedServer server;
  uint64_t frames = 0;
};

TEST_F(CraftedServerTest, SeveralMessagesInOneDataFrame) {
  Outcome o = call("/t.S/Coalesced");
  EXPECT_EQ(o.status, 0) << o.message;
  EXPECT_EQ(o.messages, (std::vector<std::string>{"one", "two", "three"}));
  EXPECT_EQ(frames, 1u);
}

TEST_F(CraftedServerTest, RequestHeaders) {
  ChannelOptions opts;
  opts.targets = {server.target()};
  Channel ch(loop.dispatcher, opts);
  UnaryResult r;
  ch.unary("/t.S/Coalesced", echoRequest("x"), 1500, capture(&r));
  ASSERT_TRUE(loop.runUntil([&] { return r.done; }));
  // Three responses to a unary call: a protocol violation.
  EXPECT_EQ(r.status, kInternal) << r.message;
  std::vector<std::string> h = server.lastRequestHeaders();
  auto has = [&](const std::string& line) {
    return std::find(h.begin(), h.end(), line) != h.end();
  };
  EXPECT_TRUE(has(":method: POST"));
  EXPECT_TRUE(has(":scheme: http"));
  EXPECT_TRUE(has(":path: /t.S/Coalesced"));
  EXPECT_TRUE(has(":authority: " + server.target()));
  EXPECT_TRUE(has("content-type: application/grpc"));
  EXPECT_TRUE(has("te: trailers"));
  EXPECT_TRUE(has("user-agent: eldric-edge-grpc/0.1"));
  bool timeout = false;
  for (auto& line : h) {
    if (line.rfind("grpc-timeout: ", 0) == 0) {
      timeout = true;
      EXPECT_EQ(line.back(), 'm');
      int ms = std::atoi(line.c_str() + 14);
      EXPECT_GT(ms, 1000);
      EXPECT_LE(ms, 1500);
    }
  }
  EXPECT_TRUE(timeout);
}

TEST_F(CraftedServerTest, TrailersOnlyWithEncodedMessage) {
  Outcome o = call("/t.S/TrailersOnly");
  EXPECT_EQ(o.status, kPermissionDenied);
  EXPECT_EQ(o.message, "denied: no \xE2\x9C\x93");
}

TEST_F(CraftedServerTest, NonGrpcResponsesMapPerSpec) {
  EXPECT_EQ(call("/t.S/Http503").status, kUnavailable);
  Outcome no_status = call("/t.S/NoGrpcStatus");
  EXPECT_EQ(no_status.status, kUnknown) << no_status.message;
  EXPECT_EQ(no_status.messages.size(), 1u);
  EXPECT_EQ(call("/t.S/Truncated").status, kInternal);
  EXPECT_EQ(call("/t.S/Html").status, kUnknown);
  Outcome refused = call("/t.S/Refused");
  EXPECT_EQ(refused.status, kUnavailable) << refused.message;
}

// --- Certificates (openssl CLI, EC keys: fast) ---

bool run(const std::string& cmd) { return std::system((cmd + " >/dev/null 2>&1").c_str()) == 0; }

bool makeCertificates(const std::string& dir) {
  std::ofstream(dir + "/server.ext") << "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                                        "extendedKeyUsage=serverAuth\n";
  std::ofstream(dir + "/client.ext") << "extendedKeyUsage=clientAuth\n";
  const std::string ec = " -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  auto ca = [&](const std::string& name) {
    return run("cd " + dir + " && openssl req -x509" + ec + " -keyout " + name + ".key -out " +
               name + ".pem -days 2 -subj /CN=" + name +
               " -addext basicConstraints=critical,CA:TRUE"
               " -addext keyUsage=critical,keyCertSign,cRLSign");
  };
  auto leaf = [&](const std::string& name, const std::string& ca_name, const std::string& ext) {
    return run("cd " + dir + " && openssl req" + ec + " -keyout " + name + ".key -out " + name +
               ".csr -subj /CN=" + name) &&
           run("cd " + dir + " && openssl x509 -req -in " + name + ".csr -CA " + ca_name +
               ".pem -CAkey " + ca_name + ".key -CAcreateserial -days 2 -out " + name +
               ".pem -extfile " + ext);
  };
  return ca("ca") && ca("other_ca") && leaf("server", "ca", "server.ext") &&
         leaf("client", "ca", "client.ext") && leaf("other_client", "other_ca", "client.ext");
}

}  // namespace
}  // namespace eldric::grpc

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a.rfind("--server=", 0) == 0) eldric::grpc::g_server_path = a.substr(9);
  }
  if (eldric::grpc::g_server_path.empty()) {
    fprintf(stderr, "usage: grpc_client_test --server=PATH/interop_server\n");
    return 2;
  }
  // libgrpc's own logging in the child: errors only.
  setenv("GRPC_VERBOSITY", "ERROR", 1);
  signal(SIGPIPE, SIG_IGN);
  const char* tmp = getenv("TEST_TMPDIR");
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/grpc-certs-XXXXXX";
  if (!mkdtemp(dir.data())) return 2;
  eldric::grpc::g_cert_dir = dir;
  if (!eldric::grpc::makeCertificates(dir)) {
    fprintf(stderr, "cannot make test certificates with openssl in %s\n", dir.c_str());
    return 2;
  }
  return RUN_ALL_TESTS();
}
