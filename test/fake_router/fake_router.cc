// An OpenAI-compatible fake LLM router, used as the upstream of Eldric Edge
// in the demo, the end-to-end tests and the benchmarks.
//
// One libuv loop per thread; each thread owns a listening socket bound with
// SO_REUSEPORT on the same port, so the kernel spreads connections and the
// request path takes no lock (counters are relaxed atomics). See README.md.

#include <netinet/in.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "llhttp.h"
#include "rapidjson/document.h"

namespace {

// ---------------------------------------------------------------------------
// Options

enum class FailMode { kNone, k500, kHang, kCloseMidStream, kCloseBeforeHeaders };

bool ParseFailMode(const char* s, size_t n, FailMode* out) {
  struct Entry {
    const char* name;
    FailMode mode;
  };
  static const Entry kModes[] = {
      {"none", FailMode::kNone},
      {"500", FailMode::k500},
      {"hang", FailMode::kHang},
      {"close-mid-stream", FailMode::kCloseMidStream},
      {"close-before-headers", FailMode::kCloseBeforeHeaders},
  };
  for (const Entry& e : kModes) {
    if (strlen(e.name) == n && strncasecmp(e.name, s, n) == 0) {
      *out = e.mode;
      return true;
    }
  }
  return false;
}

// Parses a non-negative decimal integer no larger than `max`.
bool ParseUint(const char* s, size_t n, uint64_t max, uint64_t* out) {
  while (n > 0 && (*s == ' ' || *s == '\t')) ++s, --n;
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) --n;
  if (n == 0) return false;
  uint64_t v = 0;
  auto r = std::from_chars(s, s + n, v);
  if (r.ec != std::errc() || r.ptr != s + n || v > max) return false;
  *out = v;
  return true;
}

constexpr uint64_t kMaxTokens = 1000000;
constexpr uint64_t kMaxDelayMs = 3600 * 1000;
constexpr size_t kMaxHeaderBytes = 1 << 20;
constexpr size_t kMaxBodyBytes = 64 << 20;
constexpr size_t kMaxPendingInput = 64 << 20;
constexpr size_t kReadBufferSize = 64 * 1024;
constexpr size_t kConnPoolSize = 1024;
constexpr int kEmbeddingDims = 8;

struct Options {
  std::string bind = "127.0.0.1";
  int port = 8881;
  int threads = 1;
  int tokens = 8;
  int token_delay_ms = 0;
  std::vector<std::string> models;
  FailMode fail = FailMode::kNone;
  std::string name = "fake-router";
  // x-fake-tools for chat requests that offer tools and carry no header.
  std::string tool_script;
};

Options g_opt;

// Precomputed at start-up.
std::string g_name_header;  // "x-fake-router: NAME\r\n"
std::string g_name_json;    // NAME as a JSON string, quotes included.
std::string g_health_body;
std::string g_models_body;

// ---------------------------------------------------------------------------
// Small string helpers (append into reused buffers; no temporaries).

void AppendUint(std::string* out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  out->append(buf, r.ptr - buf);
}

void AppendHex(std::string* out, uint64_t v) {
  char buf[24];
  auto r = std::to_chars(buf, buf + sizeof buf, v, 16);
  out->append(buf, r.ptr - buf);
}

void AppendJsonString(std::string* out, const char* s, size_t n) {
  static const char kHex[] = "0123456789abcdef";
  out->push_back('"');
  size_t run = 0;  // Start of the current run of bytes needing no escape.
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out->append(s + run, i - run);
    run = i + 1;
    switch (c) {
      case '"':
        out->append("\\\"");
        break;
      case '\\':
        out->append("\\\\");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\b':
        out->append("\\b");
        break;
      case '\f':
        out->append("\\f");
        break;
      default: {
        char esc[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
        out->append(esc, 6);
      }
    }
  }
  out->append(s + run, n - run);
  out->push_back('"');
}

void AppendJsonString(std::string* out, const std::string& s) {
  AppendJsonString(out, s.data(), s.size());
}

const char* ReasonPhrase(int status) {
  struct Entry {
    int status;
    const char* reason;
  };
  static const Entry kReasons[] = {
      {100, "Continue"},
      {200, "OK"},
      {201, "Created"},
      {202, "Accepted"},
      {204, "No Content"},
      {301, "Moved Permanently"},
      {302, "Found"},
      {304, "Not Modified"},
      {400, "Bad Request"},
      {401, "Unauthorized"},
      {403, "Forbidden"},
      {404, "Not Found"},
      {405, "Method Not Allowed"},
      {408, "Request Timeout"},
      {409, "Conflict"},
      {413, "Payload Too Large"},
      {422, "Unprocessable Entity"},
      {429, "Too Many Requests"},
      {431, "Request Header Fields Too Large"},
      {500, "Internal Server Error"},
      {501, "Not Implemented"},
      {502, "Bad Gateway"},
      {503, "Service Unavailable"},
      {504, "Gateway Timeout"},
  };
  for (const Entry& e : kReasons) {
    if (e.status == status) return e.reason;
  }
  return "Status";
}

// Whitespace-separated words: the fake's notion of "prompt tokens".
uint64_t CountWords(const char* s, size_t n) {
  uint64_t words = 0;
  bool in_word = false;
  for (size_t i = 0; i < n; ++i) {
    bool space = s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r';
    if (!space && !in_word) ++words;
    in_word = !space;
  }
  return words;
}

uint64_t Fnv1a(const char* s, size_t n, uint64_t h = 1469598103934665603ULL) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(s[i]);
    h *= 1099511628211ULL;
  }
  return h;
}

// ---------------------------------------------------------------------------
// Per-thread state

struct alignas(64) Counters {
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> chat_requests{0};
  std::atomic<uint64_t> connections_accepted{0};
  std::atomic<uint64_t> streams_started{0};
  std::atomic<uint64_t> streams_completed{0};
  std::atomic<uint64_t> streams_aborted_by_client{0};
  std::atomic<int64_t> active_connections{0};
};

inline void Inc(std::atomic<uint64_t>& a) { a.fetch_add(1, std::memory_order_relaxed); }

struct Header {
  std::string name;  // Lowercased.
  std::string value;
};

// The last inference request a thread saw. Its mutex is only contended when
// /_fake/last-request or /_fake/reset reads it.
struct LastRequest {
  std::mutex mu;
  uint64_t seq = 0;  // 0: none recorded.
  std::string method;
  std::string url;
  std::vector<Header> headers;
  std::string body;
};

std::atomic<uint64_t> g_last_request_seq{0};

using JsonAllocator = rapidjson::MemoryPoolAllocator<>;
using JsonDocument = rapidjson::GenericDocument<rapidjson::UTF8<>, JsonAllocator, JsonAllocator>;

struct Conn;

struct Worker {
  int index = 0;
  uv_loop_t loop;
  uv_tcp_t listener;
  uv_async_t stop_async;
  std::thread thread;
  Counters counters;
  LastRequest last;
  uint64_t next_id = 0;
  Conn* conns = nullptr;  // Intrusive list of live connections.
  std::vector<Conn*> pool;
  // Streamed tokens are paced on an absolute schedule (stream start + k x
  // delay, in CLOCK_MONOTONIC ns, uv_hrtime's clock) by one timerfd per
  // thread: a libuv timer has millisecond resolution and a repeating one
  // drifts by its lateness every period (at 1,000 streams the gaps grew
  // from 20 to ~33 ms). Sub-millisecond, drift-free pacing lets the
  // benchmark see what a proxy adds to a gap.
  int pace_fd = -1;
  uv_poll_t pace_poll;
  std::set<std::pair<uint64_t, Conn*>> paced;  // (due ns, stream)
  std::vector<std::pair<uint64_t, Conn*>> pace_due;
  uint64_t pace_armed_ns = 0;  // 0: disarmed
  std::string scratch;         // Response bodies are built here.
  std::string event;           // One SSE event.
  char read_buf[kReadBufferSize];
  // RapidJSON parses into these fixed buffers; Clear() after each request.
  char json_value_buf[32 * 1024];
  char json_stack_buf[8 * 1024];
  JsonAllocator json_values{json_value_buf, sizeof json_value_buf};
  JsonAllocator json_stack{json_stack_buf, sizeof json_stack_buf};
};

