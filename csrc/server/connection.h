// Connection: one accepted stream (TCP or Unix) with its parser, keep-alive timer and corked output. It owns the
// wire format of what it sends: the bindings and native handlers say "start a response with this status and these
// headers", "write this body", "answer with this error"; the connection applies its server's defaults (server
// header, --header values, date), validation and framing.
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

#include "core/tls_session.h"
#include "http/parser.h"
#include "http/response.h"
#include "http/router.h"
#include "http/websocket.h"
#include "server/app_handler.h"
#include "server/http_stream.h"
#include "server/request_dispatch.h"

namespace fa {

class Server;
class H2Session;
struct NativeRoute;

class Connection final : public HttpStream, public ParserListener, public ws::FrameListener {
 public:
  Connection(Server* server, bool tcp);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Initialise handles and accept from `listener`. On failure the connection closes itself; returns false.
  bool accept_from(uv_stream_t* listener);

  // ---- the response to the current request (used by the AppHandler and the native handlers) ----
  // Start the response: status line, the server's default headers, `count` headers (validated: nothing invalid
  // reaches the wire) and framing (Content-Length enforced, else chunked, else close-delimited for HTTP/1.0; no
  // body for HEAD, 1xx, 204, 304). The head is held until the first body bytes so that both leave in one write.
  // Returns nullptr, or an error message with nothing written and the response not started.
  const char* start_response(int status, const std::string_view* names, const std::string_view* values,
                             std::size_t count) override;
  // Body bytes of the started response; `data` is referenced only during the call. more=false completes the
  // response (the caller then calls finish_response()); a streamed chunk is corked to the end of the loop turn.
  // Returns nullptr, or an error (e.g. longer than Content-Length): the connection is then no longer kept alive.
  const char* write_body(const char* data, std::size_t len, bool more) override;
  // Answer the current request with the server's own complete response (text/plain `body`, none for HEAD;
  // `extra_headers` pre-formatted and trusted; connection: close). The caller then calls finish_response().
  // `server_headers` false leaves out the default block (server header, --header values), as uvicorn does for a
  // refused WebSocket handshake; `date` stays.
  void answer_error(int status, std::string_view body, std::string_view extra_headers = {},
                    bool server_headers = true) override;
  // A complete response whose headers are pre-formatted and already validated (native routes): status line,
  // default headers, `headers`, content-length when `with_length`, connection, body (left out for HEAD).
  void write_response(int status, std::string_view headers, std::string_view body, bool with_length) override;
  bool response_started() const override { return response_.started(); }
  bool response_complete() const { return response_.complete(); }
  int response_status() const { return response_.status(); }
  // Bytes of output not yet accepted by the socket (buffered here or queued in libuv): what backpressure reads.
  std::size_t write_queue_bytes() const override;
  // The whole body of the started response is the file open at `fd` (`size` bytes from offset 0; the connection
  // takes the descriptor and closes it). Sent with sendfile(2) from the kernel's page cache, never through user
  // space, on a plain connection; read in 64 KiB steps into the TLS writer on a TLS one. Waits for the socket
  // (and, over TLS, for the write queue to drain) without blocking the loop. When every byte is out,
  // AppHandler::on_file_sent() follows; a failure (read error, file shrunk, socket error) closes the connection.
  // Returns nullptr, or an error (the framing refused `size`, e.g. not the Content-Length): nothing was sent.
  // `offset`: where in the file the body starts (a byte range).
  const char* send_file(int fd, std::uint64_t size, std::uint64_t offset = 0) override;
  bool sending_file() const override { return file_ != nullptr; }

