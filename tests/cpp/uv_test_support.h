// Shared helpers of the loop-level test binaries (those linked with the test copy of libuv).
#pragma once

#include <uv.h>

#include <cstdint>
#include <string>

namespace fa_test {

// Fill fa::uv from the libuv linked into (and exported by) this test binary. Idempotent; returns "" or the error.
std::string bind_uv();

// A TCP socket listening on 127.0.0.1 with an ephemeral port (not yet listen()ed: fa::Server::listen_fd does that).
// Returns the descriptor (or -1) and stores the port.
int bound_loopback_socket(int* port);

// A blocking client socket connected to 127.0.0.1:port with a receive timeout, or -1.
int connect_loopback(int port, int timeout_ms);

// Writes all of `data` (blocking). Returns false on error.
bool send_all(int fd, const char* data, std::size_t len);

}  // namespace fa_test
