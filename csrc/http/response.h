// Response serialisation for HTTP/1.1: status line, header validation, framing (Content-Length, chunked or
// close-delimited) and its enforcement. Pure functions over an output string: no I/O here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "core/date_cache.h"

namespace fa {

// RFC 9110 token characters (header names).
bool is_valid_header_name(std::string_view name);
// No CR, LF or NUL, no other control characters except HTAB (header values).
bool is_valid_header_value(std::string_view value);
// The one check for headers that come from outside the server (the app, --header, native handlers): nullptr when
// `name: value` may go on the wire, else the error message.
const char* header_error(std::string_view name, std::string_view value);
// "HTTP/1.1 200 OK\r\n" for the common codes (cached), "HTTP/1.1 599 \r\n" otherwise. Empty for codes outside 100-999.
std::string_view status_line(int status, char (&scratch)[64]);
std::string_view reason_phrase(int status);

struct ResponseDefaults {
  // Pre-formatted "name: value\r\n" lines written first in every response (server header, --header values).
  std::string header_block;
  bool date_header = true;
};

// The state of one response on a connection. reset() before each request.
class ResponseState {
 public:
  enum Framing : std::uint8_t { kNone, kLength, kChunked, kUntilClose };

  void reset(bool head_request, bool keep_alive, bool http10) {
    head_request_ = head_request;
    keep_alive_ = keep_alive;
    http10_ = http10;
    started_ = complete_ = false;
    framing_ = kNone;
    content_length_ = 0;
    sent_ = 0;
    status_ = 0;
  }

  // Serialise the head. Returns nullptr, or an error message: then nothing was appended to `out` and the state is
  // as before the call (a later write_head, e.g. the server's 500, starts from scratch).
  const char* write_head(std::string& out, int status, const std::string_view* names, const std::string_view* values,
                         std::size_t count, const ResponseDefaults& defaults, DateCache& date);

  // Frame `len` body bytes: appends what goes before the body to `out`; `*emit` tells whether the body bytes
  // themselves go on the wire (false for HEAD, 204, 304, 1xx); `suffix` receives what goes after them.
  // Returns nullptr or an error ("Response content longer than Content-Length", ...).
  const char* frame_body(std::string& out, std::size_t len, bool more_body, bool* emit, std::string_view* suffix);

  // The server answered the request itself (write_error_response): the response is complete and the connection
  // closes after it.
  void set_answered(int status) {
    status_ = status;
    started_ = complete_ = true;
    keep_alive_ = false;
  }

  bool head_request() const { return head_request_; }
  bool started() const { return started_; }
  bool complete() const { return complete_; }
  bool keep_alive() const { return keep_alive_; }
  bool http10() const { return http10_; }
  void set_keep_alive(bool v) { keep_alive_ = v; }
  int status() const { return status_; }
  std::uint64_t body_bytes() const { return sent_; }

 private:
  bool head_request_ = false;
  bool keep_alive_ = true;
  bool http10_ = false;
  bool started_ = false;
  bool complete_ = false;
  Framing framing_ = kNone;
  bool no_body_ = false;
  int status_ = 0;
  std::uint64_t content_length_ = 0;
  std::uint64_t sent_ = 0;
};

// The header lines every response carries: the pre-formatted default block (server, --header) and `date`.
void append_default_headers(std::string& out, const ResponseDefaults& defaults, DateCache& date);

// The one writer of the server's own responses: a complete minimal response with a text/plain `body` (left out
// for HEAD, its Content-Length kept), the default headers, `extra_headers` (pre-formatted "name: value\r\n"
// lines, validated by the caller) and `connection: close`.
void write_error_response(std::string& out, int status, std::string_view body, std::string_view extra_headers,
                          bool head_request, const ResponseDefaults& defaults, DateCache& date);

// "<n>" in decimal, without snprintf.
void append_decimal(std::string& out, std::uint64_t n);

}  // namespace fa
