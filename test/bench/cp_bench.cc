// cp_bench: N simulated data planes on one real eldric-controlplane.
//
// Each simulated data plane is what eldric-edge in farm mode is on the
// wire: its own HTTP/2 connection (one grpc::Channel each, all on one libuv
// Dispatcher), one SnapshotDiscovery stream, a hello with a distinct node
// id, and an ACK (version_info + response_nonce) for every snapshot after
// decoding it. Admin calls go over another Channel on a second loop thread,
// so that a loop busy with N arrivals does not delay the admin call's
// return (or the other way round).
//
// It measures:
//  - the control plane's resident memory (VmRSS of --pid) with no stream
//    (the admin connection only) and with N streams that all ACKed the
//    current snapshot, each after settling: bytes per stream;
//  - R revocations: register a client, wait until every stream has a
//    snapshot carrying its key, revoke it; for every stream, the arrival of
//    the first snapshot in which the key is gone. Propagation is reported
//    from the admin call's return (what the brief and an operator see as
//    "done") and from its issue (fsync and snapshot build included).
//
// Prints progress on stderr and one JSON object on stdout. Every wait is
// bounded (--timeout-s); loopback only (the target is the caller's).

#include <google/protobuf/arena.h>
#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/wire_format_lite.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/grpc/channel.h"
#include "eldric/edge/v1/admin.pb.h"
#include "eldric/edge/v1/discovery.pb.h"

namespace eldric::bench {
namespace {

constexpr const char* kStreamPath = "/eldric.edge.v1.SnapshotDiscovery/StreamSnapshots";
constexpr const char* kRegisterPath = "/eldric.edge.v1.Admin/RegisterClient";
constexpr const char* kRevokePath = "/eldric.edge.v1.Admin/RevokeClient";
constexpr const char* kFarmStatusPath = "/eldric.edge.v1.Admin/GetFarmStatus";

struct Options {
  std::string target = "127.0.0.1:8870";
  int pid = 0;  // the control plane's, for VmRSS; 0: no memory figures
  int streams = 100;
  int revocations = 10;
  int batch = 100;           // streams opened per step of the ramp
  int settle_ms = 2000;      // before each RSS reading
  int gap_ms = 200;          // between revocation rounds
  int timeout_s = 60;        // bound on every wait
  int clients = 0;           // registered before measuring: the snapshot's size
  bool full_decode = false;  // parse every snapshot whole (see SimNode::onMessage)
  int report_ms = 0;         // send a usage report this often; 0: never
  std::string name_prefix = "cp-bench";
};

const char* kUsage =
    "usage: cp_bench --target HOST:PORT [--pid PID] [--streams N] [--revocations R]\n"
    "                [--batch B] [--settle-ms MS] [--gap-ms MS] [--timeout-s S]\n"
    "                [--clients K] [--full-decode] [--report-ms MS] [--name-prefix P]\n"
    "Simulates N data planes (one HTTP/2 connection and discovery stream each) on\n"
    "one eldric-controlplane; prints memory per stream (VmRSS of PID) and the\n"
    "propagation of R key revocations as JSON on stdout. --clients K registers K\n"
    "clients first, so that every snapshot carries K more keys. Each stream reads\n"
    "the key names of every snapshot from the wire; --full-decode parses each\n"
    "snapshot whole, as eldric-edge does (on one loop for all N streams).\n"
    "--report-ms MS: each stream also sends a usage report every MS (as members\n"
    "do every sync interval), so the control plane keeps and sums N reports.\n"
    "Admin calls carry the admin key in $ELDRIC_API_KEY.\n";

bool parseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto value = [&](const char* flag) -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "cp_bench: %s needs a value\n", flag);
        std::exit(2);
      }
      return argv[++i];
    };
    auto number = [&](const char* flag, int min) {
      const char* v = value(flag);
      char* end = nullptr;
      long n = std::strtol(v, &end, 10);
      if (end == v || *end != '\0' || n < min || n > 1000000) {
        std::fprintf(stderr, "cp_bench: %s: bad number \"%s\"\n", flag, v);
        std::exit(2);
      }
      return static_cast<int>(n);
    };
    if (a == "--target")
      o->target = value("--target");
    else if (a == "--pid")
      o->pid = number("--pid", 0);
    else if (a == "--streams")
      o->streams = number("--streams", 1);
    else if (a == "--revocations")
      o->revocations = number("--revocations", 1);
    else if (a == "--batch")
      o->batch = number("--batch", 1);
    else if (a == "--settle-ms")
      o->settle_ms = number("--settle-ms", 0);
    else if (a == "--gap-ms")
      o->gap_ms = number("--gap-ms", 0);
    else if (a == "--timeout-s")
      o->timeout_s = number("--timeout-s", 1);
    else if (a == "--clients")
      o->clients = number("--clients", 0);
    else if (a == "--full-decode")
      o->full_decode = true;
    else if (a == "--report-ms")
      o->report_ms = number("--report-ms", 0);
    else if (a == "--name-prefix")
      o->name_prefix = value("--name-prefix");
    else if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else {
      std::fprintf(stderr, "cp_bench: unknown flag %s\n%s", a.c_str(), kUsage);
      return false;
    }
  }
  return true;
}

