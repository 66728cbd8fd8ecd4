// HTTP/2 (RFC 9113) on one connection, framed by nghttp2: H2Session is the connection's Session once the client's
// preface or ALPN "h2" was seen. It turns the transport's plaintext into requests on H2Streams and their responses
// back into frames in the transport's output.
//
// Shape (as HTTP/1.1's): the Transport reads, decrypts and writes; H2Session::receive() runs nghttp2 over what was
// read, whose callbacks build each stream's RequestHead (H2HeaderBlock) and hand it to the request dispatcher
// (request_dispatch.h), native route or AppHandler, exactly as Http1Session does. Responses are queued on the stream
// (headers submitted, body bytes in its H2ResponseBody) and framed only when the connection flushes (produce()):
// nghttp2 is never re-entered from a stream method, so a stream is never deleted under a caller.
//
// Ownership and lifetime:
// - The Connection owns its H2Session.
// - The session owns its streams. A stream is deleted when nghttp2 closes it (on_stream_close) or the connection
//   closes; if an exchange is still attached then, the AppHandler first gets on_disconnect (which detaches it).
// - nghttp2's stream user data points to the H2Stream, cleared before the stream is deleted.
// All on the loop thread.
#pragma once

#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "http/request.h"
#include "http/router.h"
#include "server/h2_header_block.h"
#include "server/h2_response_body.h"
#include "server/http_stream.h"
#include "server/request_dispatch.h"
#include "server/session.h"

namespace fa {

class Connection;
class H2Session;
class Transport;

class H2Stream final : public HttpStream {
 public:
  H2Stream(H2Session* session, std::int32_t id);
  ~H2Stream();

  const char* start_response(int status, const std::string_view* names, const std::string_view* values,
                             std::size_t count) override;
  const char* write_body(const char* data, std::size_t len, bool more) override;
  void answer_error(int status, std::string_view body, std::string_view extra_headers = {},
                    bool server_headers = true) override;
  void write_response(int status, std::string_view headers, std::string_view body, bool with_length) override;
  const char* send_file(int fd, std::uint64_t size, std::uint64_t offset = 0) override;
  bool sending_file() const override { return body_.has_file(); }
  bool response_started() const override { return started_; }
  std::size_t write_queue_bytes() const override;
  bool want_drain() override;
  void finish_response() override;
  void resume() override;
  void send_continue() override;
  void close() override;
  void close_after_output() override;
  bool closing() const override { return reset_ || closed_; }
  bool expect_trailers() override;
  const char* write_trailers(const std::string_view* names, const std::string_view* values, std::size_t count,
                             bool more) override;

  std::int32_t id() const { return id_; }

 private:
  friend class H2Session;

  // The response head as nghttp2 name/value pairs: ":status", the server's default headers (`server_headers`:
  // the server header and --header values; date always), then the response's own.
  void begin_head(int status, bool server_headers);
  void add_header(std::string_view name, std::string_view value);
  // Pre-formatted "name: value\r\n" lines (native routes, the server's own answers).
  void add_header_lines(std::string_view lines);
  // Submit the head with (or without) a body to follow, once.
  void submit(bool with_body);
  // nghttp2's DATA source: buffered body bytes or the file.
  static nghttp2_ssize read_body(nghttp2_session* s, std::int32_t stream_id, std::uint8_t* buf, std::size_t length,
                                 std::uint32_t* flags, nghttp2_data_source* source, void* user);
  void wake_data();

