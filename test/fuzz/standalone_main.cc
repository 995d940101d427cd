// A main() for a fuzz harness built without libFuzzer (gcc, or a clang
// build without --config=fuzz): runs LLVMFuzzerTestOneInput once on each
// file named on the command line, or on each file in a named folder, so
// that a corpus or a reproducer can be replayed under any build.

#include <dirent.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);
extern "C" __attribute__((weak)) int LLVMFuzzerInitialize(int* argc, char*** argv);

namespace {

int runFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    fprintf(stderr, "cannot read %s\n", path.c_str());
    return 1;
  }
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A copy of exactly `size` bytes, as libFuzzer passes it, so that a read
  // past the end is caught by ASan here too.
  std::vector<uint8_t> exact(bytes.begin(), bytes.end());
  LLVMFuzzerTestOneInput(exact.empty() ? nullptr : exact.data(), exact.size());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  int failures = 0;
  size_t ran = 0;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (!arg.empty() && arg[0] == '-') continue;  // libFuzzer flags: ignored
    struct stat st;
    if (stat(arg.c_str(), &st) != 0) {
      fprintf(stderr, "no such file: %s\n", arg.c_str());
      ++failures;
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      DIR* d = opendir(arg.c_str());
      if (!d) continue;
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] == '.') continue;
        failures += runFile(arg + "/" + e->d_name);
        ++ran;
      }
      closedir(d);
    } else {
      failures += runFile(arg);
      ++ran;
    }
  }
  fprintf(stderr, "ran %zu inputs\n", ran);
  return failures == 0 ? 0 : 1;
}