int64_t nowNs() { return static_cast<int64_t>(Dispatcher::monotonicNs()); }

// VmRSS of `pid` in bytes; -1 if unreadable.
int64_t rssBytes(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return -1;
}

// User + system CPU seconds of `pid` so far; -1 if unreadable.
double cpuSeconds(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  // Fields after the command name, which ends with the last ')'.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return -1;
  std::vector<std::string> fields;
  size_t i = close + 2;
  while (i < stat.size() && fields.size() < 15) {
    size_t sp = stat.find(' ', i);
    if (sp == std::string::npos) sp = stat.size();
    fields.push_back(stat.substr(i, sp - i));
    i = sp + 1;
  }
  if (fields.size() < 13) return -1;
  // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
  double ticks = std::atof(fields[11].c_str()) + std::atof(fields[12].c_str());
  return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
}

void progress(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void progress(const char* fmt, ...) {
  std::fprintf(stderr, "[cp_bench] ");
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

// A Dispatcher on its own thread; run() posts work and waits for it.
class LoopThread {
 public:
  LoopThread() : thread_([this] { dispatcher_.run(); }) {}
  ~LoopThread() {
    dispatcher_.exit();
    thread_.join();
  }
  Dispatcher& dispatcher() { return dispatcher_; }
  void run(std::function<void()> fn) {
    std::promise<void> done;
    dispatcher_.post([&] {
      fn();
      done.set_value();
    });
    done.get_future().wait();
  }

 private:
  Dispatcher dispatcher_;
  std::thread thread_;
};

// What a round watches for, set on the streams' loop before the admin call.
struct Watch {
  int round = -1;
  bool want_present = false;  // registration: key appears; revocation: key gone
  std::string client_name;
};

// What a stream needs from a DiscoveryResponse.
struct Received {
  bool has_snapshot = false;
  std::string version, nonce;
  bool name_present = false;  // a key of client `name` is in snapshot.auth
};

// Reads the response's version, nonce and the client names of its keys
// (snapshot = 3, snapshot.auth = 20, auth.api_keys = 2, client_name = 4)
// straight from the wire, skipping everything else. False if malformed.
bool scanResponse(const std::string& bytes, const std::string& name, Received* out) {
  using google::protobuf::internal::WireFormatLite;
  using google::protobuf::io::CodedInputStream;
  CodedInputStream in(reinterpret_cast<const uint8_t*>(bytes.data()),
                      static_cast<int>(bytes.size()));
  in.SetTotalBytesLimit(static_cast<int>(bytes.size()));
  std::string value;
  // Descends into the length-delimited fields on `path` (field numbers,
  // outermost first); calls `leaf` at the last level's fields.
  std::function<bool(const int*, int)> walk = [&](const int* path, int depth) -> bool {
    while (uint32_t tag = in.ReadTag()) {
      int field = static_cast<int>(WireFormatLite::GetTagFieldNumber(tag));
      bool delimited =
          WireFormatLite::GetTagWireType(tag) == WireFormatLite::WIRETYPE_LENGTH_DELIMITED;
      if (depth == 0) {
        // DiscoveryResponse.
        if (delimited && (field == 1 || field == 2)) {
          if (!WireFormatLite::ReadString(&in, field == 1 ? &out->version : &out->nonce)) {
            return false;
          }
          continue;
        }
        if (delimited && field == 3) out->has_snapshot = true;
      }
      if (delimited && depth < 3 && field == path[depth]) {
        uint32_t len;
        if (!in.ReadVarint32(&len)) return false;
        auto limit = in.PushLimit(static_cast<int>(len));
        if (!walk(path, depth + 1)) return false;
        if (!in.ConsumedEntireMessage()) return false;
        in.PopLimit(limit);
        continue;
      }
      if (depth == 3 && delimited && field == 4) {
        uint32_t len;
        if (!in.ReadVarint32(&len) || !in.ReadString(&value, static_cast<int>(len))) return false;
        if (value == name) out->name_present = true;
        continue;
      }
      if (!WireFormatLite::SkipField(&in, tag)) return false;
    }
    return true;
  };
  static const int kPath[] = {3, 20, 2};
  return walk(kPath, 0) && in.ConsumedEntireMessage();
}

class Bench;

// One simulated data plane.
class SimNode : public grpc::StreamCallbacks {
 public:
  SimNode(Bench& bench, int index) : bench_(bench), index_(index) {}
  void start(Dispatcher& d, const std::string& target);
  void stop() {
    report_timer_.reset();
    if (stream_) stream_->cancel();
    stream_.reset();
    channel_.reset();
  }
  void onMessage(std::string message) override;
  void onClose(int grpc_status, std::string message) override;

 private:
  Bench& bench_;
  const int index_;
  std::unique_ptr<grpc::Channel> channel_;
  std::unique_ptr<grpc::Stream> stream_;
  TimerPtr report_timer_;
  std::string applied_version_;
  bool ready_ = false;
  int recorded_round_ = -1;
};

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}
  int run();

  // Called on the streams' loop.
  void onSnapshot(int index, int64_t arrival_ns, size_t bytes, bool name_present, bool* ready,
                  int* recorded_round);
  const std::string& watchedName() const { return watch_.client_name; }
  bool fullDecode() const { return o_.full_decode; }
  int reportMs() const { return o_.report_ms; }
  int streams() const { return o_.streams; }
  void onStreamClosed(int index, int status, const std::string& message);
  // For decoding on the streams' loop.
  google::protobuf::Arena& arena() { return arena_; }

 private:
  struct Call {
    int status = -1;
    std::string message, response;
    int64_t issued_ns = 0, returned_ns = 0;
  };
  Call admin(const char* path, const std::string& request);
  // Waits until `count` reaches `want` or the timeout; false on timeout or
  // when a stream failed.
  bool waitFor(const std::atomic<int>& count, int want, const char* what);
  bool openStreams();
  bool round(int r, std::vector<int64_t>* from_return, std::vector<int64_t>* from_issue,
             std::vector<int64_t>* call_ns, double* register_p99_ms);
  // Starts watching for a round, on the streams' loop (which alone writes
  // arrivals_ once the watch is set).
  void setWatch(int round, bool want_present, const std::string& name) {
    streams_loop_->run([&] {
      arrived_ = 0;
      std::fill(arrivals_.begin(), arrivals_.end(), 0);
      watch_ = Watch{round, want_present, name};
    });
  }

  Options o_;
  std::unique_ptr<LoopThread> streams_loop_, admin_loop_;
  std::unique_ptr<grpc::Channel> admin_channel_;
  std::vector<std::unique_ptr<SimNode>> nodes_;

  google::protobuf::Arena arena_{[] {
    google::protobuf::ArenaOptions o;
    o.start_block_size = 256 * 1024;
    o.max_block_size = 4 * 1024 * 1024;
    return o;
  }()};
  // Written on the streams' loop; counters read by the main thread.
  Watch watch_;
  std::vector<int64_t> arrivals_;  // per stream, for the current round
  std::atomic<int> ready_{0};
  std::atomic<int> arrived_{0};
  std::atomic<int> closed_{0};
  std::atomic<size_t> snapshot_bytes_{0};  // the last DiscoveryResponse seen
  std::mutex errors_mu_;
  std::string first_error_;
};