std::vector<std::unique_ptr<Worker>> g_workers;

// Declared before a JsonDocument: once the document is gone, gives the
// thread's parse buffers back for the next request.
struct JsonScratch {
  Worker* w;
  ~JsonScratch() {
    w->json_stack.Clear();
    w->json_values.Clear();
  }
};

// ---------------------------------------------------------------------------
// Connections

enum class Busy { kIdle, kDelayed, kStreaming, kHang };

struct Request {
  std::string url;
  std::vector<Header> headers;
  size_t num_headers = 0;
  bool in_field = false;
  size_t header_bytes = 0;
  std::string body;
  uint8_t method = 0;
  bool keep_alive = true;
  bool http10 = false;
  bool too_large = false;

  void Reset() {
    url.clear();
    num_headers = 0;
    in_field = false;
    header_bytes = 0;
    body.clear();
    too_large = false;
  }

  const std::string* Find(const char* lname) const {
    for (size_t i = 0; i < num_headers; ++i) {
      if (headers[i].name == lname) return &headers[i].value;
    }
    return nullptr;
  }
};

struct Stream {
  bool chat = true;
  bool chunked = true;
  bool include_usage = false;
  bool keep_alive = true;
  uint64_t total = 0;
  uint64_t next = 0;
  int64_t stop_at = -1;  // close-mid-stream: close after this many tokens.
  uint64_t prompt_tokens = 0;
  std::string prefix;  // JSON of every chunk up to and including "choices":[
};

struct Delayed {
  std::string bytes;
  bool keep_alive = true;
  bool close_after = false;
};

void OnRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
void OnAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
void OnWrite(uv_write_t* req, int status);
void OnTimer(uv_timer_t* t);
void OnHandleClosed(uv_handle_t* h);
void Pace(Conn* c, uint64_t due_ns);
void Unpace(Conn* c);
extern llhttp_settings_t g_parser_settings;

struct Conn {
  uv_tcp_t tcp;
  uv_timer_t timer;
  uv_write_t write_req;
  Worker* w = nullptr;
  Conn* prev = nullptr;
  Conn* next = nullptr;
  llhttp_t parser;
  Request req;

  std::string pending_in;    // Input received while a response is async.
  std::string pending_work;  // pending_in being parsed.
  std::string out;           // Output not handed to the kernel yet.
  std::string inflight;      // Output owned by the queued uv_write.
  bool writing = false;
  bool close_after_write = false;
  bool closing = false;
  bool read_eof = false;
  int open_handles = 0;

  Busy busy = Busy::kIdle;
  Stream stream;
  Delayed delayed;
  uint64_t pace_due_ns = 0;  // nonzero: in w->paced
  uint64_t pace_delay_ns = 0;

  void Start(Worker* worker) {
    w = worker;
    req.Reset();
    pending_in.clear();
    out.clear();
    inflight.clear();
    writing = close_after_write = closing = read_eof = false;
    busy = Busy::kIdle;
    open_handles = 2;
    uv_tcp_init(&w->loop, &tcp);
    uv_timer_init(&w->loop, &timer);
    tcp.data = this;
    timer.data = this;
    llhttp_init(&parser, HTTP_REQUEST, &g_parser_settings);
    parser.data = this;
    prev = nullptr;
    next = w->conns;
    if (next) next->prev = this;
    w->conns = this;
    Inc(w->counters.connections_accepted);
    w->counters.active_connections.fetch_add(1, std::memory_order_relaxed);
  }

  void Close() {
    if (closing) return;
    closing = true;
    busy = Busy::kIdle;
    w->counters.active_connections.fetch_sub(1, std::memory_order_relaxed);
    Unpace(this);
    uv_timer_stop(&timer);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), OnHandleClosed);
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp), OnHandleClosed);
  }

  void Release() {
    if (prev) {
      prev->next = next;
    } else {
      w->conns = next;
    }
    if (next) next->prev = prev;
    if (w->pool.size() < kConnPoolSize) {
      w->pool.push_back(this);
    } else {
      delete this;
    }
  }

  // The peer went away (EOF, read error or write error).
  void PeerGone() {
    if (busy == Busy::kStreaming) Inc(w->counters.streams_aborted_by_client);
    Close();
  }

  void Flush() {
    if (writing || closing || out.empty()) return;
    uv_buf_t b = uv_buf_init(&out[0], out.size());
    int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&tcp), &b, 1);
    if (r == static_cast<int>(out.size())) {
      out.clear();
      return;
    }
    if (r < 0 && r != UV_EAGAIN) {
      PeerGone();
      return;
    }
    size_t done = r > 0 ? static_cast<size_t>(r) : 0;
    inflight.swap(out);
    out.clear();
    b = uv_buf_init(&inflight[done], inflight.size() - done);
    writing = true;
    uv_write(&write_req, reinterpret_cast<uv_stream_t*>(&tcp), &b, 1, OnWrite);
  }

  void MaybeClose() {
    if (close_after_write && !writing && out.empty()) Close();
  }

  // Parses input and answers complete requests in order. Stops while a
  // response is asynchronous; the rest waits in pending_in.
  void Feed(const char* data, size_t len) {
    while (len > 0 && !closing && !close_after_write) {
      if (busy != Busy::kIdle) {
        if (pending_in.size() + len > kMaxPendingInput) {
          PeerGone();
          return;
        }
        pending_in.append(data, len);
        return;
      }
      llhttp_errno_t err = llhttp_execute(&parser, data, len);
      if (err == HPE_OK) return;
      if (err == HPE_PAUSED) {  // on_message_complete paused the parser.
        size_t used = llhttp_get_error_pos(&parser) - data;
        data += used;
        len -= used;
        llhttp_resume(&parser);
        HandleRequest();
        if (busy == Busy::kIdle && !req.keep_alive) close_after_write = true;
        continue;
      }
      req.keep_alive = false;
      close_after_write = true;
      if (err == HPE_PAUSED_UPGRADE) return;
      if (req.too_large) {
        SendError(413, "Request body too large.", "invalid_request_error");
      } else if (req.header_bytes > kMaxHeaderBytes) {
        SendError(431, "Request headers too large.", "invalid_request_error");
      } else {
        std::string msg = "Malformed HTTP request: ";
        msg += llhttp_get_error_reason(&parser);
        SendError(400, msg.c_str(), "invalid_request_error");
      }
      return;
    }
  }

  // An asynchronous response (delayed or streamed) has been fully queued.
  void ResumeAfterResponse(bool keep_alive) {
    busy = Busy::kIdle;
    if (!keep_alive) {
      close_after_write = true;
      pending_in.clear();
    } else if (!pending_in.empty()) {
      pending_work.swap(pending_in);
      Feed(pending_work.data(), pending_work.size());
      pending_work.clear();
    }
    if (read_eof && busy == Busy::kIdle) close_after_write = true;
    Flush();
    MaybeClose();
  }

  // --- Responses ----------------------------------------------------------

  // How the body is delimited.
  enum class Framing { kLength, kChunked, kUntilClose };

  void AppendHead(std::string* dst, int status, const char* content_type, Framing framing,
                  size_t content_length, bool keep_alive) {
    dst->append("HTTP/1.1 ");
    AppendUint(dst, status);
    dst->push_back(' ');
    dst->append(ReasonPhrase(status));
    dst->append("\r\nContent-Type: ");
    dst->append(content_type);
    dst->append("\r\n");
    if (framing == Framing::kChunked) {
      dst->append("Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\n");
    } else if (framing == Framing::kUntilClose) {
      dst->append("Cache-Control: no-cache\r\n");
    } else if (status != 204 && status != 304) {
      dst->append("Content-Length: ");
      AppendUint(dst, content_length);
      dst->append("\r\n");
    }
    dst->append(g_name_header);
    if (!keep_alive) {
      dst->append("Connection: close\r\n");
    } else if (req.http10) {
      dst->append("Connection: keep-alive\r\n");
    }
    dst->append("\r\n");
  }

  // A complete response into `dst`. With `truncate`, only the head and half
  // of the body (close-mid-stream on a non-streaming response).
  void AppendResponse(std::string* dst, int status, const char* content_type,
                      const std::string& body, bool keep_alive, bool truncate) {
    bool no_body = status == 204 || status == 304;
    AppendHead(dst, status, content_type, Framing::kLength, body.size(), keep_alive);
    if (no_body) return;
    dst->append(body.data(), truncate ? body.size() / 2 : body.size());
  }

  void SendBody(int status, const std::string& body, bool truncate = false) {
    AppendResponse(&out, status, "application/json", body, req.keep_alive, truncate);
    if (truncate) close_after_write = true;
  }

  void BuildError(std::string* body, const char* message, const char* type) {
    body->clear();
    body->append("{\"error\":{\"message\":");
    AppendJsonString(body, message, strlen(message));
    body->append(",\"type\":");
    AppendJsonString(body, type, strlen(type));
    body->append(",\"param\":null,\"code\":null}}");
  }

  void SendError(int status, const char* message, const char* type, bool truncate = false) {
    BuildError(&w->scratch, message, type);
    SendBody(status, w->scratch, truncate);
  }

  // --- Request dispatch ---------------------------------------------------

  void HandleRequest();
  void HandleFake(const char* path, size_t path_len);
  void HandleGenerate(bool chat, bool mid_close);
  void HandleEmbeddings(bool mid_close);
  void RecordLastRequest();
  bool ParseBody(JsonDocument* doc);

  void StartStream(bool chat, const std::string& model, uint64_t tokens, uint64_t delay_ms,
                   bool include_usage, uint64_t prompt_tokens, bool mid_close);
  void AnswerToolScript(const std::string& script, const std::string& model, bool streamed,
                        bool include_usage, uint64_t prompt_tokens, size_t tool_round,
                        const std::string& tool_results);
  void EmitEvent(const std::string& json);
  void EmitTokenEvent(uint64_t i);
  void FinishStream();
  void StreamStep();
};

