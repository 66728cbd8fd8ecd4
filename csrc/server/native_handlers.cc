#include "server/native_handlers.h"

#include <string>

#include "server/connection.h"
#include "server/metrics.h"
#include "server/native_abi.h"
#include "server/server.h"
#include "server/static_route.h"

namespace fa {

namespace {

constexpr std::string_view kTextPlain = "content-type: text/plain; charset=utf-8\r\n";

// Reused by every native request on this thread (405 headers, metrics text): no allocation in steady state.
thread_local std::string t_scratch;

}  // namespace

int answer_method_not_allowed(HttpStream& c, std::string_view allow) {
  std::string& h = t_scratch;
  h.assign("allow: ");
  h.append(allow);
  h.append("\r\n");
  h.append(kTextPlain);
  c.write_response(405, h, "Method Not Allowed", true);
  return 405;
}

int run_native_route(HttpStream& c, const NativeRoute& route, const RouteParams& params, std::string_view body) {
  Server& server = *c.server();
  int status = route.status;
  switch (route.kind) {
    case NativeRoute::kStatic:
      // Headers (content-length included) were formatted once when the route was added.
      c.write_response(route.status, route.headers, route.body, false);
      break;
    case NativeRoute::kHealth:
      status = server.shutting_down() ? 503 : 200;
      c.write_response(status, kTextPlain,
                       status == 503 ? std::string_view("shutting down") : std::string_view(route.body), true);
      break;
    case NativeRoute::kMetrics:
      t_scratch = render_metrics(server);
      c.write_response(200, "content-type: text/plain; version=0.0.4; charset=utf-8\r\n", t_scratch, true);
      status = 200;
      break;
    case NativeRoute::kUser:
      status = run_user_handler(c, route, params, body);
      break;
    case NativeRoute::kDirectory:
    case NativeRoute::kDiskFile:
      // Statistics when the file is out (Http1Session::finish_native()).
      return run_static_route(c, route);
  }
  server.route_stats(route.id).record(static_cast<double>(monotonic_ns() - c.request_start_ns()) / 1000.0);
  return status;
}

}  // namespace fa
