// RequestParser: llhttp wrapped with the server's limits and the mapping from parse errors to HTTP statuses.
//
// Contract: callbacks into the ParserListener happen synchronously inside execute(); they never throw. A listener
// returns kContinue or kPause; after a pause, execute() reports how many bytes it consumed and the caller keeps the
// rest for later (resume() then execute() again).
#pragma once

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

#include "http/request.h"

namespace fa {

struct ParserLimits {
  std::size_t max_header_bytes = 16 * 1024;  // request line + header section, like h11's default -> 431
  std::size_t max_url_bytes = 8 * 1024;      // -> 414
  std::size_t max_headers = 100;             // -> 431
  // RFC 9112 section 3.2: an HTTP/1.1 request without exactly one valid Host header -> 400.
  bool require_host = true;
};

class ParserListener {
 public:
  static constexpr int kContinue = 0;
  static constexpr int kPause = 1;
  virtual ~ParserListener() = default;
  virtual void on_request_begin() = 0;
  virtual int on_request_head(RequestHead& head) = 0;
  virtual int on_request_body(const char* data, std::size_t len) = 0;
  virtual int on_request_complete() = 0;
};

struct ParseResult {
  enum Kind { kOk, kPaused, kUpgrade, kError } kind = kOk;
  std::size_t consumed = 0;
  int status = 0;              // for kError: the HTTP status to answer with (400, 414, 431, 501, 505)
  const char* reason = "";     // for kError: a short, log-friendly reason
};

class RequestParser {
 public:
  RequestParser(ParserListener* listener, const ParserLimits* limits);
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  ParseResult execute(const char* data, std::size_t len);
  void resume() { llhttp_resume(&parser_); }
  // Called when the peer closed the connection: reports a request cut short (kError) or kOk.
  ParseResult finish();
  bool message_in_progress() const { return in_message_; }
  RequestHead& head() { return head_; }
  const RequestHead& head() const { return head_; }

 private:
  static int cb_message_begin(llhttp_t* p);
  static int cb_url(llhttp_t* p, const char* at, std::size_t len);
  static int cb_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int cb_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int cb_header_value_complete(llhttp_t* p);
  static int cb_headers_complete(llhttp_t* p);
  static int cb_body(llhttp_t* p, const char* at, std::size_t len);
  static int cb_message_complete(llhttp_t* p);
  int fail(int status, const char* reason);

  llhttp_t parser_;
  ParserListener* listener_;
  const ParserLimits* limits_;
  RequestHead head_;
  std::size_t head_bytes_ = 0;
  bool in_value_ = false;
  bool in_message_ = false;
  bool in_trailers_ = false;  // the head was delivered: further fields are chunked trailers
  int error_status_ = 0;
  const char* error_reason_ = "";
};

}  // namespace fa
