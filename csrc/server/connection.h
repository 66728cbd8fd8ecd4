// Connection: one accepted stream (TCP or Unix) with its parser, keep-alive timer and corked output.
//
// Lifecycle (libuv rules): created on accept; close() closes both handles; the object is deleted in the second close
// callback, never earlier. Every method runs on the loop thread. Callbacks into the AppHandler may run without the GIL;
// the handler acquires it when it needs Python.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/parser.h"
#include "http/response.h"
#include "http/websocket.h"

namespace fa {

class Server;
class Connection;
struct NativeRoute;

// What the bindings implement to hand requests to the ASGI app. All calls happen inside libuv callbacks or inside
// calls the handler itself made into the connection.
class AppHandler {
 public:
  virtual ~AppHandler() = default;
  // A request head arrived that no native route answers. The handler keeps per-request state in c.exchange and must
  // eventually call c.finish_response() (or c.close()).
  virtual void on_request(Connection& c, const RequestHead& head) = 0;
  // Body bytes of the current request. Return true to pause reading until the handler calls c.resume().
  virtual bool on_body(Connection& c, const char* data, std::size_t len) = 0;
  virtual void on_body_complete(Connection& c) = 0;
  // The client went away (or the connection is being closed) while a request was in flight.
  virtual void on_disconnect(Connection& c) = 0;
  // The write queue drained below the low-water mark after c.want_drain() was called.
  virtual void on_drain(Connection& c) = 0;
  // The connection's handles are closed; drop anything kept in c.exchange. Called exactly once, before deletion.
  virtual void on_closed(Connection& c) = 0;
  // End of one libuv callback that may have called into the handler (a place to release a batched GIL).
  virtual void on_callback_end() {}
  // A request was refused with 503 because of --limit-concurrency (for logging).
  virtual void on_over_limit(Connection& c) = 0;
  // A native route answered the current request with `status` (for the access log; must be cheap when off).
  virtual void on_native_response(Connection& c, int status) = 0;
  // A request could not be parsed; `status` is being sent. For logging.
  virtual void on_bad_request(Connection& c, int status, const char* reason) = 0;

  // ---- WebSocket (only with ServerConfig::websocket; otherwise upgrade requests are answered as plain HTTP) ----
  // A valid opening handshake arrived. Like on_request: the handler keeps its state in c.exchange and answers either
  // by writing the 101 head to c.out() and calling c.ws_accept(), or with an HTTP response and c.finish_response().
  virtual void on_websocket(Connection& c, const RequestHead& head) { on_request(c, head); }
  // A complete message (text is valid UTF-8). Return true to pause reading until c.resume().
  virtual bool on_ws_message(Connection& c, bool text, const char* data, std::size_t len) {
    (void)c, (void)text, (void)data, (void)len;
    return false;
  }
  // The session is ending with `code`: the peer's close frame (echoed), a protocol error the server failed the
  // connection with (1002, 1007, 1009), or a graceful shutdown (1012). on_disconnect follows when the stream closes.
  virtual void on_ws_close(Connection& c, int code, std::string_view reason) { (void)c, (void)code, (void)reason; }
};

class Connection final : public ParserListener, public ws::FrameListener {
 public:
  Connection(Server* server, bool tcp);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Initialise handles and accept from `listener`. On failure the connection closes itself; returns false.
  bool accept_from(uv_stream_t* listener);

  // ---- used by the AppHandler (loop thread) ----
  // Serialised response bytes go here; flush() sends them (corked: one write per flush).
  std::string& out() { return out_; }
  // Send `out()` followed by `extra` (referenced only during this call; copied if the socket cannot take it now).
  void flush(const char* extra = nullptr, std::size_t extra_len = 0);
  // Send `out()` at the end of this loop turn (coalescing the chunks of a streamed response into one write), or now
  // when a write is already pending or enough is buffered.
  void cork();
  // The current response is complete: count it, then close (keep-alive off) or go on with the next request.
  void finish_response();
  // Body consumed / response done: restart parsing buffered input and reading.
  void resume();
  // Ask for on_drain() once queued writes fall below the low-water mark. Returns false when already below it.
  bool want_drain();
  std::size_t write_queue_bytes() const;
  // Write "HTTP/1.1 100 Continue" if the request asked for it and it was not sent yet.
  void send_continue();
  void close();
  // Send what is buffered (corked output included), then close; reading stops now.
  void close_after_output() { close_when_flushed(); }
  // Graceful stop: close now if idle, else after the response in flight; an open WebSocket gets a 1012 close.
  void close_when_idle();

