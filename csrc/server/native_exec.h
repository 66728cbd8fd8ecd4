// Answering a native route inside the read callback: built-in handlers and user C handlers. No Python, no GIL.
#pragma once

#include <string>

#include "http/router.h"

namespace fa {

class Connection;

// Serialise the response for `route` into c.out(). `allow` is used for 405 answers; `body` is the request body.
// Never throws: a C++ exception from a user handler becomes a 500.
// Returns the status code answered.
int execute_native_route(Connection& c, const NativeRoute& route, const std::string& allow, const std::string& body);

// Prometheus text exposition of the server's counters and per-route metrics.
std::string render_metrics(class Server& server);

}  // namespace fa
