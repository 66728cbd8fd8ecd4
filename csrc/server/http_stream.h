// HttpStream: one request/response exchange as the AppHandler and the native handlers see it. Over HTTP/1.1 it is
// the connection's Http1Session (one request at a time); over HTTP/2 it is an H2Stream, many per connection. Whoever
// answers a request (the bindings, a native route) talks to this interface only; the wire format behind it is
// HTTP/1.1 framing or HTTP/2 frames.
//
// Lifetime: an Http1Session lives as long as its Connection (until its handles close); an H2Stream until its HTTP/2 stream is closed *and* no
// exchange is attached any more (AppHandler::on_disconnect / detach). Every method runs on the loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "http/request.h"

namespace fa {

class Connection;
class Server;

class HttpStream {
 public:
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;

  // Start the response: status, the server's default headers and `count` headers (validated: nothing invalid
  // reaches the wire), framing. Returns nullptr, or an error message with nothing written and the response not
  // started.
  virtual const char* start_response(int status, const std::string_view* names, const std::string_view* values,
                                     std::size_t count) = 0;
  // Body bytes of the started response; `data` is referenced only during the call. more=false completes the
  // response (the caller then calls finish_response()). Returns nullptr, or an error (e.g. longer than
  // Content-Length).
  virtual const char* write_body(const char* data, std::size_t len, bool more) = 0;
  // Answer with the server's own complete response (text/plain `body`, none for HEAD; `extra_headers`
  // pre-formatted "name: value\r\n" lines, trusted). `server_headers` false leaves out the default block (server
  // header, --header values). The caller then calls finish_response().
  virtual void answer_error(int status, std::string_view body, std::string_view extra_headers = {},
                            bool server_headers = true) = 0;
  // A complete response whose headers are pre-formatted "name: value\r\n" lines, already validated (native routes):
  // default headers, `headers`, content-length when `with_length`, body (left out for HEAD).
  virtual void write_response(int status, std::string_view headers, std::string_view body, bool with_length) = 0;
  // The whole body of the started response is the file open at `fd` (`size` bytes from `offset`); the stream takes
  // the descriptor. AppHandler::on_file_sent() follows when it is out. Returns nullptr, or an error (nothing sent).
  virtual const char* send_file(int fd, std::uint64_t size, std::uint64_t offset = 0) = 0;
  virtual bool sending_file() const = 0;
  virtual bool response_started() const = 0;
  // Bytes of this response's output not yet taken by the peer's socket (HTTP/2: and by its flow-control window).
  virtual std::size_t write_queue_bytes() const = 0;
  // Ask for AppHandler::on_drain() once this stream's queued output falls below the low-water mark. Returns false
  // when already below it.
  virtual bool want_drain() = 0;
  // The response is complete: count it and let the transport go on (next request, or the stream closes).
  virtual void finish_response() = 0;
  // The handler took the body it paused for (AppHandler::on_body returned true): take up more.
  virtual void resume() = 0;
  // Send "100 Continue" if the request asked for it and it was not sent yet.
  virtual void send_continue() = 0;
  // Abort the exchange: HTTP/1.1 closes the connection; HTTP/2 resets this stream (RST_STREAM INTERNAL_ERROR).
  virtual void close() = 0;
  // Send what is buffered, then abort as close() does (a response that cannot be completed).
  virtual void close_after_output() = 0;
  // The exchange can no longer send anything (connection closing, stream reset).
  virtual bool closing() const = 0;
  // ASGI's http.response.trailers extension (offered on HTTP/2 only): after start_response(), announce that the
  // response ends with trailers instead of with its last body bytes. Returns whether it will (false: ignored).
  virtual bool expect_trailers() { return false; }
  // The trailer fields (validated like headers); more=false completes the response (the caller then calls
  // finish_response()). Returns nullptr, or an error message.
  virtual const char* write_trailers(const std::string_view* names, const std::string_view* values, std::size_t count,
                                     bool more) {
    (void)names, (void)values, (void)count, (void)more;
    return "Response trailers are not supported on this connection.";
  }

  const RequestHead& head() const { return *head_; }
  // The connection: peer and local addresses, TLS, the per-connection app data, the WebSocket session.
  Connection& connection() const { return *connection_; }
  Server* server() const { return server_; }
  std::uint64_t request_start_ns() const { return request_start_ns_; }

  // Per-request state owned by the AppHandler (a Python object in the bindings). Opaque to the core.
  void* exchange = nullptr;

 protected:
  HttpStream(Server* server, Connection* connection, const RequestHead* head)
      : server_(server), connection_(connection), head_(head) {}
  ~HttpStream() = default;

  Server* server_;
  Connection* connection_;
  const RequestHead* head_;
  std::uint64_t request_start_ns_ = 0;
};

}  // namespace fa
