// The adapter between the core and user native handlers written against the public C ABI
// (csrc/include/fasterapi_asgi/native.h): request views in, a response built through fa_response_api out.
// Runs inside the read callback, without the GIL.
#pragma once

#include <string_view>

#include "http/router.h"

namespace fa {

class HttpStream;

// Call route.fn for the current request of `c` with the parameters of the one match and `body`, and write its
// response. Never throws: a C++ exception or a non-zero return from the handler, or an invalid status, becomes a
// 500. Returns the status answered. Views handed to the handler are valid only during the call.
int run_user_handler(HttpStream& c, const NativeRoute& route, const RouteParams& params, std::string_view body);

}  // namespace fa
