// The request dispatcher: what happens to a request once its head is complete, the same for an HTTP/1.1
// connection and an HTTP/2 stream. --limit-concurrency, the native route match (or its 405), the native route's
// body and answer, and the counters of a native answer live here; the protocol objects keep only what differs
// (HTTP/1.1 closes its connection after a 503 and writes 100-continue inline; HTTP/2 answers on the stream and
// submits 100-continue as a HEADERS frame).
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/request.h"
#include "http/router.h"
#include "server/app_handler.h"
#include "server/http_stream.h"
#include "server/native_handlers.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

// A request answered by a native route: what the match found, the body the route gets. Owned by the protocol
// object that carries the request (a Connection reuses its one for every request; an H2Stream has its own).
// `route` and `params` are views into that request's head: valid until the next request begins on the owner.
struct NativeRequest {
  const NativeRoute* route = nullptr;
  bool method_not_allowed = false;       // the path matched, not the method: 405 with `allow`
  std::unique_ptr<RouteParams> params;   // made on the first parameterised match, then reused
  std::string body;
  std::string allow;
  bool active() const { return route != nullptr || method_not_allowed; }
  // The native part of the request is over (answered, refused or given up): it no longer takes body bytes.
  void end() {
    route = nullptr;
    method_not_allowed = false;
  }
};

// Native route bodies: at most this much per request (413 past it).
constexpr std::size_t kNativeMaxBody = 1 << 20;

enum class Dispatch : std::uint8_t {
  kOverLimit,  // --limit-concurrency: 503 answered on the stream, logged and counted; nothing else to do here
  kNative,     // a native route or its 405: `native` filled; answer with run_native_request() once the body is complete
  kApp,        // the AppHandler's (the caller hands it over with on_request)
};

// --limit-concurrency's refusal: 503 answered on the stream, logged and counted. (Cold: out of line.)
void refuse_over_limit(Server& server, HttpStream& stream);

// The functions below run on every request (the first) or every native request: inline, because a call across
// files costs a native request about 1.5% of its instructions (callgrind, native_app).

// The native route table's answer for the request: kNative (`native` filled) or kApp.
inline Dispatch match_native_route(Server& server, const RequestHead& head, NativeRequest& native) {
  const std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(head.method));
  // The one match: the parameters found here are the ones the native handler gets. The server's scratch (one
  // loop, one thread): a RouteParams on the stack (16 views zero-initialised per request) and a thread_local one
  // (a __tls_get_addr call in a shared object) both cost native requests.
  RouteParams& params = server.route_params_scratch();
  Router::Match m;
  {
    StageScope route_stage(kStageRoute);
    m = server.router().match(method, head.path_view(), &native.route, &params, &native.allow);
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

// The one decision for a complete request head. `native` is inactive (new, or ended after its owner's last
// request). For kNative and kApp the caller counts the request in flight.
inline Dispatch dispatch_request(Server& server, HttpStream& stream, const RequestHead& head,
                                 NativeRequest& native) {
  // --limit-concurrency, with uvicorn's rule: a request arriving while the open connections or the requests in
  // progress reach the limit is answered 503 (its access line logged, as uvicorn logs the 503).
  const std::size_t limit = server.config().limit_concurrency;
  if (limit > 0 && (server.connection_count() >= limit || server.active_requests() >= limit)) {
    refuse_over_limit(server, stream);
    return Dispatch::kOverLimit;
  }
  if (server.router().empty()) return Dispatch::kApp;
  return match_native_route(server, head, native);
}

// Body bytes of a native request (dropped for a 405); false past kNativeMaxBody (the caller answers 413).
inline bool take_native_body(NativeRequest& native, const char* data, std::size_t len) {
  if (native.method_not_allowed) return true;  // a 405 does not read its body: dropped, never buffered
  if (native.body.size() + len > kNativeMaxBody) return false;
  native.body.append(data, len);
  return true;
}

// Answer a native request whose body is complete: the route's handler, or the 405. Returns the status.
inline int run_native_request(HttpStream& stream, const NativeRequest& native) {
  static const RouteParams no_params;
  StageScope native_stage(kStageNative);
  if (native.method_not_allowed) return answer_method_not_allowed(stream, native.allow);
  return run_native_route(stream, *native.route, native.params != nullptr ? *native.params : no_params,
                          native.body);
}

// After a native answer is complete: the access line, the counters, and a file route's timing
// (`start_ns`: when the request began, monotonic_ns()).
inline void count_native_response(Server& server, HttpStream& stream, const NativeRoute* route, int status,
                                  std::uint64_t start_ns) {
  if (route != nullptr && route->sends_file())
    server.route_stats(route->id).record(static_cast<double>(monotonic_ns() - start_ns) / 1000.0);
  server.handler()->on_native_response(stream, status);
  ServerCounters& counters = server.counters();
  counters.requests++;
  counters.native_requests++;
  if (status >= 500) counters.responses_5xx++;
}

}  // namespace fa
