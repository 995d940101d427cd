#include "test/fuzz/fuzz_util.h"

#include <llhttp.h>
#include <pthread.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace eldric::fuzz {

bool skipKnownCrashes() {
  static const bool skip = [] {
    const char* v = getenv("ELDRIC_FUZZ_SKIP_KNOWN");
    return v && *v && strcmp(v, "0") != 0;
  }();
  return skip;
}

size_t jsonNesting(std::string_view text) {
  size_t depth = 0, deepest = 0;
  for (char c : text) {
    if (c == '[' || c == '{') {
      if (++depth > deepest) deepest = depth;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return deepest;
}

namespace {

struct TrailerScan {
  bool in_body = false;
  bool trailers = false;
};

int onScanBegin(llhttp_t* p) {
  static_cast<TrailerScan*>(p->data)->in_body = false;
  return 0;
}
int onScanHeadersComplete(llhttp_t* p) {
  static_cast<TrailerScan*>(p->data)->in_body = true;
  return 0;
}
int onScanField(llhttp_t* p, const char*, size_t) {
  auto* s = static_cast<TrailerScan*>(p->data);
  if (s->in_body) s->trailers = true;
  return 0;
}

}  // namespace

bool llhttpSeesTrailers(std::string_view text, bool requests) {
  llhttp_settings_t settings;
  llhttp_settings_init(&settings);
  settings.on_message_begin = &onScanBegin;
  settings.on_headers_complete = &onScanHeadersComplete;
  settings.on_header_field = &onScanField;
  llhttp_t parser;
  llhttp_init(&parser, requests ? HTTP_REQUEST : HTTP_RESPONSE, &settings);
  TrailerScan scan;
  parser.data = &scan;
  // A byte at a time: llhttp reports a partial field name at the end of
  // each buffer it is given, and the codecs see the stream in pieces, so a
  // trailer name cut short by an invalid byte still reaches them.
  for (size_t i = 0; i < text.size() && !scan.trailers; ++i) {
    if (llhttp_execute(&parser, text.data() + i, 1) != HPE_OK) break;
  }
  return scan.trailers;
}

namespace {

// One worker thread for the whole run, created with the small stack: a
// thread per input would cost more than most inputs.
class SmallStackWorker {
 public:
  explicit SmallStackWorker(size_t stack_bytes) {
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, stack_bytes);
    if (pthread_create(&thread_, &attr, &SmallStackWorker::main, this) != 0) abort();
    pthread_attr_destroy(&attr);
  }
  void run(const std::function<void()>& fn) {
    std::unique_lock<std::mutex> lock(mutex_);
    job_ = &fn;
    cv_.notify_all();
    cv_.wait(lock, [this] { return job_ == nullptr; });
  }

 private:
  static void* main(void* arg) {
    auto* self = static_cast<SmallStackWorker*>(arg);
    std::unique_lock<std::mutex> lock(self->mutex_);
    for (;;) {
      self->cv_.wait(lock, [self] { return self->job_ != nullptr; });
      (*self->job_)();
      self->job_ = nullptr;
      self->cv_.notify_all();
    }
    return nullptr;
  }
  pthread_t thread_;
  std::mutex mutex_;
  std::condition_variable cv_;
  const std::function<void()>* job_ = nullptr;
};

}  // namespace

void runOnSmallStack(const std::function<void()>& fn) {
  static SmallStackWorker* worker = [] {
    const char* v = getenv("ELDRIC_FUZZ_STACK_KB");
    long kb = v && *v ? atol(v) : 128;
    return new SmallStackWorker(static_cast<size_t>(kb < 64 ? 64 : kb) * 1024);
  }();
  worker->run(fn);
}

}  // namespace eldric::fuzz
