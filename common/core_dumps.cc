#include "common/core_dumps.h"

#include <sys/prctl.h>
#include <sys/resource.h>

#include <cstdlib>
#include <cstring>

namespace eldric {

void forbidCoreDumps() {
  const char* allow = getenv("ELDRIC_ALLOW_CORE_DUMPS");
  if (allow && strcmp(allow, "1") == 0) return;
  rlimit none{0, 0};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

}  // namespace eldric