void SimNode::start(Dispatcher& d, const std::string& target) {
  grpc::ChannelOptions co;
  co.targets = {target};
  channel_ = std::make_unique<grpc::Channel>(d, co);
  stream_ = channel_->startStream(kStreamPath, *this);
  edge::v1::DiscoveryRequest hello;
  auto* node = hello.mutable_node();
  node->set_id("bench-node-" + std::to_string(index_));
  node->set_build_version("cp_bench");
  node->add_listen_addresses("127.0.0.1:" + std::to_string(20000 + index_));
  stream_->send(hello.SerializeAsString());
  if (int every = bench_.reportMs(); every > 0) {
    // A small report like an idle member's: a few counts, one upstream.
    report_timer_ = d.createTimer([this, every] {
      if (!stream_) return;
      edge::v1::DiscoveryRequest req;
      auto* u = req.mutable_usage();
      u->set_at_unix_ms(static_cast<int64_t>(std::time(nullptr)) * 1000);
      u->set_window_seconds(60);
      u->set_global_requests(10);
      auto* ip = u->add_ip_requests();
      ip->set_key("10.0.0." + std::to_string(index_ % 250));
      ip->set_count(10);
      auto* up = u->add_upstreams();
      up->set_url("http://127.0.0.1:19881");
      up->set_healthy(true);
      stream_->send(req.SerializeAsString());
      report_timer_->enable(every);
    });
    // Spread over the interval, as members that joined at different times.
    report_timer_->enable(1 + static_cast<uint64_t>(index_) * every / bench_.streams());
  }
}