  H2Session* session_;
  std::int32_t id_;
  RequestHead request_;
  H2HeaderBlock header_block_;  // builds request_ from the fields nghttp2 hands over
  // Request body and flow control: bytes handed to the app while it paused reading, not yet acknowledged with a
  // WINDOW_UPDATE (the peer's stream window stays shut until the app takes them: backpressure).
  std::size_t unconsumed_ = 0;
  bool body_paused_ = false;
  bool body_complete_ = false;
  // The request body's bound (--timeout-request-body, as for HTTP/1.1): the last time body bytes (or the head)
  // arrived while the stream's window was open. A stream whose body stops arriving is reset (CANCEL).
  std::uint64_t last_body_ms_ = 0;
  // The request when a native route (or its 405) answers it (request_dispatch.h; views into request_). Native
  // bodies count against the session's budget (H2Session::kNativeBodyBudget): past it, a stream's window stays
  // shut (window_held_, the bytes counted in unconsumed_) until other native bodies are answered.
  NativeRequest native_;
  bool window_held_ = false;
  // Response.
  std::vector<std::string> head_fields_;  // the response head until submitted: name, value, name, value, ...
  int status_ = 0;
  bool head_request_ = false;
  bool no_body_ = false;          // HEAD, 1xx, 204, 304
  bool started_ = false;          // start_response() accepted
  bool submitted_ = false;        // the head went to nghttp2
  bool in_flight_ = false;        // counted in Server::active_requests_
  bool drain_wanted_ = false;
  bool continue_pending_ = false;
  bool reset_ = false;            // RST_STREAM submitted by us
  bool closed_ = false;           // nghttp2 closed the stream
  bool app_request_ = false;      // handed to the AppHandler (not a native route)
  std::int64_t content_length_ = -1;  // the app's Content-Length, enforced
  std::uint64_t sent_ = 0;
  H2ResponseBody body_;  // what is still to send after the head: bytes or a file, then trailers
  // The body is out: end the stream, or hand nghttp2 the trailers (from inside read_body, as its API asks).
  void end_of_body(std::uint32_t* flags);
  // RST_STREAM with `code` (once): the stream is over for both sides.
  void reset(std::uint32_t code);
  // The client owes this stream body bytes and nothing on the server's side holds its window shut.
  bool awaiting_body() const {
    return request_.has_body && !body_complete_ && !body_paused_ && !window_held_ && !reset_ && !closed_;
  }
  H2Stream* next_ = nullptr;  // the session's list
  H2Stream* prev_ = nullptr;
};

class H2Session final : public Session {
 public:
  explicit H2Session(Connection& conn);
  ~H2Session();
  H2Session(const H2Session&) = delete;
  H2Session& operator=(const H2Session&) = delete;
  bool ok() const { return session_ != nullptr; }

  // Plaintext from the peer. False when the connection must end (protocol error: the GOAWAY is queued; flush, then
  // close). At most kRequestsPerTurn requests are taken up per loop turn: the rest of the bytes wait here
  // (has_pending_input(); the connection stops reading meanwhile) for resume_input() after the next flush, so the
  // responses to one batch leave before the next batch is processed (a client with many streams on one
  // connection gets its answers while it is still sending, instead of all of them after all of its requests).
  bool take_input(const char* data, std::size_t len);
  bool has_pending_input() const { return !pending_.empty(); }
  // A new loop turn: take up the next batch of the waiting bytes. False as for receive().
  bool resume_input();
  static constexpr int kRequestsPerTurn = 16;
  // Frame what is ready into `out` while it holds less than `budget` bytes; then tell the streams waiting for
  // their output to drain. Returns false when the session is over (both sides done: close after the flush).
  bool produce(std::string& out, std::size_t budget);
  // Graceful shutdown: GOAWAY with the last stream id taken; streams in progress finish.
  void shutdown();
  // The connection is closing: every stream with an exchange gets on_disconnect, every stream is deleted.
  void connection_lost();
  bool idle() const { return streams_ == nullptr; }
  // A request is being served (app or native route) or a response still has bytes to send: not keep-alive idle.
  bool has_active() const;
  // Streams whose request body stopped arriving for `limit_ms` (and whose window is open) are reset, their apps
  // see http.disconnect. Returns when the next stream falls due (UINT64_MAX: none is waiting for its body).
  std::uint64_t expire_stalled_bodies(std::uint64_t now, std::uint64_t limit_ms);
  // The stream's request body may arrive from now on (its head came, or its window reopened): its bound starts.
  void watch_body(H2Stream* st);
  // Some response has bytes nghttp2 could not send yet (the peer's window, or the socket): the send bound applies
  // from last_progress_ms(), the last time a frame went out while output was waiting.
  bool output_waiting() const;
  std::uint64_t last_progress_ms() const { return last_progress_ms_; }
  std::size_t stream_count() const { return stream_count_; }
  Connection& connection() const { return conn_; }
  nghttp2_session* raw() const { return session_; }
  // Output is waiting in nghttp2 or a stream: the connection should flush at the end of this loop turn.
  void want_write();
  // nghttp2 has frames to send now (not counting data its flow control holds back).
  bool wants_write() const;
  // Inside mem_recv2 / mem_send2 (and so possibly inside one of its callbacks).
  bool in_nghttp2() const { return in_nghttp2_; }

