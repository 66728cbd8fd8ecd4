// The native directory and disk-file routes (NativeRoute::kDirectory, kDiskFile): resolve, open, answer the head
// (200, 206, 304, 307, 404, 416) and hand the descriptor to HttpStream::send_file(). No Python, no GIL.
#pragma once

#include "http/router.h"

namespace fa {

class HttpStream;

// Answer the current request of `c` (GET or HEAD) from `route.files`. When a body follows, the file is being sent
// when this returns (c.sending_file()) and the request completes when it is out; else the answer is complete.
// Blocking file-system calls (openat, fstat) run on the loop thread, as the sendfile(2) calls do. Never throws.
// Returns the status.
int run_static_route(HttpStream& c, const NativeRoute& route) noexcept;

}  // namespace fa