void SimNode::onMessage(std::string message) {
  int64_t arrival = nowNs();
  Received r;
  const std::string& watched = bench_.watchedName();
  if (bench_.fullDecode()) {
    // As eldric-edge does, but one loop decodes for all N streams: parse on
    // an arena reused across messages, or malloc and free of each key's
    // fields dominate the loop.
    google::protobuf::Arena& arena = bench_.arena();
    arena.Reset();
    auto* resp = google::protobuf::Arena::CreateMessage<edge::v1::DiscoveryResponse>(&arena);
    if (!resp->ParseFromString(message)) {
      bench_.onStreamClosed(index_, -1, "unparsable DiscoveryResponse");
      return;
    }
    r.has_snapshot = resp->has_snapshot();
    r.version = resp->version_info();
    r.nonce = resp->nonce();
    for (const auto& k : resp->snapshot().auth().api_keys()) {
      if (k.client_name() == watched) r.name_present = true;
    }
  } else if (!scanResponse(message, watched, &r)) {
    bench_.onStreamClosed(index_, -1, "malformed DiscoveryResponse");
    return;
  }
  if (!r.has_snapshot) return;  // farm usage: no ACK, as the data plane
  bench_.onSnapshot(index_, arrival, message.size(), r.name_present, &ready_, &recorded_round_);
  applied_version_ = r.version;
  edge::v1::DiscoveryRequest ack;
  ack.set_response_nonce(r.nonce);
  ack.set_version_info(applied_version_);
  if (stream_) stream_->send(ack.SerializeAsString());
}

void SimNode::onClose(int grpc_status, std::string message) {
  stream_.reset();
  bench_.onStreamClosed(index_, grpc_status, message);
}

