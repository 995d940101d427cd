// Its own test binary: the table can only grow, so the test needs a
// process that has not grown it yet.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

#include "dataplane/common/fd_table.h"
#include "gtest/gtest.h"

namespace eldric {
namespace {

size_t fdTableSize() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("FDSize:", 0) == 0) return std::stoul(line.substr(7));
  }
  return 0;
}

TEST(FdTableTest, PresizeGrowsTheTableToTheLimitOrTheCap) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  // A soft limit of at least 4,096 for this test (the hard limit allows it
  // on any machine these tests run on; skip otherwise).
  if (rl.rlim_cur < 4096) {
    if (rl.rlim_max < 4096) GTEST_SKIP() << "hard descriptor limit below 4096";
    rl.rlim_cur = 4096;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  size_t before = fdTableSize();
  ASSERT_LT(before, 2048u);  // a fresh process: not grown yet
  EXPECT_EQ(presizeDescriptorTable(3000), 3000u);
  EXPECT_GE(fdTableSize(), 3000u);
  // The slot used to grow it is free again: new descriptors still come
  // from the bottom.
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0);
  EXPECT_LT(fd, 64);
  close(fd);
}

TEST(FdTableTest, NothingToDoUnderTheInitialTable) {
  EXPECT_EQ(presizeDescriptorTable(64), 0u);
}

}  // namespace
}  // namespace eldric