  // ---- flow ----
  // Serialised bytes waiting for the next flush (also used by tests and the WebSocket writer).
  std::string& out() { return out_; }
  // Send `out()` followed by `extra` (referenced only during this call; copied if the socket cannot take it now).
  void flush(const char* extra = nullptr, std::size_t extra_len = 0);
  // Send `out()` at the end of this loop turn (coalescing the chunks of a streamed response into one write), or now
  // when a write is already pending or enough is buffered.
  void cork();
  // The current response is complete: count it, then close (keep-alive off) or go on with the next request.
  void finish_response() override;
  // Body consumed / response done: restart parsing buffered input and reading.
  void resume() override;
  // Ask for on_drain() once queued writes fall below the low-water mark. Returns false when already below it
  // (after handing out_ to libuv: only bytes libuv queued are waited for, so an on_write always follows).
  bool want_drain() override;
  // Write "HTTP/1.1 100 Continue" if the request asked for it and it was not sent yet.
  void send_continue() override;
  void close() override;
  // Send what is buffered (corked output included), then close; reading stops now.
  void close_after_output() override { close_when_flushed(); }
  // Graceful stop: close now if idle, else after the response in flight; an open WebSocket gets a 1012 close. A
  // connection that has not received a byte yet is given kFreshShutdownGraceMs for its first request.
  void close_when_idle();

  // ---- WebSocket session (after AppHandler::on_websocket) ----
  // Accept the handshake: the 101 head with `accept_key` (Sec-WebSocket-Accept), the default headers, the app's
  // `count` headers (validated) and `subprotocol` (if not empty), then start reading frames. Returns nullptr, or an
  // error message with nothing written (the handshake is still open).
  const char* ws_accept(std::string_view accept_key, const std::string_view* names, const std::string_view* values,
                        std::size_t count, std::string_view subprotocol);
  // One unfragmented text or binary message.
  void ws_send(bool text, const char* data, std::size_t len);
  // Send a close frame and wait (10 s at most) for the peer's reply, then close. Further messages are discarded.
  void ws_close(int code, std::string_view reason);
  // The app is done: close the stream now (after flushing) unless a close handshake is in progress.
  void ws_app_done();
  bool ws_open() const { return ws_state_ == kWsOpen; }
  bool is_websocket() const { return ws_state_ != kWsNone; }

  bool closing() const override { return closing_; }
  // Serves HTTP/2 (H2Session): its requests are H2Streams, not this object.
  bool is_h2() const { return h2_ != nullptr; }
  // H2Session: the last stream is gone (keep-alive, or close during a shutdown) / a stream began.
  void h2_idle();
  void h2_busy();
  bool in_flight() const { return in_flight_; }
  // The peer's address and port ("" and 0 for Unix sockets). local_host() is the bound address, or for a Unix
  // socket its path (as uvicorn's scope["server"] = [path, None]).
  const std::string& peer_host() const { return peer_host_; }
  int peer_port() const { return peer_port_; }
  const std::string& local_host() const { return local_host_; }
  int local_port() const { return local_port_; }
  bool is_tcp() const { return tcp_; }
  // Served over TLS (the server has a TLS context): scope scheme https/wss.
  bool is_tls() const { return tls_ != nullptr; }

  // Per-connection state owned by the AppHandler (e.g. the cached client tuple).
  void* app_data = nullptr;
  Connection* prev = nullptr;
  Connection* next = nullptr;

 private:
  ~Connection() override;
  friend class Server;
  friend class H2Session;  // arms the connection's timer for its send bound

  // ParserListener
  void on_request_begin() override;
  int on_request_head(RequestHead& head) override;
  int on_request_body(const char* data, std::size_t len) override;
  int on_request_complete() override;

  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void on_write(uv_write_t* req, int status);
  static void on_timer(uv_timer_t* t);
  static void on_handle_closed(uv_handle_t* h);