void Bench::onSnapshot(int index, int64_t arrival_ns, size_t bytes, bool present, bool* ready,
                       int* recorded_round) {
  snapshot_bytes_.store(bytes, std::memory_order_relaxed);
  if (!*ready) {
    *ready = true;
    ready_.fetch_add(1, std::memory_order_release);
  }
  if (watch_.round < 0 || *recorded_round >= watch_.round) return;
  if (present != watch_.want_present) return;
  *recorded_round = watch_.round;
  arrivals_[index] = arrival_ns;
  arrived_.fetch_add(1, std::memory_order_release);
}

void Bench::onStreamClosed(int index, int status, const std::string& message) {
  closed_.fetch_add(1);
  std::lock_guard<std::mutex> l(errors_mu_);
  if (first_error_.empty()) {
    first_error_ = "stream " + std::to_string(index) + " ended: status " + std::to_string(status) +
                   " " + message;
  }
}

Bench::Call Bench::admin(const char* path, const std::string& request) {
  Call out;
  std::promise<void> done;
  admin_loop_->dispatcher().post([&] {
    out.issued_ns = nowNs();
    const char* key = std::getenv("ELDRIC_API_KEY");
    admin_channel_->unary(path, request, 10000,
                          [&](int status, std::string msg, std::string resp) {
                            out.returned_ns = nowNs();
                            out.status = status;
                            out.message = std::move(msg);
                            out.response = std::move(resp);
                            done.set_value();
                          },
                          {{"authorization", std::string("Bearer ") + (key ? key : "")}});
  });
  // The unary call's own deadline (10 s) bounds this.
  done.get_future().wait();
  return out;
}

