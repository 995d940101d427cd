#include "common/fd_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

namespace eldric {

size_t raiseDescriptorLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &raised) == 0) rl = raised;
  }
  return rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<size_t>(rl.rlim_cur);
}

size_t presizeDescriptorTable(size_t cap) {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
  size_t n = rl.rlim_cur == RLIM_INFINITY ? cap : std::min<size_t>(rl.rlim_cur, cap);
  if (n <= 64) return 0;  // the table a process starts with holds 64
  // A descriptor already there (inherited) means the table holds it: dup2
  // would close it.
  if (fcntl(static_cast<int>(n - 1), F_GETFD) != -1) return n;
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  // Placing a descriptor in the last slot grows the table to hold it; the
  // kernel never shrinks it again.
  int high = dup2(fd, static_cast<int>(n - 1));
  if (high >= 0) close(high);
  close(fd);
  return high >= 0 ? n : 0;
}

}  // namespace eldric