// --- llhttp callbacks -------------------------------------------------------

Conn* ConnOf(llhttp_t* p) { return static_cast<Conn*>(p->data); }

int OnMessageBegin(llhttp_t* p) {
  ConnOf(p)->req.Reset();
  return 0;
}

int OnUrl(llhttp_t* p, const char* at, size_t len) {
  Request& r = ConnOf(p)->req;
  r.header_bytes += len;
  if (r.header_bytes > kMaxHeaderBytes) return -1;
  r.url.append(at, len);
  return 0;
}

int OnHeaderField(llhttp_t* p, const char* at, size_t len) {
  Request& r = ConnOf(p)->req;
  r.header_bytes += len;
  if (r.header_bytes > kMaxHeaderBytes) return -1;
  if (!r.in_field) {
    r.in_field = true;
    if (r.num_headers == r.headers.size()) r.headers.emplace_back();
    r.headers[r.num_headers].name.clear();
    r.headers[r.num_headers].value.clear();
  }
  r.headers[r.num_headers].name.append(at, len);
  return 0;
}

int OnHeaderValue(llhttp_t* p, const char* at, size_t len) {
  Request& r = ConnOf(p)->req;
  r.header_bytes += len;
  if (r.header_bytes > kMaxHeaderBytes) return -1;
  if (r.in_field) r.headers[r.num_headers].value.append(at, len);
  return 0;
}

int OnHeaderValueComplete(llhttp_t* p) {
  Request& r = ConnOf(p)->req;
  if (!r.in_field) return 0;
  r.in_field = false;
  for (char& c : r.headers[r.num_headers].name) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  ++r.num_headers;
  return 0;
}

int OnHeadersComplete(llhttp_t* p) {
  Conn* c = ConnOf(p);
  Request& r = c->req;
  r.method = llhttp_get_method(p);
  r.http10 = llhttp_get_http_major(p) == 1 && llhttp_get_http_minor(p) == 0;
  const std::string* expect = r.Find("expect");
  if (expect && strcasecmp(expect->c_str(), "100-continue") == 0) {
    c->out.append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  return 0;
}

int OnBody(llhttp_t* p, const char* at, size_t len) {
  Request& r = ConnOf(p)->req;
  if (r.body.size() + len > kMaxBodyBytes) {
    r.too_large = true;
    return -1;
  }
  r.body.append(at, len);
  return 0;
}

int OnMessageComplete(llhttp_t* p) {
  ConnOf(p)->req.keep_alive = llhttp_should_keep_alive(p) != 0;
  return HPE_PAUSED;  // Feed() answers it, then resumes the parser.
}

llhttp_settings_t MakeParserSettings() {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = OnMessageBegin;
  s.on_url = OnUrl;
  s.on_header_field = OnHeaderField;
  s.on_header_value = OnHeaderValue;
  s.on_header_value_complete = OnHeaderValueComplete;
  s.on_headers_complete = OnHeadersComplete;
  s.on_body = OnBody;
  s.on_message_complete = OnMessageComplete;
  return s;
}

llhttp_settings_t g_parser_settings = MakeParserSettings();

// --- libuv callbacks --------------------------------------------------------

void OnAlloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  // Every read is consumed (or copied) before the callback returns, so one
  // buffer per thread serves all connections.
  Conn* c = static_cast<Conn*>(h->data);
  *buf = uv_buf_init(c->w->read_buf, sizeof c->w->read_buf);
}

void OnRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  if (c->closing) return;
  if (nread > 0) {
    c->Feed(buf->base, static_cast<size_t>(nread));
    c->Flush();
    c->MaybeClose();
    return;
  }
  if (nread == 0) return;
  // EOF or error. Stop reading: the peer sent everything it will send.
  c->read_eof = true;
  uv_read_stop(s);
  if (nread != UV_EOF || c->busy == Busy::kStreaming || c->busy == Busy::kHang) {
    c->PeerGone();
    return;
  }
  // A half-closed client still gets the answers to what it sent; a delayed
  // response closes once it is written (ResumeAfterResponse).
  if (c->busy == Busy::kIdle) {
    c->close_after_write = true;
    c->Flush();
    c->MaybeClose();
  }
}

void OnWrite(uv_write_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->handle->data);
  c->writing = false;
  c->inflight.clear();
  if (c->closing) return;
  if (status < 0) {
    c->PeerGone();
    return;
  }
  c->Flush();
  c->MaybeClose();
}

void OnHandleClosed(uv_handle_t* h) {
  Conn* c = static_cast<Conn*>(h->data);
  if (--c->open_handles == 0) c->Release();
}

void OnTimer(uv_timer_t* t) {
  Conn* c = static_cast<Conn*>(t->data);
  if (c->closing) return;
  if (c->busy == Busy::kDelayed) {
    c->out.append(c->delayed.bytes);
    if (c->delayed.close_after) c->close_after_write = true;
    c->ResumeAfterResponse(c->delayed.keep_alive && !c->delayed.close_after);
  }
}

void ArmPacer(Worker* w) {
  uint64_t due = w->paced.empty() ? 0 : w->paced.begin()->first;
  if (due == w->pace_armed_ns) return;
  itimerspec its{};
  its.it_value.tv_sec = static_cast<time_t>(due / 1000000000);
  its.it_value.tv_nsec = static_cast<long>(due % 1000000000);
  timerfd_settime(w->pace_fd, TFD_TIMER_ABSTIME, &its, nullptr);  // all zero disarms
  w->pace_armed_ns = due;
}

