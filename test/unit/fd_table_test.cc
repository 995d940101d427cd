// Its own test binary: the table can only grow, so the test needs a
// process that has not grown it yet.
#include "common/fd_table.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <string>

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

// A soft limit of at least 4,096 for these tests (the hard limit allows
// it on any machine they run on).
bool raiseLimit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return false;
  if (rl.rlim_cur >= 4096) return true;
  if (rl.rlim_max < 4096) return false;
  rl.rlim_cur = 4096;
  return setrlimit(RLIMIT_NOFILE, &rl) == 0;
}

TEST(FdTableTest, PresizeGrowsTheTableToTheLimitOrTheCap) {
  if (!raiseLimit()) GTEST_SKIP() << "hard descriptor limit below 4096";
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

TEST(FdTableTest, LeavesADescriptorAlreadyInTheLastSlotOpen) {
  if (!raiseLimit()) GTEST_SKIP() << "hard descriptor limit below 4096";
  // As a descriptor a parent process passed on would sit there.
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(dup2(fd, 3999), 3999);
  close(fd);
  EXPECT_EQ(presizeDescriptorTable(4000), 4000u);
  EXPECT_NE(fcntl(3999, F_GETFD), -1);
  close(3999);
}

TEST(FdTableTest, RaiseSetsTheSoftLimitToTheHardOne) {
  rlimit rl{};
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_max > 1024) {  // start from a lower soft limit, as a shell's
    rl.rlim_cur = 1024;
    ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  size_t now = raiseDescriptorLimit();
  ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &rl), 0);
  EXPECT_EQ(rl.rlim_cur, rl.rlim_max);
  EXPECT_EQ(now, rl.rlim_cur == RLIM_INFINITY ? SIZE_MAX : static_cast<size_t>(rl.rlim_cur));
}

TEST(FdTableTest, NothingToDoUnderTheInitialTable) { EXPECT_EQ(presizeDescriptorTable(64), 0u); }

}  // namespace
}  // namespace eldric
