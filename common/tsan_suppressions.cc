// ThreadSanitizer's suppressions for the processes that link Debian's
// libgrpc, libabsl and (through gRPC) OpenSSL 3. Those libraries are not
// instrumented: TSan sees neither their locks nor their own loads and
// stores, only the libc calls they make (memcpy, memcmp, epoll_wait, ...),
// through its interceptors. So a buffer our code (or grpc++'s inline
// headers) fills before handing it to grpc under grpc's own mutex looks
// like a race once grpc's thread memcpy()s it (seen in controlplane_test:
// epoll descriptors, channel arguments, call metadata; abseil's deadlock
// detector). `called_from_lib` makes TSan ignore the interceptors those
// libraries call (the list: tsan_grpc_libraries.h); every access made by
// our own code is still checked. Then races in grpc++'s own inline code
// (below). test/SANITIZERS.md has the runs.
#include "common/tsan_grpc_libraries.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
extern "C" const char* __tsan_default_suppressions() {
  return ELDRIC_TSAN_UNINSTRUMENTED_GRPC_LIBRARIES
      // grpc++'s inline code, compiled into our objects but handing its
      // state over through libgrpc's completion queue: a race whose
      // innermost frame is in grpc++'s headers, or that happens inside
      // the two grpc++ headers that never call back into our code (an
      // interceptor's memset there has an interceptor as innermost frame).
      "race_top:/usr/include/grpcpp/\n"
      "race:grpcpp/impl/codegen/interceptor_common.h\n"
      "race:grpcpp/impl/call_op_set.h\n"
      // A stream's callback tags, set up by one grpc thread and run by
      // another: SetupReactor calls none of our code.
      "race:ServerCallbackReaderWriterImpl::SetupReactor\n"
      // A discovery stream refused before it starts (a farm member's token
      // does not match): Finish() in the constructor on the handler's grpc
      // thread is kept in grpc++'s pre-bind backlog, which OnDone frees on
      // another; the completion queue orders the two.
      "race:eldric::controlplane::DiscoveryService::Refused::~Refused\n";
}
#endif
#endif