void OnPace(uv_poll_t* p, int, int) {
  Worker* w = static_cast<Worker*>(p->data);
  // Consume the expiration count; the schedule, not the count, says what is
  // due (EAGAIN after a spurious wake-up is harmless: nothing will be due).
  uint64_t expirations;
  (void)!read(w->pace_fd, &expirations, sizeof expirations);
  w->pace_armed_ns = 0;
  const uint64_t now = uv_hrtime();
  // Every stream due by now, earliest first. A stream is taken out before
  // its step, so one that is due again at once (a late pacer) waits for the
  // next round rather than looping here.
  std::vector<std::pair<uint64_t, Conn*>>& due = w->pace_due;
  due.clear();
  while (!w->paced.empty() && w->paced.begin()->first <= now) {
    due.push_back(*w->paced.begin());
    w->paced.erase(w->paced.begin());
    due.back().second->pace_due_ns = 0;
  }
  for (auto [at, c] : due) {
    if (c->closing || c->busy != Busy::kStreaming || c->pace_due_ns != 0) continue;
    c->StreamStep();
    if (c->busy == Busy::kStreaming) {
      // On schedule, not from now: lateness does not accumulate.
      Pace(c, at + c->pace_delay_ns);
      c->Flush();
    } else {
      c->ResumeAfterResponse(c->stream.keep_alive && !c->close_after_write);
    }
  }
  ArmPacer(w);
}

void Pace(Conn* c, uint64_t due_ns) {
  Worker* w = c->w;
  if (w->pace_fd < 0) {
    w->pace_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (w->pace_fd < 0) {
      perror("fake-router: timerfd_create");
      abort();
    }
    uv_poll_init(&w->loop, &w->pace_poll, w->pace_fd);
    w->pace_poll.data = w;
    uv_poll_start(&w->pace_poll, UV_READABLE, OnPace);
  }
  Unpace(c);
  c->pace_due_ns = due_ns;
  w->paced.emplace(due_ns, c);
  ArmPacer(w);
}

void Unpace(Conn* c) {
  if (c->pace_due_ns == 0) return;
  c->w->paced.erase({c->pace_due_ns, c});
  c->pace_due_ns = 0;
}

void OnConnection(uv_stream_t* server, int status) {
  if (status < 0) return;
  Worker* w = static_cast<Worker*>(server->data);
  Conn* c;
  if (!w->pool.empty()) {
    c = w->pool.back();
    w->pool.pop_back();
  } else {
    c = new Conn();
  }
  c->Start(w);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->Close();
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), OnAlloc, OnRead);
}

// --- Request handling -------------------------------------------------------

bool PathIs(const char* path, size_t n, const char* want) {
  return strlen(want) == n && memcmp(path, want, n) == 0;
}

void Conn::RecordLastRequest() {
  LastRequest& l = w->last;
  std::lock_guard<std::mutex> lock(l.mu);
  l.seq = g_last_request_seq.fetch_add(1, std::memory_order_relaxed) + 1;
  l.method = llhttp_method_name(static_cast<llhttp_method_t>(req.method));
  l.url = req.url;
  if (l.headers.size() < req.num_headers) l.headers.resize(req.num_headers);
  for (size_t i = 0; i < req.num_headers; ++i) {
    l.headers[i].name = req.headers[i].name;
    l.headers[i].value = req.headers[i].value;
  }
  l.headers.resize(req.num_headers);
  l.body = req.body;
}

void AppendStats(std::string* out) {
  uint64_t requests = 0, chat = 0, accepted = 0, started = 0, completed = 0, aborted = 0;
  int64_t active = 0;
  for (auto& w : g_workers) {
    const Counters& c = w->counters;
    auto rd = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    requests += rd(c.requests);
    chat += rd(c.chat_requests);
    accepted += rd(c.connections_accepted);
    started += rd(c.streams_started);
    completed += rd(c.streams_completed);
    aborted += rd(c.streams_aborted_by_client);
    active += c.active_connections.load(std::memory_order_relaxed);
  }
  out->append("{\"requests\":");
  AppendUint(out, requests);
  out->append(",\"chat_requests\":");
  AppendUint(out, chat);
  out->append(",\"active_connections\":");
  AppendUint(out, active > 0 ? active : 0);
  out->append(",\"connections_accepted\":");
  AppendUint(out, accepted);
  out->append(",\"streams_started\":");
  AppendUint(out, started);
  out->append(",\"streams_completed\":");
  AppendUint(out, completed);
  out->append(",\"streams_aborted_by_client\":");
  AppendUint(out, aborted);
  out->append(",\"name\":");
  out->append(g_name_json);
  out->append("}");
}

void AppendLastRequest(std::string* out) {
  Worker* best = nullptr;
  uint64_t best_seq = 0;
  for (auto& w : g_workers) {
    std::lock_guard<std::mutex> lock(w->last.mu);
    if (w->last.seq > best_seq) {
      best_seq = w->last.seq;
      best = w.get();
    }
  }
  if (!best) {
    out->append("{}");
    return;
  }
  LastRequest& l = best->last;
  std::lock_guard<std::mutex> lock(l.mu);
  out->append("{\"method\":");
  AppendJsonString(out, l.method);
  out->append(",\"path\":");
  AppendJsonString(out, l.url);
  out->append(",\"headers\":{");
  bool first = true;
  for (size_t i = 0; i < l.headers.size(); ++i) {
    bool seen = false;  // Repeated names are joined into the first one.
    for (size_t j = 0; j < i && !seen; ++j) {
      seen = l.headers[j].name == l.headers[i].name;
    }
    if (seen) continue;
    std::string value = l.headers[i].value;
    for (size_t k = i + 1; k < l.headers.size(); ++k) {
      if (l.headers[k].name == l.headers[i].name) {
        value += ", ";
        value += l.headers[k].value;
      }
    }
    if (!first) out->push_back(',');
    first = false;
    AppendJsonString(out, l.headers[i].name);
    out->push_back(':');
    AppendJsonString(out, value);
  }
  out->append("},\"body\":");
  AppendJsonString(out, l.body);
  out->append(",\"seq\":");
  AppendUint(out, l.seq);
  out->append("}");
}

void ResetStats() {
  for (auto& w : g_workers) {
    Counters& c = w->counters;
    for (auto* a : {&c.requests, &c.chat_requests, &c.connections_accepted, &c.streams_started,
                    &c.streams_completed, &c.streams_aborted_by_client}) {
      a->store(0, std::memory_order_relaxed);
    }
    std::lock_guard<std::mutex> lock(w->last.mu);
    w->last.seq = 0;
  }
}

void Conn::HandleFake(const char* path, size_t n) {
  std::string& body = w->scratch;
  body.clear();
  if (PathIs(path, n, "/_fake/stats") && req.method == HTTP_GET) {
    AppendStats(&body);
  } else if (PathIs(path, n, "/_fake/last-request") && req.method == HTTP_GET) {
    AppendLastRequest(&body);
  } else if (PathIs(path, n, "/_fake/reset") && req.method == HTTP_POST) {
    ResetStats();
    body.append("{\"status\":\"ok\"}");
  } else {
    std::string msg = "Unknown request URL: ";
    msg += llhttp_method_name(static_cast<llhttp_method_t>(req.method));
    msg += ' ';
    msg += req.url;
    SendError(404, msg.c_str(), "invalid_request_error");
    return;
  }
  SendBody(200, body);
}

