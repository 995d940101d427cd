#include "common/session_key.h"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace eldric {

bool loadSessionKey(const std::string& dir, std::string* key, std::string* error) {
  const std::string path = dir + "/session.key";
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) {
    unsigned char fresh[32];
    if (getrandom(fresh, sizeof fresh, 0) != static_cast<ssize_t>(sizeof fresh)) {
      *error = "getrandom failed: " + std::string(std::strerror(errno));
      return false;
    }
    int w = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (w < 0 || ::write(w, fresh, sizeof fresh) != static_cast<ssize_t>(sizeof fresh) ||
        ::fsync(w) != 0) {
      *error = path + ": " + std::strerror(errno);
      if (w >= 0) ::close(w);
      return false;
    }
    ::close(w);
    // The new directory entry must be durable too, or a power cut could
    // bring back a farm whose sessions all changed key.
    int d = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (d >= 0) {
      ::fsync(d);
      ::close(d);
    }
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  }
  if (fd < 0) {
    *error = path + ": " + std::strerror(errno);
    return false;
  }
  char buf[64];
  ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n != 32) {
    *error = path + ": expected 32 bytes";
    return false;
  }
  key->assign(buf, 32);
  return true;
}

}  // namespace eldric