bool Bench::waitFor(const std::atomic<int>& count, int want, const char* what) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(o_.timeout_s);
  while (count.load(std::memory_order_acquire) < want) {
    if (closed_.load() > 0) {
      std::lock_guard<std::mutex> l(errors_mu_);
      progress("%s: %s", what, first_error_.c_str());
      return false;
    }
    if (std::chrono::steady_clock::now() > deadline) {
      progress("%s: timed out after %d s (%d of %d)", what, o_.timeout_s, count.load(), want);
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

bool Bench::openStreams() {
  // A ramp, as members joining a farm: `batch` connections at a time, each
  // batch fully subscribed before the next.
  for (int first = 0; first < o_.streams; first += o_.batch) {
    int last = std::min(o_.streams, first + o_.batch);
    streams_loop_->run([&] {
      for (int i = first; i < last; i++) nodes_[i]->start(streams_loop_->dispatcher(), o_.target);
    });
    if (!waitFor(ready_, last, "opening streams")) return false;
  }
  return true;
}

double percentileMs(std::vector<int64_t> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t i = std::min(v.size() - 1, static_cast<size_t>(p / 100.0 * static_cast<double>(v.size())));
  return static_cast<double>(v[i]) / 1e6;
}

bool Bench::round(int r, std::vector<int64_t>* from_return, std::vector<int64_t>* from_issue,
                  std::vector<int64_t>* call_ns, double* register_p99_ms) {
  const std::string name = o_.name_prefix + "-" + std::to_string(r);
  const int n = o_.streams;

  // Register, and wait until every stream holds the key.
  setWatch(2 * r, true, name);
  edge::v1::RegisterClientRequest reg;
  reg.set_name(name);
  reg.set_description("cp_bench revocation round");
  Call c = admin(kRegisterPath, reg.SerializeAsString());
  if (c.status != 0) {
    progress("register %s failed: status %d %s", name.c_str(), c.status, c.message.c_str());
    return false;
  }
  if (!waitFor(arrived_, n, "registration reaching every stream")) return false;
  std::vector<int64_t> reg_lat;
  streams_loop_->run([&] {
    for (int64_t a : arrivals_) reg_lat.push_back(std::max<int64_t>(0, a - c.issued_ns));
  });
  *register_p99_ms = percentileMs(reg_lat, 99);

  // Revoke (by name), and time the snapshot without the key on each stream.
  setWatch(2 * r + 1, false, name);
  edge::v1::ClientRef ref;
  ref.set_id(name);
  c = admin(kRevokePath, ref.SerializeAsString());
  if (c.status != 0) {
    progress("revoke %s failed: status %d %s", name.c_str(), c.status, c.message.c_str());
    return false;
  }
  if (!waitFor(arrived_, n, "revocation reaching every stream")) return false;
  std::vector<int64_t> ret, iss;
  streams_loop_->run([&] {
    for (int64_t a : arrivals_) {
      // The control plane queues the new snapshot on every stream before
      // it answers: an arrival may beat the answer (counted as 0).
      ret.push_back(std::max<int64_t>(0, a - c.returned_ns));
      iss.push_back(a - c.issued_ns);
    }
  });
  call_ns->push_back(c.returned_ns - c.issued_ns);
  from_return->insert(from_return->end(), ret.begin(), ret.end());
  from_issue->insert(from_issue->end(), iss.begin(), iss.end());
  progress(
      "round %d: admin call %.1f ms; key gone on all %d streams: p50 %.1f ms, p99 %.1f ms, "
      "max %.1f ms after the call returned",
      r + 1, static_cast<double>(c.returned_ns - c.issued_ns) / 1e6, n, percentileMs(ret, 50),
      percentileMs(ret, 99), percentileMs(ret, 100));
  return true;
}

int Bench::run() {
  // Two descriptors per stream would be plenty; the hard limit is the
  // machine's to set.
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < static_cast<rlim_t>(o_.streams) + 64) {
    progress("descriptor limit %llu is too low for %d streams (raise ulimit -n)",
             static_cast<unsigned long long>(rl.rlim_cur), o_.streams);
    return 1;
  }

  streams_loop_ = std::make_unique<LoopThread>();
  admin_loop_ = std::make_unique<LoopThread>();
  admin_loop_->run([&] {
    grpc::ChannelOptions co;
    co.targets = {o_.target};
    admin_channel_ = std::make_unique<grpc::Channel>(admin_loop_->dispatcher(), co);
  });
  arrivals_.assign(o_.streams, 0);
  for (int i = 0; i < o_.streams; i++) nodes_.push_back(std::make_unique<SimNode>(*this, i));

  // The admin connection first: the baseline then holds gRPC's one-time
  // costs (threads, the first transport), not only an idle process.
  Call hello = admin(kFarmStatusPath, edge::v1::FarmStatusRequest().SerializeAsString());
  if (hello.status != 0) {
    progress("control plane at %s not answering: status %d %s", o_.target.c_str(), hello.status,
             hello.message.c_str());
    return 1;
  }
  // Keys that stay: every snapshot of the run carries them.
  for (int i = 0; i < o_.clients; i++) {
    edge::v1::RegisterClientRequest reg;
    reg.set_name(o_.name_prefix + "-resident-" + std::to_string(i));
    Call c = admin(kRegisterPath, reg.SerializeAsString());
    if (c.status != 0) {
      progress("registering resident client %d failed: status %d %s", i, c.status,
               c.message.c_str());
      return 1;
    }
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(o_.settle_ms));
  int64_t rss0 = o_.pid ? rssBytes(o_.pid) : -1;

  auto t_open = std::chrono::steady_clock::now();
  bool ok = openStreams();
  double open_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_open).count();
  int64_t rssN = -1;
  std::vector<int64_t> from_return, from_issue, call_ns;
  double register_p99_worst = 0;
  double cp_cpu0 = -1, self_cpu0 = -1;
  if (ok) {
    progress("%d streams subscribed in %.2f s", o_.streams, open_s);
    std::this_thread::sleep_for(std::chrono::milliseconds(o_.settle_ms));
    rssN = o_.pid ? rssBytes(o_.pid) : -1;
    if (rss0 > 0 && rssN > 0) {
      progress(
          "control plane VmRSS: %.1f MiB with no stream, %.1f MiB with %d: %.0f bytes per stream",
          rss0 / 1048576.0, rssN / 1048576.0, o_.streams,
          static_cast<double>(rssN - rss0) / o_.streams);
    }
    cp_cpu0 = o_.pid ? cpuSeconds(o_.pid) : -1;
    self_cpu0 = cpuSeconds(getpid());
    for (int r = 0; r < o_.revocations && ok; r++) {
      double reg_p99 = 0;
      ok = round(r, &from_return, &from_issue, &call_ns, &reg_p99);
      register_p99_worst = std::max(register_p99_worst, reg_p99);
      if (ok && o_.gap_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(o_.gap_ms));
    }
  }
  int64_t rss_after = o_.pid ? rssBytes(o_.pid) : -1;
  // CPU spent over the rounds (registrations and revocations both push
  // the snapshot to every stream): who is the bottleneck on this machine.
  double cp_cpu = o_.pid && cp_cpu0 >= 0 ? cpuSeconds(o_.pid) - cp_cpu0 : -1;
  double self_cpu = self_cpu0 >= 0 ? cpuSeconds(getpid()) - self_cpu0 : -1;

  streams_loop_->run([&] {
    for (auto& n : nodes_) n->stop();
  });
  admin_loop_->run([&] { admin_channel_.reset(); });
  streams_loop_.reset();
  admin_loop_.reset();

  auto fmt = [](double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", v);
    return std::string(b);
  };
  std::string json =
      "{\"ok\":" + std::string(ok ? "true" : "false") +
      ",\"streams\":" + std::to_string(o_.streams) +
      ",\"revocations\":" + std::to_string(o_.revocations) +
      ",\"resident_clients\":" + std::to_string(o_.clients) +
      ",\"full_decode\":" + (o_.full_decode ? "true" : "false") +
      ",\"report_ms\":" + std::to_string(o_.report_ms) +
      ",\"snapshot_bytes\":" + std::to_string(snapshot_bytes_.load()) +
      ",\"samples\":" + std::to_string(from_return.size()) + ",\"open_s\":" + fmt(open_s) +
      ",\"rss_idle_bytes\":" + std::to_string(rss0) +
      ",\"rss_streams_bytes\":" + std::to_string(rssN) +
      ",\"rss_after_bytes\":" + std::to_string(rss_after) + ",\"bytes_per_stream\":" +
      (rss0 > 0 && rssN > 0 ? fmt(static_cast<double>(rssN - rss0) / o_.streams) : "null") +
      ",\"propagation_ms\":{\"p50\":" + fmt(percentileMs(from_return, 50)) +
      ",\"p99\":" + fmt(percentileMs(from_return, 99)) +
      ",\"max\":" + fmt(percentileMs(from_return, 100)) + "}" +
      ",\"propagation_from_issue_ms\":{\"p50\":" + fmt(percentileMs(from_issue, 50)) +
      ",\"p99\":" + fmt(percentileMs(from_issue, 99)) +
      ",\"max\":" + fmt(percentileMs(from_issue, 100)) + "}" +
      ",\"revoke_call_ms\":{\"p50\":" + fmt(percentileMs(call_ns, 50)) +
      ",\"max\":" + fmt(percentileMs(call_ns, 100)) + "}" +
      ",\"registration_p99_worst_ms\":" + fmt(register_p99_worst) +
      ",\"rounds_cpu_s\":{\"controlplane\":" + fmt(cp_cpu) + ",\"clients\":" + fmt(self_cpu) + "}";
  {
    std::lock_guard<std::mutex> l(errors_mu_);
    std::string err;
    log::appendJsonString(err, first_error_);
    json += ",\"error\":" + err + "}";
  }
  std::printf("%s\n", json.c_str());
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace eldric::bench

int main(int argc, char** argv) {
  eldric::bench::Options o;
  if (!eldric::bench::parseArgs(argc, argv, &o)) return 2;
  // The client's own logs (one "grpc connected" per stream) are noise here.
  eldric::log::setLevel(eldric::log::Level::Warn);
  signal(SIGPIPE, SIG_IGN);
  eldric::bench::Bench bench(std::move(o));
  return bench.run();
}
