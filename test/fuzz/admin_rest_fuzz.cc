// The admin REST API (clients, plugins, farm) as both daemons serve it:
// a method, a path and a JSON body, over a real Store (SQLite under
// /dev/shm, started afresh every few thousand inputs so that it stays
// small).
//
// Input: [method][path up to the first newline]\n[body]

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

#include "controlplane/core/admin_rest.h"
#include "test/fuzz/fuzz_util.h"

namespace {

using eldric::controlplane::AdminContext;
using eldric::controlplane::Store;

std::string g_dir;
std::unique_ptr<Store> g_store;
size_t g_uses = 0;

// The database goes with the process (libFuzzer ends with exit()).
void removeStore() {
  g_store.reset();
  for (const char* f : {"/edge.db", "/edge.db-wal", "/edge.db-shm", "/edge.db-journal"}) {
    unlink((g_dir + f).c_str());
  }
  rmdir(g_dir.c_str());
}

Store& store() {
  if (!g_store || ++g_uses % 4096 == 0) {
    g_store.reset();
    if (g_dir.empty()) {
      const char* base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
      std::string templ = std::string(base) + "/eldric-admin-fuzz.XXXXXX";
      if (!mkdtemp(templ.data())) abort();
      g_dir = templ;
      atexit(&removeStore);
    }
    unlink((g_dir + "/edge.db").c_str());
    unlink((g_dir + "/edge.db-wal").c_str());
    unlink((g_dir + "/edge.db-shm").c_str());
    unlink((g_dir + "/edge.db-journal").c_str());
    std::string error;
    g_store = Store::open(g_dir, &error);
    if (!g_store) {
      fprintf(stderr, "store: %s\n", error.c_str());
      abort();
    }
    // Something to find, rotate and revoke.
    eldric::controlplane::IssuedKey key;
    bool conflict = false;
    g_store->registerClient("alice", "seed", {}, {}, 0, &key, &error, &conflict);
    eldric::controlplane::PluginRecord p;
    p.id = "pii";
    p.type = "filter";
    g_store->upsertPlugin(p, &error);
  }
  return *g_store;
}

}  // namespace

static int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  fuzz::InputReader in(data, size);
  static const char* kMethods[] = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"};
  std::string method = kMethods[in.byte() % 6];
  std::string_view rest = in.rest();
  size_t nl = rest.find('\n');
  std::string path(rest.substr(0, nl));
  std::string body(nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1));
  if (fuzz::skipKnownCrashes() && fuzz::jsonNesting(body) > 200) return 0;

  AdminContext ctx;
  ctx.store = &store();
  ctx.usage_json = [](const std::string&) { return std::string("{\"requests_in_window\":0}"); };
  bool changed = false;
  controlplane::RestReply r = controlplane::handleAdminRest(ctx, method, path, body, &changed);
  if (r.status < 100 || r.status > 599) abort();
  if (r.status >= 400 && r.error_code.empty()) abort();  // every refusal has a code
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // JSON is parsed recursively: on a small stack, nesting overflows it at
  // a depth the fuzzer reaches (see runOnSmallStack).
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
