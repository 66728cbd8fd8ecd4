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

#include <utility>
#include <vector>

namespace fa_test {

struct HttpResponse {
  std::string raw;  // the exact bytes of this response
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // as sent
  std::string body;                                          // de-chunked
  std::string header(const std::string& lower_name) const;
};

// Reads one response from a blocking socket; `pending` holds bytes read ahead (pipelining). A response to HEAD has
// no body whatever its headers say. A response without length that is not chunked is read until EOF. Returns "" or
// an error ("eof" when the peer closed before any byte of a response).
std::string read_response(int fd, std::string& pending, bool head_request, HttpResponse* out);

// True when the peer closes the connection (EOF) within the socket's receive timeout, nothing else arriving.
bool reads_eof(int fd, std::string& pending);

// "HTTP/1.1 200 OK\r\n...date: <date>\r\n..." : the raw response with the value of its date header replaced by
// "<date>", after checking it is an IMF-fixdate. Returns "" on a malformed date.
std::string with_date_masked(const std::string& raw);

}  // namespace fa_test
