#include "dataplane/server/webchat_handler.h"

#include <cstring>
#include <unordered_map>

#include "dataplane/config/runtime_config.h"
#include "webchat/assets.h"

namespace eldric::server {
namespace {

constexpr const char* kCsp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src "
    "'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

void securityHeaders(http::ResponseHeaders& h) {
  h.headers.add("content-security-policy", kCsp);
  h.headers.add("x-content-type-options", "nosniff");
  h.headers.add("referrer-policy", "no-referrer");
  h.headers.add("x-frame-options", "DENY");
}

// The asset's bytes in a slab of this worker's, made on first use and
// shared by reference by every response after it: a client that pipelines
// hundreds of requests for an asset holds references, not copies. Slabs
// are counted without atomics, so each worker thread has its own.
void addAsset(Buffer& out, std::string_view body) {
  if (body.empty()) return;
  thread_local std::unordered_map<const char*, SlabRef> slabs;
  SlabRef& slab = slabs[body.data()];
  if (!slab) {
    slab = SlabRef(Slab::create(body.size()));
    memcpy(slab->data(), body.data(), body.size());
  }
  out.addSlice(slab, 0, static_cast<uint32_t>(body.size()));
}

}  // namespace

void WebchatFilter::redirect(const char* location) {
  auto h = std::make_unique<http::ResponseHeaders>();
  h->status = 302;
  h->headers.add("location", location);
  h->headers.add("cache-control", "no-store");
  h->headers.add("content-length", "0");
  securityHeaders(*h);
  callbacks_->encodeHeaders(std::move(h), true);
}

http::FilterHeadersStatus WebchatFilter::decodeHeaders(http::RequestHeaders& req, bool end_stream) {
  std::string_view path = req.pathOnly();
  if (path == "/") {
    redirect("/chat");
    return http::FilterHeadersStatus::StopIteration;
  }
  if (path == "/chat" && config_.snapshot.auth().require_api_key() &&
      !callbacks_->streamInfo().identity) {
    redirect("/login");
    return http::FilterHeadersStatus::StopIteration;
  }
  const webchat::Asset* asset = webchat::find(path);
  if (!asset) {
    callbacks_->sendLocalReply(http::ErrorReply{404, "no such file: " + std::string(path),
                                                "invalid_request_error", "not_found"});
    return http::FilterHeadersStatus::StopIteration;
  }
  auto h = std::make_unique<http::ResponseHeaders>();
  h->headers.add("content-type", asset->content_type);
  h->headers.add("etag", asset->etag);
  // Pages always revalidate (they name the current assets); content-hashed
  // assets never change, so they may be kept for a year.
  h->headers.add("cache-control",
                 asset->immutable ? "public, max-age=31536000, immutable" : "no-cache");
  h->headers.add("vary", "accept-encoding");
  securityHeaders(*h);
  std::optional<std::string_view> inm = req.headers.get("if-none-match");
  if (inm && *inm == asset->etag) {
    h->status = 304;
    callbacks_->encodeHeaders(std::move(h), true);
    return http::FilterHeadersStatus::StopIteration;
  }
  std::optional<std::string_view> ae = req.headers.get("accept-encoding");
  bool gzip = !asset->gzip_body.empty() && ae && http::listHasToken(*ae, "gzip");
  std::string_view body = gzip ? asset->gzip_body : asset->body;
  if (gzip) h->headers.add("content-encoding", "gzip");
  h->headers.add("content-length", std::to_string(body.size()));
  h->status = 200;
  Buffer data;
  addAsset(data, body);
  callbacks_->encodeHeaders(std::move(h), false);
  callbacks_->encodeData(data, true);
  return http::FilterHeadersStatus::StopIteration;
}

}  // namespace eldric::server
