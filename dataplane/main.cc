// eldric-edge: the data plane's entry point.

#include <cstdio>

#include "common/config/loader.h"
#include "common/core_dumps.h"
#include "common/fd_table.h"
#include "dataplane/server/server.h"

int main(int argc, char** argv) {
  eldric::config::CommandLine cli;
  std::string error;
  if (!eldric::config::parseCommandLine(argc, argv, &cli, &error)) {
    fprintf(stderr, "eldric-edge: %s\n", error.c_str());
    return 2;
  }
  if (cli.help) {
    fputs(eldric::config::usage(), stdout);
    return 0;
  }
  if (cli.version) {
    puts("eldric-edge 0.1.0");
    return 0;
  }
  // Before any thread starts (see fd_table.h).
  eldric::forbidCoreDumps();
  eldric::raiseDescriptorLimit();
  eldric::presizeDescriptorTable();
  eldric::server::Server server(std::move(cli));
  return server.run();
}