void Conn::HandleRequest() {
  const char* path = req.url.data();
  size_t path_len = req.url.find('?');
  if (path_len == std::string::npos) path_len = req.url.size();
  if (path_len >= 7 && memcmp(path, "/_fake/", 7) == 0) {
    HandleFake(path, path_len);
    return;
  }
  Inc(w->counters.requests);

  enum { kUnknown, kHealth, kModels, kChat, kCompletions, kEmbeddings } ep = kUnknown;
  bool get = req.method == HTTP_GET, post = req.method == HTTP_POST;
  if (get && PathIs(path, path_len, "/health")) {
    ep = kHealth;
  } else if (get && PathIs(path, path_len, "/v1/models")) {
    ep = kModels;
  } else if (post && PathIs(path, path_len, "/v1/chat/completions")) {
    ep = kChat;
    Inc(w->counters.chat_requests);
  } else if (post && PathIs(path, path_len, "/v1/completions")) {
    ep = kCompletions;
  } else if (post && PathIs(path, path_len, "/v1/embeddings")) {
    ep = kEmbeddings;
  }
  bool inference = ep == kChat || ep == kCompletions || ep == kEmbeddings;
  if (inference) RecordLastRequest();

  FailMode fail = inference ? g_opt.fail : FailMode::kNone;
  if (const std::string* h = req.Find("x-fake-fail")) {
    if (!ParseFailMode(h->data(), h->size(), &fail)) {
      SendError(400, "Invalid x-fake-fail header.", "invalid_request_error");
      return;
    }
  }
  switch (fail) {
    case FailMode::k500:
      SendError(500, "The fake router failed on purpose (fail mode 500).", "server_error");
      return;
    case FailMode::kHang:
      busy = Busy::kHang;
      return;
    case FailMode::kCloseBeforeHeaders:
      close_after_write = true;
      return;
    case FailMode::kNone:
    case FailMode::kCloseMidStream:
      break;
  }
  bool mid_close = fail == FailMode::kCloseMidStream;

  if (const std::string* h = req.Find("x-fake-status")) {
    uint64_t status = 0;
    if (!ParseUint(h->data(), h->size(), 599, &status) || status < 200) {
      SendError(400, "Invalid x-fake-status header.", "invalid_request_error");
      return;
    }
    if (status != 200) {
      std::string msg = "Fake status ";
      AppendUint(&msg, status);
      msg += " requested by x-fake-status.";
      SendError(static_cast<int>(status), msg.c_str(),
                status >= 500 ? "server_error" : "invalid_request_error", mid_close);
      return;
    }
  }

  switch (ep) {
    case kHealth:
      SendBody(200, g_health_body, mid_close);
      return;
    case kModels:
      SendBody(200, g_models_body, mid_close);
      return;
    case kChat:
    case kCompletions:
      HandleGenerate(ep == kChat, mid_close);
      return;
    case kEmbeddings:
      HandleEmbeddings(mid_close);
      return;
    case kUnknown:
      break;
  }
  std::string msg = "Unknown request URL: ";
  msg += llhttp_method_name(static_cast<llhttp_method_t>(req.method));
  msg += ' ';
  msg += req.url;
  SendError(404, msg.c_str(), "invalid_request_error", mid_close);
}

// Parses the request body; answers 400 and returns false if it is not a JSON
// object. Callers hold a JsonScratch.
bool Conn::ParseBody(JsonDocument* doc) {
  doc->Parse(req.body.data(), req.body.size());
  if (doc->HasParseError()) {
    SendError(400,
              "We could not parse the JSON body of your request. (HINT: This "
              "likely means you aren't using your HTTP library correctly.)",
              "invalid_request_error");
    return false;
  }
  if (!doc->IsObject()) {
    SendError(400, "The request body must be a JSON object.", "invalid_request_error");
    return false;
  }
  return true;
}

uint64_t CountContentWords(const rapidjson::Value& v) {
  if (v.IsString()) return CountWords(v.GetString(), v.GetStringLength());
  uint64_t n = 0;
  if (v.IsArray()) {  // Content parts: [{"type":"text","text":"..."}, ...]
    for (const auto& part : v.GetArray()) {
      if (part.IsString()) {
        n += CountWords(part.GetString(), part.GetStringLength());
      } else if (part.IsObject()) {
        auto t = part.FindMember("text");
        if (t != part.MemberEnd() && t->value.IsString()) {
          n += CountWords(t->value.GetString(), t->value.GetStringLength());
        }
      }
    }
  }
  return n;
}

void AppendToken(std::string* out, uint64_t i) {
  out->append("tok");
  AppendUint(out, i);
  out->push_back(' ');
}

void AppendUsage(std::string* out, uint64_t prompt, uint64_t completion) {
  out->append("\"usage\":{\"prompt_tokens\":");
  AppendUint(out, prompt);
  out->append(",\"completion_tokens\":");
  AppendUint(out, completion);
  out->append(",\"total_tokens\":");
  AppendUint(out, prompt + completion);
  out->push_back('}');
}

void Conn::HandleGenerate(bool chat, bool mid_close) {
  uint64_t tokens = static_cast<uint64_t>(g_opt.tokens);
  uint64_t delay_ms = static_cast<uint64_t>(g_opt.token_delay_ms);
  if (const std::string* h = req.Find("x-fake-tokens")) {
    if (!ParseUint(h->data(), h->size(), kMaxTokens, &tokens)) {
      SendError(400, "Invalid x-fake-tokens header.", "invalid_request_error");
      return;
    }
  }
  if (const std::string* h = req.Find("x-fake-delay-ms")) {
    if (!ParseUint(h->data(), h->size(), kMaxDelayMs, &delay_ms)) {
      SendError(400, "Invalid x-fake-delay-ms header.", "invalid_request_error");
      return;
    }
  }

  std::string model;
  bool stream = false, include_usage = false;
  uint64_t prompt_tokens = 0;
  // x-fake-tools: which round this is (assistant messages that called
  // tools so far) and what the tool messages said.
  size_t tool_round = 0;
  std::string tool_results;
  bool offers_tools = false;
  {
    JsonScratch scratch{w};
    JsonDocument doc(&w->json_values, 1024, &w->json_stack);
    bool ok = ParseBody(&doc);
    if (ok) {
      auto m = doc.FindMember("model");
      if (m != doc.MemberEnd() && m->value.IsString()) {
        model.assign(m->value.GetString(), m->value.GetStringLength());
      }
      auto s = doc.FindMember("stream");
      stream = s != doc.MemberEnd() && s->value.IsBool() && s->value.GetBool();
      auto so = doc.FindMember("stream_options");
      if (so != doc.MemberEnd() && so->value.IsObject()) {
        auto iu = so->value.FindMember("include_usage");
        include_usage = iu != so->value.MemberEnd() && iu->value.IsBool() && iu->value.GetBool();
      }
      if (chat) {
        auto tools = doc.FindMember("tools");
        offers_tools = tools != doc.MemberEnd() && tools->value.IsArray() && !tools->value.Empty();
        auto msgs = doc.FindMember("messages");
        if (msgs != doc.MemberEnd() && msgs->value.IsArray()) {
          for (const auto& msg : msgs->value.GetArray()) {
            if (!msg.IsObject()) continue;
            auto role = msg.FindMember("role");
            std::string_view r = role != msg.MemberEnd() && role->value.IsString()
                                     ? std::string_view(role->value.GetString())
                                     : std::string_view();
            if (r == "assistant" && msg.HasMember("tool_calls")) ++tool_round;
            auto content = msg.FindMember("content");
            if (r == "tool" && content != msg.MemberEnd() && content->value.IsString()) {
              if (!tool_results.empty()) tool_results += " | ";
              auto id = msg.FindMember("tool_call_id");
              if (id != msg.MemberEnd() && id->value.IsString()) {
                tool_results += '[';
                tool_results += id->value.GetString();
                tool_results += "] ";
              }
              tool_results.append(content->value.GetString(), content->value.GetStringLength());
            }
            if (content != msg.MemberEnd()) {
              prompt_tokens += CountContentWords(content->value);
            }
          }
        }
      } else {
        auto p = doc.FindMember("prompt");
        if (p != doc.MemberEnd()) prompt_tokens = CountContentWords(p->value);
      }
    }
    if (!ok) return;
  }
  if (model.empty()) model = g_opt.models.front();

  const std::string* script = req.Find("x-fake-tools");
  if (!script && offers_tools && !g_opt.tool_script.empty()) script = &g_opt.tool_script;
  if (script && chat) {
    AnswerToolScript(*script, model, stream, include_usage, prompt_tokens, tool_round,
                     tool_results);
    return;
  }

  if (stream) {
    StartStream(chat, model, tokens, delay_ms, include_usage, prompt_tokens, mid_close);
    return;
  }

  std::string& body = w->scratch;
  body.clear();
  body.append(chat ? "{\"id\":\"chatcmpl-fake-" : "{\"id\":\"cmpl-fake-");
  AppendUint(&body, w->index);
  body.push_back('-');
  AppendUint(&body, ++w->next_id);
  body.append(chat ? "\",\"object\":\"chat.completion\",\"created\":"
                   : "\",\"object\":\"text_completion\",\"created\":");
  AppendUint(&body, static_cast<uint64_t>(time(nullptr)));
  body.append(",\"model\":");
  AppendJsonString(&body, model);
  body.append(",\"system_fingerprint\":");
  body.append(g_name_json);
  body.append(chat ? ",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                     "\"assistant\",\"content\":\""
                   : ",\"choices\":[{\"index\":0,\"text\":\"");
  for (uint64_t i = 0; i < tokens; ++i) AppendToken(&body, i);
  body.append(chat ? "\"},\"logprobs\":null,\"finish_reason\":\"stop\"}],"
                   : "\",\"logprobs\":null,\"finish_reason\":\"stop\"}],");
  AppendUsage(&body, prompt_tokens, tokens);
  body.push_back('}');

  uint64_t wait_ms = tokens * delay_ms;
  if (wait_ms == 0) {
    SendBody(200, body, mid_close);
    return;
  }
  delayed.bytes.clear();
  AppendResponse(&delayed.bytes, 200, "application/json", body, req.keep_alive, mid_close);
  delayed.keep_alive = req.keep_alive;
  delayed.close_after = mid_close;
  busy = Busy::kDelayed;
  uv_timer_start(&timer, OnTimer, wait_ms, 0);
}

