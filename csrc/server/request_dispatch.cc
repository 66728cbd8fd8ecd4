#include "server/request_dispatch.h"

#include <llhttp.h>

#include "server/app_handler.h"
#include "server/http_stream.h"
#include "server/native_handlers.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

namespace {
const RouteParams kNoParams;
}  // namespace

Dispatch dispatch_request(Server& server, HttpStream& stream, const RequestHead& head, NativeRequest& native) {
  native.end();
  // --limit-concurrency, with uvicorn's rule: a request arriving while the open connections or the requests in
  // progress reach the limit is answered 503 (its access line logged, as uvicorn logs the 503).
  const std::size_t limit = server.config().limit_concurrency;
  if (limit > 0 && (server.connection_count() >= limit || server.active_requests() >= limit)) {
    stream.answer_error(503, "Service Unavailable");
    server.handler()->on_over_limit(stream);
    server.handler()->on_native_response(stream, 503);
    return Dispatch::kOverLimit;
  }
  const Router& router = server.router();
  if (router.empty()) return Dispatch::kApp;
  const std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(head.method));
  // The one match: the parameters found here are the ones the native handler gets. The server's scratch (one
  // loop, one thread): a RouteParams on the stack (16 views zero-initialised per request) and a thread_local one
  // (a __tls_get_addr call in a shared object) both cost native requests.
  RouteParams& params = server.route_params_scratch_;
  Router::Match m;
  {
    StageScope route_stage(kStageRoute);
    m = router.match(method, head.path_view(), &native.route, &params, &native.allow);
  }
  if (m == Router::Match::kNone) return Dispatch::kApp;
  // Kept for the handler only when there are any, in storage made once per owner that needs it. NOTE: a
  // RouteParams inline in every Connection cost 260 bytes per idle connection (benchmarks/stress.py idle: 1.6 ->
  // 1.9 KB).
  if (m == Router::Match::kFound && params.count > 0) {
    if (native.params == nullptr) native.params = std::make_unique<RouteParams>();
    *native.params = params;
  } else if (native.params != nullptr) {
    native.params->count = 0;
  }
  native.method_not_allowed = m == Router::Match::kMethodNotAllowed;
  if (native.method_not_allowed) native.route = nullptr;
  native.body.clear();
  return Dispatch::kNative;
}

bool take_native_body(NativeRequest& native, const char* data, std::size_t len) {
  if (native.method_not_allowed) return true;  // a 405 does not read its body: dropped, never buffered
  if (native.body.size() + len > kNativeMaxBody) return false;
  native.body.append(data, len);
  return true;
}

int run_native_request(HttpStream& stream, const NativeRequest& native) {
  StageScope native_stage(kStageNative);
  if (native.method_not_allowed) return answer_method_not_allowed(stream, native.allow);
  return run_native_route(stream, *native.route, native.params != nullptr ? *native.params : kNoParams,
                          native.body);
}

void count_native_response(Server& server, HttpStream& stream, const NativeRoute* route, int status,
                           std::uint64_t start_ns) {
  if (route != nullptr && route->sends_file())
    server.route_stats(route->id).record(static_cast<double>(monotonic_ns() - start_ns) / 1000.0);
  server.handler()->on_native_response(stream, status);
  server.counters().requests++;
  server.counters().native_requests++;
  if (status >= 500) server.counters().responses_5xx++;
}

}  // namespace fa
