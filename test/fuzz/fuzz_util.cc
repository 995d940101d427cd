#include "test/fuzz/fuzz_util.h"

#include <pthread.h>

#include <cstdlib>
#include <cstring>

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

bool mayHaveTrailers(std::string_view text) {
  for (size_t at = text.find('\n'); at != std::string_view::npos; at = text.find('\n', at + 1)) {
    size_t i = at + 1;
    if (i >= text.size() || text[i] != '0') continue;
    while (i < text.size() && text[i] == '0') ++i;
    size_t eol = text.find('\n', i);
    if (eol == std::string_view::npos) return false;
    // Only a chunk-size line: hex digits are gone, an extension may follow.
    if (i < text.size() && text[i] != '\r' && text[i] != '\n' && text[i] != ';' && text[i] != ' ' &&
        text[i] != '\t') {
      continue;
    }
    size_t next = eol + 1;
    if (next < text.size() && text[next] != '\r' && text[next] != '\n') return true;
  }
  return false;
}

namespace {

void* callFunction(void* arg) {
  (*static_cast<const std::function<void()>*>(arg))();
  return nullptr;
}

}  // namespace

void runOnSmallStack(const std::function<void()>& fn) {
  static const size_t bytes = [] {
    const char* v = getenv("ELDRIC_FUZZ_STACK_KB");
    long kb = v && *v ? atol(v) : 128;
    return static_cast<size_t>(kb < 64 ? 64 : kb) * 1024;
  }();
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, bytes);
  pthread_t t;
  if (pthread_create(&t, &attr, &callFunction, const_cast<std::function<void()>*>(&fn)) != 0) abort();
  pthread_join(t, nullptr);
  pthread_attr_destroy(&attr);
}

}  // namespace eldric::fuzz