// x-fake-tools: a JSON array of rounds; a round is an array of calls
// {"name", "arguments" (a string, sent as it is), "id"?}, or an object
// {"content": "...", "calls": [...]} for an answer that says something
// before it calls. Round k answers the request that holds k assistant
// messages with tool_calls; past the script, the answer quotes the tool
// messages: "Tool results: [call id] content | ...".
void Conn::AnswerToolScript(const std::string& script, const std::string& model, bool streamed,
                            bool include_usage, uint64_t prompt_tokens, size_t tool_round,
                            const std::string& tool_results) {
  rapidjson::Document s;
  s.Parse(script.data(), script.size());
  if (s.HasParseError() || !s.IsArray()) {
    SendError(400, "Invalid x-fake-tools header.", "invalid_request_error");
    return;
  }
  struct Call {
    std::string id, name, arguments;
  };
  std::vector<Call> calls;
  std::string content;
  if (tool_round < s.Size()) {
    const rapidjson::Value& round = s[static_cast<rapidjson::SizeType>(tool_round)];
    const rapidjson::Value* list = &round;
    if (round.IsObject()) {
      auto c = round.FindMember("content");
      if (c != round.MemberEnd() && c->value.IsString()) content = c->value.GetString();
      auto l = round.FindMember("calls");
      list = l != round.MemberEnd() ? &l->value : nullptr;
    }
    if (list && list->IsArray()) {
      for (const auto& c : list->GetArray()) {
        if (!c.IsObject()) continue;
        Call call;
        auto n = c.FindMember("name");
        auto a = c.FindMember("arguments");
        auto i = c.FindMember("id");
        if (n != c.MemberEnd() && n->value.IsString()) call.name = n->value.GetString();
        if (a != c.MemberEnd() && a->value.IsString()) call.arguments = a->value.GetString();
        if (i != c.MemberEnd() && i->value.IsString()) {
          call.id = i->value.GetString();
        } else {
          call.id = "call_fake_" + std::to_string(tool_round) + "_" + std::to_string(calls.size());
        }
        calls.push_back(std::move(call));
      }
    }
  } else {
    content = "Tool results: " + tool_results;
  }
  uint64_t completion = 0;
  {
    bool word = false;
    for (char ch : content) {
      bool space = ch == ' ' || ch == '\n' || ch == '\t';
      if (!space && !word) ++completion;
      word = !space;
    }
  }
  completion += 5 * calls.size();
  std::string prefix = "{\"id\":\"chatcmpl-fake-";
  AppendUint(&prefix, w->index);
  prefix.push_back('-');
  AppendUint(&prefix, ++w->next_id);
  prefix.append("\",\"object\":\"chat.completion");
  std::string tail = "\",\"created\":";
  AppendUint(&tail, static_cast<uint64_t>(time(nullptr)));
  tail.append(",\"model\":");
  AppendJsonString(&tail, model);
  tail.append(",\"system_fingerprint\":");
  tail.append(g_name_json);
  const char* finish = calls.empty() ? "stop" : "tool_calls";

  if (!streamed) {
    std::string body =
        prefix + tail + ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",";
    body += "\"content\":";
    if (content.empty()) {
      body += "null";
    } else {
      AppendJsonString(&body, content);
    }
    if (!calls.empty()) {
      body += ",\"tool_calls\":[";
      for (size_t i = 0; i < calls.size(); ++i) {
        if (i) body += ',';
        body += "{\"id\":";
        AppendJsonString(&body, calls[i].id);
        body += ",\"type\":\"function\",\"function\":{\"name\":";
        AppendJsonString(&body, calls[i].name);
        body += ",\"arguments\":";
        AppendJsonString(&body, calls[i].arguments);
        body += "}}";
      }
      body += ']';
    }
    body += "},\"logprobs\":null,\"finish_reason\":\"";
    body += finish;
    body += "\"}],";
    AppendUsage(&body, prompt_tokens, completion);
    body += '}';
    SendBody(200, body);
    return;
  }

  // Streamed as a model streams: a role chunk, the content a word at a
  // time, each call's id and name, then its arguments in 7-byte pieces,
  // the finish chunk, usage if asked, [DONE].
  stream.chat = true;
  stream.chunked = !req.http10;
  stream.keep_alive = req.keep_alive && !req.http10;
  AppendHead(&out, 200, "text/event-stream",
             stream.chunked ? Framing::kChunked : Framing::kUntilClose, 0, stream.keep_alive);
  std::string head = prefix + ".chunk" + tail + ",\"choices\":[{\"index\":0,\"delta\":";
  auto delta = [&](const std::string& d, const char* reason) {
    std::string e = head + d + ",\"logprobs\":null,\"finish_reason\":";
    if (reason) {
      e += '"';
      e += reason;
      e += '"';
    } else {
      e += "null";
    }
    e += "}]}";
    EmitEvent(e);
  };
  delta("{\"role\":\"assistant\",\"content\":null}", nullptr);
  size_t at = 0;
  while (at < content.size()) {
    size_t end = content.find(' ', at);
    end = end == std::string::npos ? content.size() : end + 1;
    std::string d = "{\"content\":";
    AppendJsonString(&d, content.substr(at, end - at));
    delta(d + "}", nullptr);
    at = end;
  }
  for (size_t i = 0; i < calls.size(); ++i) {
    std::string d = "{\"tool_calls\":[{\"index\":" + std::to_string(i) + ",\"id\":";
    AppendJsonString(&d, calls[i].id);
    d += ",\"type\":\"function\",\"function\":{\"name\":";
    AppendJsonString(&d, calls[i].name);
    d += ",\"arguments\":\"\"}}]}";
    delta(d, nullptr);
    const std::string& args = calls[i].arguments;
    for (size_t p = 0; p < args.size(); p += 7) {
      std::string piece =
          "{\"tool_calls\":[{\"index\":" + std::to_string(i) + ",\"function\":{\"arguments\":";
      AppendJsonString(&piece, args.substr(p, 7));
      delta(piece + "}}]}", nullptr);
    }
  }
  delta("{}", finish);
  if (include_usage) {
    std::string e = prefix + ".chunk" + tail + ",\"choices\":[],";
    AppendUsage(&e, prompt_tokens, completion);
    e += '}';
    EmitEvent(e);
  }
  if (stream.chunked) {
    out.append("e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
  } else {
    out.append("data: [DONE]\n\n");
    close_after_write = true;
  }
  if (!stream.keep_alive) close_after_write = true;
}

void Conn::EmitEvent(const std::string& json) {
  const size_t len = json.size() + 8;  // "data: " + json + "\n\n"
  if (stream.chunked) {
    AppendHex(&out, len);
    out.append("\r\n");
  }
  out.append("data: ");
  out.append(json);
  out.append("\n\n");
  if (stream.chunked) out.append("\r\n");
}

void Conn::EmitTokenEvent(uint64_t i) {
  std::string& e = w->event;
  e.assign(stream.prefix);
  if (stream.chat) {
    e.append("{\"index\":0,\"delta\":{\"content\":\"");
    AppendToken(&e, i);
    e.append("\"},\"logprobs\":null,\"finish_reason\":null}]}");
  } else {
    e.append("{\"index\":0,\"text\":\"");
    AppendToken(&e, i);
    e.append("\",\"logprobs\":null,\"finish_reason\":null}]}");
  }
  EmitEvent(e);
}

void Conn::StartStream(bool chat, const std::string& model, uint64_t tokens, uint64_t delay_ms,
                       bool include_usage, uint64_t prompt_tokens, bool mid_close) {
  Inc(w->counters.streams_started);
  stream.chat = chat;
  // HTTP/1.0 has no chunked encoding: stream raw and close at the end.
  stream.chunked = !req.http10;
  stream.keep_alive = req.keep_alive && !req.http10;
  stream.include_usage = include_usage;
  stream.total = tokens;
  stream.next = 0;
  stream.stop_at = mid_close ? static_cast<int64_t>(tokens / 2) : -1;
  stream.prompt_tokens = prompt_tokens;

  std::string& p = stream.prefix;
  p.assign(chat ? "{\"id\":\"chatcmpl-fake-" : "{\"id\":\"cmpl-fake-");
  AppendUint(&p, w->index);
  p.push_back('-');
  AppendUint(&p, ++w->next_id);
  p.append(chat ? "\",\"object\":\"chat.completion.chunk\",\"created\":"
                : "\",\"object\":\"text_completion\",\"created\":");
  AppendUint(&p, static_cast<uint64_t>(time(nullptr)));
  p.append(",\"model\":");
  AppendJsonString(&p, model);
  p.append(",\"system_fingerprint\":");
  p.append(g_name_json);
  p.append(",\"choices\":[");

  AppendHead(&out, 200, "text/event-stream",
             stream.chunked ? Framing::kChunked : Framing::kUntilClose, 0, stream.keep_alive);
  if (chat) {
    std::string& e = w->event;
    e.assign(p);
    e.append(
        "{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},"
        "\"logprobs\":null,\"finish_reason\":null}]}");
    EmitEvent(e);
  }

  busy = Busy::kStreaming;
  if (delay_ms == 0) {
    while (busy == Busy::kStreaming) StreamStep();
    if (!close_after_write && !stream.keep_alive) close_after_write = true;
    return;
  }
  if (stream.stop_at == 0) {  // Nothing to wait for: close right away.
    StreamStep();
    return;
  }
  pace_delay_ns = delay_ms * 1000000;
  Pace(this, uv_hrtime() + pace_delay_ns);
}

void Conn::FinishStream() {
  std::string& e = w->event;
  e.assign(stream.prefix);
  e.append(stream.chat ? "{\"index\":0,\"delta\":{},\"logprobs\":null,"
                         "\"finish_reason\":\"stop\"}]}"
                       : "{\"index\":0,\"text\":\"\",\"logprobs\":null,"
                         "\"finish_reason\":\"stop\"}]}");
  EmitEvent(e);
  if (stream.include_usage) {
    e.assign(stream.prefix);
    e.append("],");
    AppendUsage(&e, stream.prompt_tokens, stream.total);
    e.push_back('}');
    EmitEvent(e);
  }
  if (stream.chunked) {
    out.append("e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
  } else {
    out.append("data: [DONE]\n\n");
  }
  Inc(w->counters.streams_completed);
  busy = Busy::kIdle;
}

// Emits the next token, then ends the stream if it is over (or closes the
// connection for close-mid-stream). Leaves busy == kIdle when done.
void Conn::StreamStep() {
  if (stream.stop_at >= 0 && stream.next >= static_cast<uint64_t>(stream.stop_at)) {
    busy = Busy::kIdle;  // Not a completed stream, nor a client abort.
    close_after_write = true;
    return;
  }
  if (stream.next < stream.total) EmitTokenEvent(stream.next++);
  if (stream.stop_at >= 0 && stream.next >= static_cast<uint64_t>(stream.stop_at)) {
    busy = Busy::kIdle;
    close_after_write = true;
    return;
  }
  if (stream.next >= stream.total) FinishStream();
}

void Conn::HandleEmbeddings(bool mid_close) {
  std::string model;
  std::string& body = w->scratch;
  body.clear();
  {
    JsonScratch scratch{w};
    JsonDocument doc(&w->json_values, 1024, &w->json_stack);
    bool ok = ParseBody(&doc);
    if (ok) {
      auto m = doc.FindMember("model");
      if (m != doc.MemberEnd() && m->value.IsString()) {
        model.assign(m->value.GetString(), m->value.GetStringLength());
      }
      if (model.empty()) model = g_opt.models.front();
      auto in = doc.FindMember("input");
      if (in == doc.MemberEnd() || !(in->value.IsString() || in->value.IsArray())) {
        SendError(400, "'input' is a required property (string or array).",
                  "invalid_request_error");
        ok = false;
      } else {
        body.append("{\"object\":\"list\",\"data\":[");
        uint64_t prompt_tokens = 0;
        auto embed = [&](const rapidjson::Value& v, uint64_t index) {
          uint64_t h;
          if (v.IsString()) {
            h = Fnv1a(v.GetString(), v.GetStringLength());
            prompt_tokens += CountWords(v.GetString(), v.GetStringLength());
          } else {
            h = Fnv1a(reinterpret_cast<const char*>(&index), sizeof index);
            prompt_tokens += 1;
          }
          if (index) body.push_back(',');
          body.append("{\"object\":\"embedding\",\"index\":");
          AppendUint(&body, index);
          body.append(",\"embedding\":[");
          for (int d = 0; d < kEmbeddingDims; ++d) {
            h = h * 6364136223846793005ULL + 1442695040888963407ULL;
            // Deterministic values in [-1, 1), 6 decimals.
            int64_t micro = static_cast<int64_t>((h >> 33) % 2000000) - 1000000;
            char num[32];
            int n = snprintf(num, sizeof num, "%s%lld.%06lld", micro < 0 ? "-" : "",
                             static_cast<long long>(llabs(micro) / 1000000),
                             static_cast<long long>(llabs(micro) % 1000000));
            if (d) body.push_back(',');
            body.append(num, n);
          }
          body.append("]}");
        };
        if (in->value.IsString()) {
          embed(in->value, 0);
        } else {
          uint64_t i = 0;
          for (const auto& v : in->value.GetArray()) embed(v, i++);
        }
        body.append("],\"model\":");
        AppendJsonString(&body, model);
        body.append(",\"usage\":{\"prompt_tokens\":");
        AppendUint(&body, prompt_tokens);
        body.append(",\"total_tokens\":");
        AppendUint(&body, prompt_tokens);
        body.append("}}");
      }
    }
    if (!ok) return;
  }
  SendBody(200, body, mid_close);
}

// ---------------------------------------------------------------------------
// Threads and start-up

void OnStop(uv_async_t* a) {
  Worker* w = static_cast<Worker*>(a->data);
  for (Conn* c = w->conns; c; c = c->next) c->Close();
  uv_close(reinterpret_cast<uv_handle_t*>(&w->listener), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&w->stop_async), nullptr);
  if (w->pace_fd >= 0) uv_close(reinterpret_cast<uv_handle_t*>(&w->pace_poll), nullptr);
}

void RunWorker(Worker* w) {
  uv_run(&w->loop, UV_RUN_DEFAULT);
  for (Conn* c : w->pool) delete c;
  w->pool.clear();
  if (w->pace_fd >= 0) close(w->pace_fd);
}

uv_signal_t g_sigint, g_sigterm;

void OnSignal(uv_signal_t*, int) {
  for (auto& w : g_workers) uv_async_send(&w->stop_async);
  uv_close(reinterpret_cast<uv_handle_t*>(&g_sigint), nullptr);
  uv_close(reinterpret_cast<uv_handle_t*>(&g_sigterm), nullptr);
}

void Usage(FILE* f) {
  fprintf(f,
          "Usage: fake-router [flags]\n"
          "An OpenAI-compatible fake LLM router for tests and benchmarks.\n"
          "\n"
          "  --port N             port to listen on (default 8881; 0: any)\n"
          "  --bind ADDR          address to bind (default 127.0.0.1; IPv6 "
          "ok)\n"
          "  --threads N          event-loop threads (default 1)\n"
          "  --tokens N           tokens per completion (default 8)\n"
          "  --token-delay-ms N   delay between streamed tokens (default 0)\n"
          "  --model NAME         a model for /v1/models (repeatable;\n"
          "                       default: llama3.2:3b and fake-model)\n"
          "  --fail MODE          failure mode of the inference endpoints:\n"
          "                       none, 500, hang, close-mid-stream,\n"
          "                       close-before-headers (default none)\n"
          "  --name NAME          label for the x-fake-router header\n"
          "                       (default fake-router)\n"
          "  --tool-script JSON   x-fake-tools for chat requests that offer\n"
          "                       tools and do not send the header\n"
          "  --help               this text\n"
          "\n"
          "Per request: x-fake-tokens, x-fake-delay-ms, x-fake-fail,\n"
          "x-fake-status. See test/fake_router/README.md.\n");
}

bool ParseIntFlag(const char* flag, const std::string& v, uint64_t max, int* out) {
  uint64_t n = 0;
  if (!ParseUint(v.data(), v.size(), max, &n)) {
    fprintf(stderr, "fake-router: invalid value for %s: '%s'\n", flag, v.c_str());
    return false;
  }
  *out = static_cast<int>(n);
  return true;
}

// Returns -1 to go on, else the exit code.
int ParseArgs(int argc, char** argv, Options* o) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    }
    static const char* const kFlags[] = {"--port",   "--bind",           "--threads",
                                         "--tokens", "--token-delay-ms", "--model",
                                         "--fail",   "--name",           "--tool-script"};
    std::string name = arg.substr(0, arg.find('='));
    bool known = false;
    for (const char* f : kFlags) known = known || name == f;
    if (!known) {
      fprintf(stderr, "fake-router: unknown flag %s (see --help)\n", name.c_str());
      return 2;
    }
    std::string value;
    size_t eq = arg.find('=');
    if (arg.compare(0, 2, "--") == 0 && eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      fprintf(stderr, "fake-router: %s needs a value (see --help)\n", arg.c_str());
      return 2;
    }
    bool ok = true;
    if (arg == "--port") {
      ok = ParseIntFlag("--port", value, 65535, &o->port);
    } else if (arg == "--bind") {
      if (value.size() > 2 && value.front() == '[' && value.back() == ']') {
        value = value.substr(1, value.size() - 2);
      }
      o->bind = value;
    } else if (arg == "--threads") {
      ok = ParseIntFlag("--threads", value, 256, &o->threads);
      if (ok && o->threads == 0) o->threads = 1;
    } else if (arg == "--tokens") {
      ok = ParseIntFlag("--tokens", value, kMaxTokens, &o->tokens);
    } else if (arg == "--token-delay-ms") {
      ok = ParseIntFlag("--token-delay-ms", value, kMaxDelayMs, &o->token_delay_ms);
    } else if (arg == "--model") {
      if (value.empty()) {
        fprintf(stderr, "fake-router: --model needs a name\n");
        return 2;
      }
      o->models.push_back(value);
    } else if (arg == "--fail") {
      ok = ParseFailMode(value.data(), value.size(), &o->fail);
      if (!ok) fprintf(stderr, "fake-router: unknown --fail mode '%s'\n", value.c_str());
    } else if (arg == "--name") {
      o->name = value;
    } else if (arg == "--tool-script") {
      o->tool_script = value;
    } else {
      fprintf(stderr, "fake-router: unknown flag %s (see --help)\n", arg.c_str());
      return 2;
    }
    if (!ok) return 2;
  }
  if (o->models.empty()) o->models = {"llama3.2:3b", "fake-model"};
  return -1;
}

