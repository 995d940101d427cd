// The NAT tunnel's endpoints on what a worker or router may send: the
// path after /api/v1/tunnel/, the x-eldric-status header of an answer and
// the body (a connect's JSON, a forward's request, an answer in pieces),
// against one service kept across inputs (tunnels pile up to their
// limits). Nothing may crash; every refusal is OpenAI-shaped.
//
// Input: [endpoint][scopes][status length][status][path length][path][cut count][cuts...][body]

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "dataplane/http/route.h"
#include "filters/tunnel/tunnel.h"
#include "test/fuzz/fuzz_util.h"
#include "test/unit/fake_stream.h"

namespace {

std::string take(eldric::fuzz::InputReader& in, size_t n) {
  std::string out;
  while (n-- > 0 && in.remaining() > 0) out.push_back(static_cast<char>(in.byte()));
  return out;
}

int fuzzOne(const uint8_t* data, size_t size) {
  using namespace eldric;
  static auto service = std::make_shared<filters::tunnel::TunnelService>();
  static std::string last_tunnel = "0";
  fuzz::InputReader in(data, size);
  uint8_t endpoint = in.byte();
  uint8_t scopes = in.byte();
  std::string status = take(in, in.byte() % 8);
  std::string tail = take(in, in.byte() % 64);
  std::string_view body;
  std::vector<std::string_view> pieces = fuzz::splitStream(in, &body);

  static const char* const kPaths[] = {"connect", "workers",    "poll",
                                       "forward", "disconnect", "response/"};
  std::string path = "/api/v1/tunnel/";
  const char* what = kPaths[endpoint % 6];
  if (endpoint % 6 >= 2) path += (endpoint & 0x80 ? tail : last_tunnel) + "/";
  path += what;
  if (endpoint % 6 == 5) path += tail;
  if (endpoint & 0x40) path += "/" + tail;  // extra segments

  test::FakeStream stream;
  stream.matched_route.name = "tunnel";
  stream.request.method = endpoint & 0x20 ? "GET" : "POST";
  stream.request.path = path;
  if (!status.empty()) stream.request.headers.add("x-eldric-status", status);
  if (scopes & 1) {
    auto who = std::make_shared<http::ClientIdentity>();
    who->client_id = "c1";
    who->key_prefix = scopes & 2 ? "sk-a" : "sk-b";
    who->scopes = static_cast<uint32_t>(scopes & 0x1e);
    stream.info.identity = who;
  }
  stream.addFilters(filters::tunnel::makeFactory(service));
  stream.decodeHeaders(body.empty());
  for (size_t i = 0; i < pieces.size(); ++i) {
    stream.decodeData(pieces[i], i + 1 == pieces.size());
  }
  // A refusal is an OpenAI-shaped error.
  if (stream.responseStatus() >= 400 && !stream.responseError()) abort();
  if (stream.responseStatus() == 200 && endpoint % 6 == 0 && stream.response_body.size() > 16) {
    size_t at = stream.response_body.find("\"tunnel_id\":\"");
    if (at != std::string::npos) last_tunnel = stream.response_body.substr(at + 13, 32);
  }
  return 0;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  eldric::fuzz::runOnSmallStack([&] { fuzzOne(data, size); });
  return 0;
}
