#pragma once

// eldric-tunnel: runs beside an OpenAI-compatible server behind NAT
// (Ollama, vLLM, llama.cpp's server) and makes it a worker of the cluster
// through an Edge's tunnel, with outbound connections only:
//
//   open    POST /api/v1/tunnel/connect {worker_id, models, max_concurrent}
//   slots   max_concurrent of them, each: GET .../poll (parked at the Edge)
//           -> the request -> the local server -> POST .../response/{id}
//           (status in x-eldric-status, body chunked as it is produced)
//           -> poll again, on the same kept-alive connection
//   stop    SIGTERM: no new polls, answers in flight finish (up to
//           drain_timeout_ms), POST .../disconnect
//
// A lost tunnel (the Edge restarted, reaped it, or refused the key) is
// opened again after a jittered exponential backoff; so are slots whose
// polls fail. The local server's answer streams through without being
// buffered: when the Edge reads slowly, the agent stops reading the local
// server. A local server that fails mid-answer cuts the answer short (the
// router sees an error event); one that fails before answering becomes an
// OpenAI-shaped 502.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/address.h"
#include "dataplane/event/dispatcher.h"
#include "dataplane/http/http1_client.h"
#include "dataplane/tls/server_context.h"

namespace eldric::tunnel_agent {

struct AgentOptions {
  network::Url edge;      // https://edge.example.com (http:// for tests only)
  std::string key;        // a worker-scope API key
  std::string ca_file;    // trust for the Edge ("" = the system bundle)
  network::Url local;     // http://127.0.0.1:11434
  std::string local_key;  // sent to the local server as a Bearer token
  std::string worker_id;
  std::vector<std::string> models;  // empty: the local server's /v1/models
  // The paths served (prefixes); others are answered 403 without asking
  // the local server (its admin API stays its own).
  std::vector<std::string> paths = {"/v1/"};
  uint32_t max_concurrent = 4;
  uint64_t connect_timeout_ms = 10000;
  uint64_t local_timeout_ms = 600000;  // the local server silent that long: failed
  uint64_t backoff_initial_ms = 500;
  uint64_t backoff_max_ms = 30000;
  uint64_t drain_timeout_ms = 30000;
};

class Agent {
 public:
  Agent(Dispatcher& dispatcher, AgentOptions options);
  ~Agent();

  // Loads TLS trust and resolves both servers. False with `*error`.
  bool init(std::string* error);
  void start();
  // No new polls; answers in flight finish (up to drain_timeout_ms); the
  // tunnel is disconnected; then `done` runs.
  void stop(std::function<void()> done);

  // A jittered exponential backoff for the `attempt`th failure in a row
  // (full jitter: uniform in [base/2, base], base doubling to the maximum).
  uint64_t backoffMs(uint32_t attempt) const;

 private:
  class Slot;
  class Fetch;
  friend class Slot;

  bool resolveAll(std::string* error);
  void open();
  void connectTunnel();
  void opened(const std::string& tunnel_id, uint64_t poll_timeout_ms, uint32_t slots);
  bool pathAllowed(const std::string& path) const;
  // The tunnel is gone (or the key refused): every slot goes, it reopens.
  void lost(const std::string& why);
  void openLater(const std::string& why);
  void slotIdle();
  void finishStop();
  void authorize(http::RequestHeaders& head) const;

  Dispatcher& dispatcher_;
  AgentOptions options_;
  tls::SslCtxPtr edge_tls_;
  http::ClientTarget edge_;
  http::ClientTarget local_;
  std::unique_ptr<Fetch> control_;  // connect, disconnect
  std::unique_ptr<Fetch> probe_;    // the local server's /v1/models
  std::unique_ptr<Timer> reopen_;
  std::unique_ptr<Timer> drain_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::string> models_;
  std::string tunnel_id_;
  uint64_t poll_timeout_ms_ = 30000;
  uint32_t open_failures_ = 0;
  bool reopening_ = false;
  bool stopping_ = false;
  std::function<void()> stop_done_;
};

}  // namespace eldric::tunnel_agent
