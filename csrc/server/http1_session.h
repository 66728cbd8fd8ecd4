// Http1Session: HTTP/1.x on one connection. It parses requests (llhttp, one at a time; pipelined ones wait), hands
// each to the request dispatcher (native route or app), and is the HttpStream the AppHandler answers through: it owns
// the wire format of what it sends (status line, the server's default headers, validation, framing). Its time
// bounds: the request head (--timeout-request-header), the body (--timeout-request-body) and keep-alive.
//
// A WebSocket handshake is an HTTP/1.1 request: this session holds it (its head, its exchange) for the whole
// WebSocket session, which takes over the connection's input once the app accepts (Connection::ws_accept).
//
// Lifetime: a member of its Connection; every method runs on the loop thread.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "http/response.h"
#include "server/http_stream.h"
#include "server/request_dispatch.h"
#include "server/session.h"

namespace fa {

class Connection;
class Transport;
struct NativeRoute;

class Http1Session final : public HttpStream, public ParserListener, public Session {
 public:
  Http1Session(Server* server, Connection* connection, Transport& transport);

  // ---- HttpStream: the response to the current request ----
  // Start the response: status line, the server's default headers, `count` headers (validated: nothing invalid
  // reaches the wire) and framing (Content-Length enforced, else chunked, else close-delimited for HTTP/1.0; no
  // body for HEAD, 1xx, 204, 304). The head is held until the first body bytes so that both leave in one write.
  const char* start_response(int status, const std::string_view* names, const std::string_view* values,
                             std::size_t count) override;
  // A streamed chunk is corked to the end of the loop turn; a large one goes to the socket by reference.
  const char* write_body(const char* data, std::size_t len, bool more) override;
  // The server's own complete response (connection: close). `server_headers` false leaves out the default block
  // (server header, --header values), as uvicorn does for a refused WebSocket handshake; `date` stays.
  void answer_error(int status, std::string_view body, std::string_view extra_headers = {},
                    bool server_headers = true) override;
  void write_response(int status, std::string_view headers, std::string_view body, bool with_length) override;
  bool response_started() const override { return response_.started(); }
  bool response_complete() const { return response_.complete(); }
  int response_status() const { return response_.status(); }
  std::size_t write_queue_bytes() const override;
  // The body is the file at `fd` (the Transport sends it: sendfile(2), or read and encrypted over TLS). When it is
  // out, AppHandler::on_file_sent() follows (or, for a native file route, the request completes).
  const char* send_file(int fd, std::uint64_t size, std::uint64_t offset = 0) override;
  bool sending_file() const override;
  // The current response is complete: count it, then close (keep-alive off) or go on with the next request.
  void finish_response() override;
  // Body consumed / response done: restart parsing buffered input and reading.
  void resume() override;
  // Ask for on_drain() once queued writes fall below the low-water mark. Returns false when already below it
  // (after handing the buffered output to libuv: only bytes libuv queued are waited for, so an on_write follows).
  bool want_drain() override;
  void send_continue() override;
  void close() override;
  void close_after_output() override;
  bool closing() const override;

  // ---- Session ----
  void receive(char* data, std::size_t len) override;
  void output_progress(bool drained) override;
  std::uint64_t check_timeouts(std::uint64_t now) override;
  void close_when_idle() override;
  void connection_lost() override;
  void flush() override;

  // The connection waits for a request from now (keep-alive; also after accept and the TLS handshake).
  void arm_keep_alive();
  // The socket took the queued output down to the low-water mark: a send() waiting for it (want_drain) goes on.
  void notify_drained();
  // The Transport's file is out (its framing suffix is in the output buffer).
  void on_file_sent();
  bool in_flight() const { return in_flight_; }
  // Bytes read after the head but not parsed yet (the parser is paused); the WebSocket session takes them.
  std::string take_held_input();

  // ---- the WebSocket handshake this session holds ----
  bool ws_handshake_open() const { return upgrade_ == kUpgradePending; }
  // The app accepted: from now on the connection's input is the WebSocket session's. The 101 response's status.
  void ws_accepted() {
    upgrade_ = kUpgradeAccepted;
    response_.set_answered(101);
  }

 private:
  // ParserListener
  void on_request_begin() override;
  int on_request_head(RequestHead& head) override;
  int on_request_body(const char* data, std::size_t len) override;
  int on_request_complete() override;

  void process(char* data, std::size_t len);
  // Bytes that wait while parsing is paused (bounded: reading stops past --body-high-water).
  void hold(const char* data, std::size_t len);
  // Output above the high-water mark: stop taking up input (the next pipelined request) until output_progress()
  // sees it drain below the low-water mark. Returns whether it blocked.
  bool block_on_output();
  // A request that cannot be parsed or served: count and log it, answer `status`, close.
  void reject_request(int status, const char* reason);
  int start_websocket(const RequestHead& head);
  void refuse_websocket(int status, const std::string& body, std::string_view extra_headers);
  void answer_native();
  // The native request is answered (its file, if any, is out): log line, counters, route statistics, then
  // keep-alive or close.
  void finish_native(int status, const NativeRoute* route);

  Transport& transport_;
  RequestParser parser_;
  ResponseState response_;
  HeldInput held_;  // bytes read but not parsed yet (parser paused: pipelining, body backpressure, a handshake)
  // The current request when a native route (or its 405) answers it (request_dispatch.h): reused for every
  // request of the connection.
  NativeRequest native_;
  // A native route whose answer is a file (static_route.cc) completes when the file is out (on_file_sent()): until
  // then the request stays in flight, the parser paused (no pipelined request is read) and no keep-alive armed.
  const NativeRoute* native_file_route_ = nullptr;
  int native_file_status_ = -1;  // -1 while the route runs; then the status it answered
  enum Upgrade : std::uint8_t { kUpgradeNone, kUpgradePending, kUpgradeAccepted };
  Upgrade upgrade_ = kUpgradeNone;  // a WebSocket handshake: waiting for the app, then accepted
  bool in_flight_ = false;
  bool close_after_response_ = false;
  bool continue_pending_ = false;
  bool drain_wanted_ = false;
  bool output_blocked_ = false;  // block_on_output(): input waits for the output to drain
  bool idle_ = false;            // no request in progress since the last response
  bool reading_head_ = false;    // a request head has begun and is not complete
  bool parsing_ = false;         // inside parser_.execute()
  std::uint64_t idle_since_ms_ = 0;
  std::uint64_t head_started_ms_ = 0;
  std::uint64_t last_body_ms_ = 0;  // last request-body bytes (or the head) of the request being read
  static constexpr std::uint64_t kFreshShutdownGraceMs = 500;
  // Body chunks from this size on go to the socket by reference instead of being copied into the output buffer.
  static constexpr std::size_t kZeroCopyThreshold = 16 * 1024;
};

}  // namespace fa
