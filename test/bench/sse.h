// Server-sent events as the benchmark clients see them: splits a response
// body (already de-chunked) into events, and follows the fake router's token
// numbering ("content":"tok17 ") to find tokens lost, repeated or
// reordered. Which bytes arrived together is the caller's business: it
// feeds what one read delivered and gets how many events and token events
// that read completed (two token events completed by one read means the
// proxy merged chunks the upstream sent 20 ms apart).
#ifndef ELDRIC_TEST_BENCH_SSE_H_
#define ELDRIC_TEST_BENCH_SSE_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace loadgen {

class SseScanner {
 public:
  struct Counts {
    int events = 0;  // events completed by these bytes
    int tokens = 0;  // ... of which carry a token
  };
  // Bytes of the body, in order. Events end at a blank line ("\n\n" or
  // "\r\n\r\n"); an event split across feeds counts in the feed that ends it.
  Counts Feed(const char* p, size_t n);
  // The stream ended: tokens expected but never seen count as lost.
  void End(uint64_t expected_tokens);

  uint64_t events() const { return events_; }
  uint64_t tokens() const { return tokens_; }
  uint64_t lost() const { return lost_; }                // token numbers skipped or never sent
  uint64_t out_of_order() const { return misordered_; }  // a number at or below one seen
  bool done() const { return done_; }                    // saw "data: [DONE]"

  // The token number in one event's text ("tok" + digits in a data line),
  // or -1 if the event carries none.
  static int64_t TokenOf(const char* p, size_t n);

 private:
  void Event(const char* p, size_t n, Counts* c);
  std::string carry_;  // an event not yet ended
  uint64_t events_ = 0, tokens_ = 0, lost_ = 0, misordered_ = 0;
  uint64_t next_ = 0;  // the token number expected next
  bool done_ = false;
};

}  // namespace loadgen

#endif  // ELDRIC_TEST_BENCH_SSE_H_