  // ---- Session: the connection's side (h2_session_io.cc) ----
  // Plaintext to nghttp2 (the connection closes after the GOAWAY on a protocol error); past this turn's batch,
  // reading stops.
  void receive(char* data, std::size_t len) override;
  // A read callback's end: input beyond the batch is taken up after the next flush.
  void read_end() override;
  // The socket took output: more frames, as far as it takes them.
  void output_progress(bool drained) override;
  // The send bound (a peer that does not take its responses), each stream's body bound, keep-alive.
  std::uint64_t check_timeouts(std::uint64_t now) override;
  // GOAWAY naming the last stream taken; the streams in progress finish, then the connection closes.
  void close_when_idle() override;
  bool output_pending() const override { return wants_write(); }
  // Make frames and write them while the socket takes them; then take up the next batch of requests.
  void flush() override;

 private:
  friend class H2Stream;
  static int on_begin_headers(nghttp2_session* s, const nghttp2_frame* frame, void* user);
  static int on_header(nghttp2_session* s, const nghttp2_frame* frame, const std::uint8_t* name, std::size_t namelen,
                       const std::uint8_t* value, std::size_t valuelen, std::uint8_t flags, void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* frame, void* user);
  static int on_data_chunk(nghttp2_session* s, std::uint8_t flags, std::int32_t stream_id, const std::uint8_t* data,
                           std::size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, std::int32_t stream_id, std::uint32_t error_code, void* user);

  void request_ready(H2Stream* st);     // the request head is complete
  void request_complete(H2Stream* st);  // END_STREAM
  void request_done();                  // a request finished: keep-alive starts when none is left
  void answer_native(H2Stream* st);
  void drop(H2Stream* st);              // unlink, clear nghttp2's pointer, delete
  void stream_finished(H2Stream* st);   // the response is complete: counters
  // Native request bodies: what all streams of this connection hold at most before their windows stay shut (the
  // connection's memory for them is this plus one initial window per stream, instead of 1 MiB per stream).
  static constexpr std::size_t kNativeBodyBudget = 1 << 20;
  std::size_t native_body_bytes_ = 0;
  // The stream's native body is no longer needed (answered, refused, dropped): its bytes leave the budget, and the
  // windows held shut reopen while the budget allows.
  void release_native_body(H2Stream* st);
  // The native request with the lowest stream id whose body is still arriving (nullptr: none).
  H2Stream* oldest_native_upload() const;

  // The connection side (h2_session_io.cc).
  // Frames while the socket's queue is below the high-water mark. False when it is full or the connection closed.
  bool write_frames();
  // Take up the next batch of waiting input (after a flush).
  void resume_batch();
  // The input beyond this turn's batch waits (reading stops) for the flush at the end of the next loop turn.
  void schedule_resume();
  // The last stream is gone: keep-alive starts, or (shutting down) the connection closes after the next flush.
  void became_idle();

  Connection& conn_;
  Transport& transport_;
  nghttp2_session* session_ = nullptr;
  // Keep-alive: no stream since idle_since_ms_ (--timeout-keep-alive applies, then GOAWAY and close).
  bool keep_alive_idle_ = true;
  std::uint64_t idle_since_ms_ = 0;
  H2Stream* streams_ = nullptr;
  std::size_t stream_count_ = 0;
  std::vector<H2Stream*> drain_waiters_;
  // Streams whose file is out: AppHandler::on_file_sent() after produce(), or before the stream is dropped.
  std::vector<H2Stream*> file_sent_;
  void notify_file_sent(H2Stream* st);
  bool shutting_down_ = false;
  bool failed_ = false;       // nghttp2 cannot make frames any more
  bool recv_failed_ = false;  // nghttp2 refused the peer's bytes: what it queued goes out, then the end
  bool was_waiting_ = false;
  bool in_nghttp2_ = false;
  int requests_this_turn_ = 0;
  std::string pending_;  // bytes not yet given to nghttp2 (a batch was full)
  bool feed(const char* data, std::size_t len);  // mem_recv2; the unprocessed rest into pending_
  // Rapid reset (CVE-2023-44487) as it costs this server: requests the client resets while their app runs. A token
  // bucket of 2 x max_concurrent_streams, refilled at max_concurrent_streams a second; empty -> GOAWAY
  // (ENHANCE_YOUR_CALM). nghttp2's own reset rate limit (1000 burst, 33/s) counts every RST_STREAM.
  double cancel_tokens_ = -1;  // -1: not started (full)
  std::uint64_t cancel_refill_ms_ = 0;
  bool too_many_cancels();
  std::uint64_t last_progress_ms_ = 0;
};

}  // namespace fa
