#include "dataplane/server/admin_api.h"

#include "common/log.h"
#include "dataplane/config/runtime_config.h"
#include "dataplane/http/reply.h"
#include "filters/auth/auth_filter.h"
#include "filters/ratelimit/ratelimit_filter.h"

namespace eldric::server {

http::FilterHeadersStatus AdminApiFilter::decodeHeaders(http::RequestHeaders&, bool end_stream) {
  if (!end_stream) return http::FilterHeadersStatus::Continue;  // the body comes to decodeData
  dispatch("");
  return http::FilterHeadersStatus::StopIteration;
}

http::FilterDataStatus AdminApiFilter::decodeData(Buffer& data, bool end_stream) {
  if (!end_stream) return http::FilterDataStatus::StopIterationAndBuffer;
  dispatch(data.toString());
  data.clear();
  return http::FilterDataStatus::StopIterationNoBuffer;
}

void AdminApiFilter::dispatch(std::string body) {
  const auto& req = callbacks_->requestHeaders();
  std::shared_ptr<bool> alive = alive_;
  http::DecoderFilterCallbacks* cb = callbacks_;
  const std::string* credential =
      callbacks_->streamInfo().filter_state.get(http::kClientCredential);
  backend_.handle(
      req.method, std::string(req.pathOnly()), std::move(body),
      callbacks_->streamInfo().client_name, credential ? *credential : std::string(),
      callbacks_->dispatcher(), [alive, cb](AdminBackend::Reply reply) {
        // The client may have gone while the store worked.
        if (!*alive) return;
        if (reply.status >= 400) {
          cb->sendLocalReply(http::ErrorReply{
              reply.status, reply.body, http::defaultErrorType(reply.status), reply.error_code});
          return;
        }
        http::sendJsonReply(*cb, reply.status, std::move(reply.body));
      });
}

http::FilterHeadersStatus UsageApiFilter::decodeHeaders(http::RequestHeaders&, bool) {
  const auto& id = callbacks_->streamInfo().identity;
  if (!id) {
    callbacks_->sendLocalReply(
        http::ErrorReply{401, "usage is reported for an API key: send one", "authentication_error",
                         "missing_api_key"},
        [](http::ResponseHeaders& h) { h.headers.add("www-authenticate", "Bearer"); });
    return http::FilterHeadersStatus::StopIteration;
  }
  const auto& rl = config_.snapshot.rate_limits();
  auto cfg = filters::ratelimit::compileConfig(rl);
  uint64_t now = filters::ratelimit::nowSeconds();
  auto entry = state_->keys.get(id->client_id, now);
  uint64_t rpm = id->requests_per_window ? id->requests_per_window : cfg->per_key;
  uint64_t tpm = id->tokens_per_window ? id->tokens_per_window : cfg->per_key_tokens;
  uint64_t conc = id->max_concurrent ? id->max_concurrent : cfg->per_key_max_concurrent;
  uint64_t used = entry->requests.count(now);
  uint64_t tokens = entry->tokens.count(now);
  std::string out = "{\"client\":";
  log::appendJsonString(out, id->client_name);
  out += ",\"key_prefix\":";
  log::appendJsonString(out, id->key_prefix);
  out += ",\"window_seconds\":" + std::to_string(state_->windowSeconds());
  auto tier = [&](const char* name, uint64_t limit, uint64_t u,
                  filters::ratelimit::SlidingWindow& w) {
    out += ",\"";
    out += name;
    out += "\":{\"limit\":" + (limit ? std::to_string(limit) : std::string("null"));
    out += ",\"used\":" + std::to_string(u);
    out += ",\"remaining\":" +
           (limit ? std::to_string(u >= limit ? 0 : limit - u) : std::string("null"));
    out += ",\"reset_seconds\":" + std::to_string(w.secondsUntilEmpty(now)) + "}";
  };
  tier("requests", rpm, used, entry->requests);
  tier("tokens", tpm, tokens, entry->tokens);
  out += ",\"concurrency\":{\"limit\":" + (conc ? std::to_string(conc) : std::string("null")) +
         ",\"in_flight\":" + std::to_string(entry->in_flight.load()) + "}}";
  http::sendJsonReply(*callbacks_, 200, std::move(out));
  return http::FilterHeadersStatus::StopIteration;
}

}  // namespace eldric::server
