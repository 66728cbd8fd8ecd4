// Answering a native route inside the read callback: the built-in handlers (static bytes, health, metrics), the
// 405 answer, and the dispatch to user handlers (native_abi.h). No Python, no GIL; in steady state no allocation.
#pragma once

#include <string_view>

#include "http/router.h"

namespace fa {

class HttpStream;

// Write the response of `route` for the current request of `c` into its output; `params` are those of the one
// match, `body` the request body. Records the route's statistics on the server. Never throws. Returns the status.
int run_native_route(HttpStream& c, const NativeRoute& route, const RouteParams& params, std::string_view body);

// 405 with `allow` (the methods the path accepts). Returns 405.
int answer_method_not_allowed(HttpStream& c, std::string_view allow);

}  // namespace fa
