// The standalone configuration: a command line (FlagParser, every flag
// of eldric-edge) and a JSON config file with comments, through the same
// path as `eldric-edge --config FILE ...` (parse, schema walk, flags over
// the file, validation, Snapshot).
//
// Input: [mode][argv part, arguments separated by NUL, ended by two NULs
//        when mode & 1][config file text]

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "common/config/loader.h"
#include "test/fuzz/fuzz_util.h"

static int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  uint8_t mode = in.byte();
  std::string_view rest = in.rest();
  // The config may name files (tls.cert_file); keep the reads to ordinary
  // files, not devices that never end.
  for (std::string_view bad : {"/dev/", "/proc/", "/sys/"}) {
    if (rest.find(bad) != std::string_view::npos) return 0;
  }
  std::vector<std::string> args = {"eldric-edge"};
  std::string_view text = rest;
  if (mode & 1) {
    size_t end = rest.find(std::string_view("\0\0", 2));
    std::string_view argv_part = rest.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : rest.substr(end + 2);
    while (!argv_part.empty() && args.size() < 64) {
      size_t nul = argv_part.find('\0');
      args.emplace_back(argv_part.substr(0, nul));
      if (nul == std::string_view::npos) break;
      argv_part.remove_prefix(nul + 1);
    }
  }
  if (fuzz::skipKnownCrashes() && fuzz::jsonNesting(text) > 200) return 0;
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  config::CommandLine cli;
  std::string error;
  if (!config::parseCommandLine(static_cast<int>(args.size()), argv.data(), &cli, &error)) {
    if (error.empty()) abort();  // a refusal always says why
    return 0;
  }
  config::LoadResult result;
  error.clear();
  bool ok = config::loadFromText(std::string(text), "fuzz.json", cli, &result, &error);
  if (!ok && error.empty()) abort();
  if (ok) {
    // What the loader built must serialise (the control plane sends it).
    std::string bytes;
    if (!result.snapshot.SerializeToString(&bytes)) abort();
  }
  (void)config::splitList(std::string(text.substr(0, 256)));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // JSON is parsed recursively: on a small stack, nesting overflows it at
  // a depth the fuzzer reaches (see runOnSmallStack).
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