  void on_read_data(ssize_t nread, const uv_buf_t* buf);
  // Bytes of the byte stream (plaintext): parsed now, or kept while parsing is paused.
  void take_input(char* data, std::size_t len);
  // TLS: decrypt what was read and take the plaintext; false when the connection closed.
  bool tls_read(const char* data, std::size_t len);
  void tls_handshake_done();
  void process(char* data, std::size_t len);
  // HTTP/2 (connection_h2.cc).
  bool start_h2();
  bool h2_sniff(const char* data, std::size_t len);
  void flush_h2();
  // Make and write frames while the socket takes them. False when the socket's queue is full or the connection
  // closed (on_write continues).
  bool write_h2_frames();
  // flush() at the end of this loop turn, never now (H2Session: its callbacks must not re-enter nghttp2).
  void flush_soon();
  // HTTP/2 frames still to be made: a close waits for them. (Inline: HTTP/1.1's flush pays one comparison.)
  bool h2_has_more() const { return h2_ != nullptr && h2_wants_write(); }
  bool h2_wants_write() const;
  // HTTP/2 input beyond this turn's batch of requests (H2Session::kRequestsPerTurn): reading stops, and the next
  // batch is taken up after the next flush (the cork callback), once this batch's responses are out.
  void h2_schedule_resume();
  void h2_resume_input();
  // The bytes of out_ (+ extra) to the socket, encrypted first over TLS: flush() without HTTP/2's framing step.
  void flush_out(const char* extra, std::size_t extra_len);
  int start_websocket(const RequestHead& head);
  void ws_process(char* data, std::size_t len);
  void ws_fail(int code, const char* reason);
  // ws::FrameListener
  int on_ws_message(bool text, const char* data, std::size_t len) override;
  void on_ws_ping(const char* data, std::size_t len) override;
  void on_ws_pong(const char* data, std::size_t len) override;
  void on_ws_close(int code, std::string_view reason) override;
  // Keepalive (--ws-ping-interval / --ws-ping-timeout), from check_timeouts(): a ping is due, or its pong is late.
  // Returns false when the connection was failed (1011).
  bool ws_keepalive(std::uint64_t now, std::uint64_t* next_due);
  void handle_eof();
  void start_reading();
  void stop_reading();
  void arm_keep_alive();
  // The one timer serves every time bound (keep-alive, header, body, send, WebSocket close handshake): make sure it
  // fires no later than `due_ms` (loop time); when it fires, check_timeouts() decides and re-arms for the next one.
  void arm_timer(std::uint64_t due_ms);
  void check_timeouts();
  // Output above the high-water mark: stop taking up input (the next pipelined request, WebSocket frames) until
  // on_write sees it drain below the low-water mark. Returns whether it blocked.
  bool block_on_output();
  // A request that cannot be parsed or served: count and log it, answer `status`, close.
  void reject_request(int status, const char* reason);
  void answer_native();
  // The native request is answered (its file, if any, is out): log line, counters, route statistics, then
  // keep-alive or close.
  void finish_native(int status, const NativeRoute* route);
  void close_when_flushed();
  bool start_websocket_session();
  // Encrypt out_ (+ extra) and send the ciphertext (TLS connections' flush()).
  void flush_tls(const char* extra, std::size_t extra_len);
  // Hand bytes to the socket: tried now, the rest copied and queued. False when the connection closed on an error.
  bool write_raw(const char* a, std::size_t a_len, const char* b, std::size_t b_len);
  // The file transfer (connection_file.cc): send what the socket takes now, else arrange to be called again.
  void file_pump();
  bool file_sendfile();  // plain connections; false when it must wait (or closed)
  bool file_read_into_writer();  // TLS; false when it must wait (or closed)
  bool file_read_inline();       // a small file behind the head in out_; false when closed
  void file_wait_writable();
  void file_done();
  static void on_file_writable(uv_poll_t* p, int status, int events);

