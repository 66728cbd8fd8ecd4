// The request dispatcher: what happens to a request once its head is complete, the same for an HTTP/1.1
// connection and an HTTP/2 stream. --limit-concurrency, the native route match (or its 405), the native route's
// body and answer, and the counters of a native answer live here; the protocol objects keep only what differs
// (HTTP/1.1 closes its connection after a 503 and writes 100-continue inline; HTTP/2 answers on the stream and
// submits 100-continue as a HEADERS frame).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "http/request.h"
#include "http/router.h"

namespace fa {

class HttpStream;
class Server;

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

// The one decision for a complete request head. For kNative and kApp the caller counts the request in flight.
Dispatch dispatch_request(Server& server, HttpStream& stream, const RequestHead& head, NativeRequest& native);

// Body bytes of a native request (dropped for a 405); false past kNativeMaxBody (the caller answers 413).
bool take_native_body(NativeRequest& native, const char* data, std::size_t len);

// Answer a native request whose body is complete: the route's handler, or the 405. Returns the status.
int run_native_request(HttpStream& stream, const NativeRequest& native);

// After a native answer is complete: the access line, the counters, and a file route's timing
// (`start_ns`: when the request began, monotonic_ns()).
void count_native_response(Server& server, HttpStream& stream, const NativeRoute* route, int status,
                           std::uint64_t start_ns);

}  // namespace fa