  // ---- WebSocket session (after AppHandler::on_websocket) ----
  // The 101 head is in out(): send it and start reading frames. Returns false if the connection is gone.
  bool ws_accept();
  // One unfragmented text or binary message.
  void ws_send(bool text, const char* data, std::size_t len);
  // Send a close frame and wait (10 s at most) for the peer's reply, then close. Further messages are discarded.
  void ws_close(int code, std::string_view reason);
  // The app is done: close the stream now (after flushing) unless a close handshake is in progress.
  void ws_app_done();
  bool ws_open() const { return ws_state_ == kWsOpen; }
  bool is_websocket() const { return ws_state_ != kWsNone; }

  bool closing() const { return closing_; }
  bool in_flight() const { return in_flight_; }
  Server* server() const { return server_; }
  ResponseState& response() { return response_; }
  const RequestHead& head() const { return parser_.head(); }
  // "host:port" of the peer, or "" for Unix sockets; the parsed parts are in peer_host()/peer_port().
  const std::string& peer_host() const { return peer_host_; }
  int peer_port() const { return peer_port_; }
  const std::string& local_host() const { return local_host_; }
  int local_port() const { return local_port_; }
  bool is_tcp() const { return tcp_; }
  std::uint64_t request_start_ns() const { return request_start_ns_; }

  // Per-request state owned by the AppHandler (a Python object in the bindings). Opaque to the core.
  void* exchange = nullptr;
  // Per-connection state owned by the AppHandler (e.g. the cached client tuple).
  void* app_data = nullptr;
  Connection* prev = nullptr;
  Connection* next = nullptr;

 private:
  ~Connection() override = default;
  friend class Server;

  // ParserListener
  void on_request_begin() override;
  int on_request_head(RequestHead& head) override;
  int on_request_body(const char* data, std::size_t len) override;
  int on_request_complete() override;

  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_ws_close_timer(uv_timer_t* t);
  static void on_handle_closed(uv_handle_t* h);

  void on_read_data(ssize_t nread, const uv_buf_t* buf);
  void process(char* data, std::size_t len);
  int start_websocket(const RequestHead& head);
  void ws_process(char* data, std::size_t len);
  void ws_fail(int code, const char* reason);
  // ws::FrameListener
  int on_ws_message(bool text, const char* data, std::size_t len) override;
  void on_ws_ping(const char* data, std::size_t len) override;
  void on_ws_pong(const char* data, std::size_t len) override;
  void on_ws_close(int code, std::string_view reason) override;
  void handle_eof();
  void start_reading();
  void stop_reading();
  void arm_keep_alive();
  void answer_error(int status, const char* reason);
  void answer_native();
  void close_when_flushed();

  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } io_;
  uv_timer_t timer_;
  Server* server_;
  RequestParser parser_;
  ResponseState response_;
  std::string out_;
  std::string in_;  // bytes read but not parsed yet (parser paused: pipelining / body backpressure)
  std::string native_body_;
  std::string native_allow_;
  const NativeRoute* native_ = nullptr;
  enum WsState : std::uint8_t { kWsNone, kWsHandshake, kWsOpen, kWsClosing, kWsDone };
  WsState ws_state_ = kWsNone;
  std::unique_ptr<ws::FrameParser> ws_;  // created on accept
  static constexpr std::size_t kNativeMaxBody = 1 << 20;
  static constexpr std::size_t kCorkMaxBytes = 16 * 1024;
  std::string peer_host_, local_host_;
  int peer_port_ = 0, local_port_ = 0;
  std::uint64_t request_start_ns_ = 0;
  // --stats only: when the current read began, when the app took over, write time spent on this request.
  std::uint64_t read_start_ns_ = 0;
  std::uint64_t app_start_ns_ = 0;
  std::uint64_t request_write_ns_ = 0;
  int open_handles_ = 0;
  int pending_writes_ = 0;
  bool tcp_;
  bool reading_ = false;
  bool paused_ = false;
  bool in_flight_ = false;
  bool closing_ = false;
  bool close_after_response_ = false;
  bool close_after_flush_ = false;
  bool continue_pending_ = false;
  bool drain_wanted_ = false;
  bool corked_ = false;  // registered with Server::cork()
  bool idle_ = false;         // no request in progress since the last response
  bool timer_armed_ = false;  // the keep-alive timer is running
  std::uint64_t idle_since_ms_ = 0;
  bool in_read_ = false;
};

}  // namespace fa
