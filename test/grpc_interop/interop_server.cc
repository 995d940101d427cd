// The real libgrpc++ on the other end of the data plane's gRPC client
// tests. A separate process by necessity: libgrpc brings OpenSSL 3, which
// must never share a process with BoringSSL.
//
//   interop_server [--port=N] [--tls_cert=F --tls_key=F [--client_ca=F]]
//                  [--permit_pings]
//
// Prints {"event":"listening","port":N} on stdout once it accepts calls.
// With --client_ca, clients must present a certificate signed by it
// (mTLS). --permit_pings lets clients ping as often as they like (the
// default libgrpc policy answers frequent pings with GOAWAY
// "too_many_pings").

#include <grpcpp/grpcpp.h>
#include <grpcpp/security/server_credentials.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>

#include "interop.grpc.pb.h"

namespace {

using eldric::interop::Echo;
using eldric::interop::EchoRequest;
using eldric::interop::EchoResponse;

std::string readFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "cannot read " << path << "\n";
    exit(2);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string payload(const EchoRequest& req) {
  if (req.response_size() > 0) return std::string(static_cast<size_t>(req.response_size()), 'x');
  return req.message();
}

class EchoService final : public Echo::Service {
  grpc::Status Unary(grpc::ServerContext* ctx, const EchoRequest* req,
                     EchoResponse* resp) override {
    auto start = std::chrono::steady_clock::now();
    auto deadline = ctx->deadline();
    if (deadline == std::chrono::system_clock::time_point::max()) {
      resp->set_deadline_remaining_ms(-1);
    } else {
      resp->set_deadline_remaining_ms(std::chrono::duration_cast<std::chrono::milliseconds>(
                                          deadline - std::chrono::system_clock::now())
                                          .count());
    }
    // Sleep in small steps so a cancelled call frees the thread.
    while (std::chrono::steady_clock::now() - start < std::chrono::milliseconds(req->sleep_ms()) &&
           !ctx->IsCancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (req->status() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(req->status()), req->error_message());
    }
    resp->set_message(payload(*req));
    return grpc::Status::OK;
  }

  grpc::Status ServerStream(grpc::ServerContext*, const EchoRequest* req,
                            grpc::ServerWriter<EchoResponse>* writer) override {
    for (int i = 0; i < req->count(); ++i) {
      EchoResponse resp;
      resp.set_index(i);
      resp.set_message(payload(*req));
      grpc::WriteOptions opts;
      // The buffer hint holds writes back until one without it: the
      // messages then leave together, several to a DATA frame.
      if (req->coalesce() && i + 1 < req->count()) opts.set_buffer_hint();
      if (!writer->Write(resp, opts)) break;
    }
    if (req->status() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(req->status()), req->error_message());
    }
    return grpc::Status::OK;
  }

  grpc::Status Bidi(grpc::ServerContext*,
                    grpc::ServerReaderWriter<EchoResponse, EchoRequest>* stream) override {
    EchoRequest req;
    int index = 0;
    while (stream->Read(&req)) {
      if (req.status() != 0) {
        return grpc::Status(static_cast<grpc::StatusCode>(req.status()), req.error_message());
      }
      EchoResponse resp;
      resp.set_index(index++);
      resp.set_message(payload(req));
      if (!stream->Write(resp)) break;
    }
    // The client half-closed: end with OK, saying how many were seen.
    EchoResponse done;
    done.set_message("done");
    done.set_index(index);
    stream->Write(done);
    return grpc::Status::OK;
  }
};

bool flag(const std::string& arg, const std::string& name, std::string* value) {
  std::string prefix = "--" + name + "=";
  if (arg.rfind(prefix, 0) != 0) return false;
  *value = arg.substr(prefix.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  std::string port = "0", tls_cert, tls_key, client_ca;
  bool permit_pings = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (flag(a, "port", &port) || flag(a, "tls_cert", &tls_cert) || flag(a, "tls_key", &tls_key) ||
        flag(a, "client_ca", &client_ca)) {
      continue;
    }
    if (a == "--permit_pings") {
      permit_pings = true;
      continue;
    }
    std::cerr << "unknown flag " << a << "\n";
    return 2;
  }

  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!tls_cert.empty()) {
    grpc::SslServerCredentialsOptions opts(
        client_ca.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                          : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
    opts.pem_key_cert_pairs.push_back({readFile(tls_key), readFile(tls_cert)});
    if (!client_ca.empty()) opts.pem_root_certs = readFile(client_ca);
    creds = grpc::SslServerCredentials(opts);
  }

  EchoService service;
  grpc::ServerBuilder builder;
  int selected = 0;
  builder.AddListeningPort("127.0.0.1:" + port, creds, &selected);
  builder.RegisterService(&service);
  builder.SetMaxReceiveMessageSize(128 * 1024 * 1024);
  builder.SetMaxSendMessageSize(128 * 1024 * 1024);
  // Lets writes with the buffer hint complete while buffered (up to this
  // much per stream); without it a sync Write() with the hint waits for a
  // flush that only a later write could trigger, and never returns.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 1024 * 1024);
  if (permit_pings) {
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 0);
    builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
    builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || selected == 0) {
    std::cerr << "cannot listen on 127.0.0.1:" << port << "\n";
    return 1;
  }
  std::printf("{\"event\":\"listening\",\"port\":%d}\n", selected);
  std::fflush(stdout);
  server->Wait();
  return 0;
}