void Precompute() {
  // Header values cannot hold CR/LF; keep the name printable.
  std::string header_name;
  for (char c : g_opt.name) {
    header_name.push_back((c == '\r' || c == '\n') ? ' ' : c);
  }
  g_name_header = "x-fake-router: " + header_name + "\r\n";
  g_name_json.clear();
  AppendJsonString(&g_name_json, g_opt.name);
  g_health_body = "{\"status\":\"ok\",\"name\":" + g_name_json + "}";
  g_models_body = "{\"object\":\"list\",\"data\":[";
  for (size_t i = 0; i < g_opt.models.size(); ++i) {
    if (i) g_models_body += ',';
    g_models_body += "{\"id\":";
    AppendJsonString(&g_models_body, g_opt.models[i]);
    g_models_body += ",\"object\":\"model\",\"created\":1700000000,\"owned_by\":\"fake\"}";
  }
  g_models_body += "]}";
}

int Listen(Worker* w, const sockaddr_storage& addr, int* port) {
  sockaddr_storage a = addr;
  if (a.ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6*>(&a)->sin6_port = htons(*port);
  } else {
    reinterpret_cast<sockaddr_in*>(&a)->sin_port = htons(*port);
  }
  int r = uv_tcp_init_ex(&w->loop, &w->listener, a.ss_family);
  if (r) return r;
  w->listener.data = w;
  uv_os_fd_t fd;
  r = uv_fileno(reinterpret_cast<uv_handle_t*>(&w->listener), &fd);
  if (r) return r;
  int one = 1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return uv_translate_sys_error(errno);
  }
  r = uv_tcp_bind(&w->listener, reinterpret_cast<const sockaddr*>(&a), 0);
  if (r) return r;
  r = uv_listen(reinterpret_cast<uv_stream_t*>(&w->listener), 1024, OnConnection);
  if (r) return r;
  if (*port == 0) {
    sockaddr_storage bound;
    int len = sizeof bound;
    r = uv_tcp_getsockname(&w->listener, reinterpret_cast<sockaddr*>(&bound), &len);
    if (r) return r;
    *port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int rc = ParseArgs(argc, argv, &g_opt);
  if (rc >= 0) return rc;
  signal(SIGPIPE, SIG_IGN);
  Precompute();

  sockaddr_storage addr;
  memset(&addr, 0, sizeof addr);
  if (uv_ip4_addr(g_opt.bind.c_str(), 0, reinterpret_cast<sockaddr_in*>(&addr)) != 0 &&
      uv_ip6_addr(g_opt.bind.c_str(), 0, reinterpret_cast<sockaddr_in6*>(&addr)) != 0) {
    fprintf(stderr, "fake-router: --bind %s is not an IP address\n", g_opt.bind.c_str());
    return 2;
  }

  int port = g_opt.port;
  for (int i = 0; i < g_opt.threads; ++i) {
    g_workers.emplace_back(new Worker());
    Worker* w = g_workers.back().get();
    w->index = i;
    uv_loop_init(&w->loop);
    uv_async_init(&w->loop, &w->stop_async, OnStop);
    w->stop_async.data = w;
    int r = Listen(w, addr, &port);
    if (r) {
      fprintf(stderr, "fake-router: cannot listen on %s port %d: %s\n", g_opt.bind.c_str(), port,
              uv_strerror(r));
      return 1;
    }
  }

  uv_loop_t* main_loop = uv_default_loop();
  uv_signal_init(main_loop, &g_sigint);
  uv_signal_init(main_loop, &g_sigterm);
  uv_signal_start(&g_sigint, OnSignal, SIGINT);
  uv_signal_start(&g_sigterm, OnSignal, SIGTERM);

  for (auto& w : g_workers) {
    Worker* wp = w.get();
    w->thread = std::thread([wp] { RunWorker(wp); });
  }
  printf("{\"event\":\"listening\",\"port\":%d}\n", port);
  fflush(stdout);

  uv_run(main_loop, UV_RUN_DEFAULT);
  for (auto& w : g_workers) {
    w->thread.join();
    uv_loop_close(&w->loop);
  }
  uv_loop_close(main_loop);
  return 0;
}
