// ThreadSanitizer's suppressions for the interop server: a process of
// Debian's libgrpc++, libgrpc, libgpr and libabsl and generated code, none
// of it instrumented, so TSan cannot see the locks it takes and reports its
// threads' accesses as races. No code of ours runs in it; our gRPC client
// (the test's own process) is checked in full.
#include "common/tsan_grpc_libraries.h"

#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
extern "C" const char* __tsan_default_suppressions() {
  return ELDRIC_TSAN_UNINSTRUMENTED_GRPC_LIBRARIES
      "race:libgrpc.so\n"
      "race:libgrpc++.so\n"
      "race:libgpr.so\n"
      "race:libabsl_\n";
}
#endif
#endif