  union {
    uv_tcp_t tcp;
    uv_pipe_t pipe;
    uv_stream_t stream;
    uv_handle_t handle;
  } io_;
  uv_timer_t timer_;
  RequestParser parser_;
  ResponseState response_;
  std::string out_;
  std::string in_;  // bytes read but not parsed yet (parser paused: pipelining / body backpressure)
  // The current request when a native route (or its 405) answers it (request_dispatch.h): reused for every
  // request of the connection.
  NativeRequest native_;
  // A native route whose answer is a file (static_route.cc) completes when the file is out (file_done()): until
  // then the request stays in flight, the parser paused (no pipelined request is read) and no keep-alive armed.
  const NativeRoute* native_file_route_ = nullptr;
  int native_file_status_ = -1;  // -1 while the route runs; then the status it answered
  enum WsPhase : std::uint8_t { kWsNone, kWsHandshake, kWsOpen, kWsClosing, kWsDone };
  WsPhase ws_state_ = kWsNone;
  std::unique_ptr<ws::FrameParser> ws_;  // created on accept
  std::unique_ptr<TlsSession> tls_;      // created on accept when the server has a TLS context
  // A file being sent as the response body (send_file), and the handle that waits for the socket to be writable
  // again (a uv_poll on a dup of the socket's descriptor: the stream handle keeps its own; made on first need,
  // kept for the connection's life, closed with the connection).
  struct FileSend {
    int fd;
    std::uint64_t offset;
    std::uint64_t remaining;
    std::string suffix;        // framing after the body (the last chunk of a chunked response)
    bool waiting = false;      // for the socket (plain) or for the write queue to drain (TLS)
    bool corked = false;       // TCP_CORK set for the transfer (plain TCP), cleared in file_done()
  };
  std::unique_ptr<FileSend> file_;
  struct FilePoll {
    uv_poll_t handle;
    int fd = -1;  // dup of the socket's descriptor, closed when the handle has closed
  };
  std::unique_ptr<FilePoll> file_poll_;
  std::unique_ptr<ws::Deflater> ws_deflate_;  // permessage-deflate negotiated: compresses what ws_send() sends
  std::unique_ptr<H2Session> h2_;  // HTTP/2 on this connection (after the preface or ALPN h2)
  bool sniff_h2_ = false;          // plain port with --http2: the first bytes may be the HTTP/2 preface
  bool in_read_callback_ = false;  // inside on_read_data, its final flush included (no HTTP/2 batch resumes there)
  static constexpr std::uint64_t kFreshShutdownGraceMs = 500;
  static constexpr std::size_t kCorkMaxBytes = 16 * 1024;
  // Body chunks from this size on go to the socket by reference instead of being copied into out_.
  static constexpr std::size_t kZeroCopyThreshold = 16 * 1024;
  std::string peer_host_, local_host_;
  int peer_port_ = 0, local_port_ = 0;
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
  bool timer_armed_ = false;  // the timer is running, due at timer_due_ms_
  bool reading_head_ = false;    // a request head has begun and is not complete
  bool output_blocked_ = false;  // block_on_output(): input waits for the output to drain
  std::uint64_t timer_due_ms_ = 0;
  std::uint64_t idle_since_ms_ = 0;
  std::uint64_t head_started_ms_ = 0;
  std::uint64_t last_body_ms_ = 0;       // last request-body bytes (or the head) of the request being read
  std::uint64_t last_write_ms_ = 0;      // last progress of queued output
  std::size_t queue_at_check_ = 0;       // libuv's write queue size at the last check_timeouts()
  std::uint64_t ws_close_due_ms_ = 0;    // the peer's close reply is due (0: no close handshake pending)
  // Keepalive: when the next ping is due, or (ws_awaiting_pong_) when the pong to ws_ping_payload_ is; 0: no pings.
  // Served by the one connection timer like every other bound: nothing happens per message.
  std::uint64_t ws_keepalive_due_ms_ = 0;
  std::uint32_t ws_ping_payload_ = 0;
  bool ws_awaiting_pong_ = false;
  bool in_read_ = false;
  bool received_ = false;  // any byte has arrived on this connection (see close_when_idle())
  bool parsing_ = false;  // inside parser_.execute()
};

}  // namespace fa
