#include "server/connection.h"

#include <llhttp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <new>

#include "core/uv_api.h"
#include "server/h2_session.h"
#include "server/server.h"
#include "server/stage_clock.h"

// Connection, part 1: accepting, reading and parsing, dispatching requests (native or app), timers, closing.
// Writing is in connection_write.cc, the WebSocket session in connection_websocket.cc, TLS in connection_tls.cc.

namespace fa {

namespace {

Connection* from_handle(void* h) { return static_cast<Connection*>(static_cast<uv_handle_t*>(h)->data); }

void addr_to_host_port(const sockaddr_storage& ss, std::string* host, int* port) {
  char buf[64] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    uv.uv_ip4_name(a, buf, sizeof buf);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv.uv_ip6_name(a, buf, sizeof buf);
    *port = ntohs(a->sin6_port);
  }
  *host = buf;
}

}  // namespace

Connection::Connection(Server* server, bool tcp)
    : HttpStream(server, this, nullptr), parser_(this, &server->config().limits), tcp_(tcp) {
  head_ = &parser_.head();
}

Connection::~Connection() = default;  // here, where H2Session is a complete type

bool Connection::accept_from(uv_stream_t* listener) {
  uv_loop_t* loop = server_->loop();
  if (tcp_) {
    uv.uv_tcp_init(loop, &io_.tcp);
  } else {
    uv.uv_pipe_init(loop, &io_.pipe, 0);
  }
  io_.handle.data = this;
  uv.uv_timer_init(loop, &timer_);
  timer_.data = this;
  open_handles_ = 2;
  live_handles_add(2);
  server_->link(this);
  if (uv.uv_accept(listener, &io_.stream) != 0) {
    close();
    return false;
  }
  if (tcp_) {
    uv.uv_tcp_nodelay(&io_.tcp, 1);
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv.uv_tcp_getpeername(&io_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      addr_to_host_port(ss, &peer_host_, &peer_port_);
    len = sizeof ss;
    if (uv.uv_tcp_getsockname(&io_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      addr_to_host_port(ss, &local_host_, &local_port_);
  }
  server_->counters().connections_total++;
  if (server_->config().tls != nullptr) {
    tls_ = std::make_unique<TlsSession>(*server_->config().tls);
    if (!tls_->ok()) {
      close();
      return false;
    }
  }
  sniff_h2_ = server_->config().http2.enabled && tls_ == nullptr;
  start_reading();
  arm_keep_alive();  // a client that connects and sends nothing (not even a TLS ClientHello) is idle
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading and parsing
// ---------------------------------------------------------------------------------------------------------------

void Connection::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  Connection* c = from_handle(h);
  buf->base = c->server_->read_buffer();
  buf->len = Server::kReadBufferSize;
}

void Connection::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Connection* c = from_handle(s);
  if (nread == 0) return;  // EAGAIN
  CallbackScope scope(c->server_->handler());
  // No exception may unwind into libuv (C): the only ones possible here are allocation failures.
  try {
    c->on_read_data(nread, buf);
  } catch (...) {
    c->in_read_ = false;
    c->in_read_callback_ = false;
    c->close();
  }
}

void Connection::on_read_data(ssize_t nread, const uv_buf_t* buf) {
  Connection* c = this;
  in_read_callback_ = true;
  StageScope parse_stage(kStageParse);  // the whole callback; what it starts (route, app, writes) is nested
  if (nread < 0) {
    c->handle_eof();
  } else {
    c->server_->counters().bytes_in += static_cast<std::uint64_t>(nread);
    c->received_ = true;
    c->in_read_ = true;
    if (c->tls_ != nullptr) {
      if (!c->tls_read(buf->base, static_cast<std::size_t>(nread))) {
        in_read_callback_ = false;
        return;
      }
    } else {
      c->take_input(buf->base, static_cast<std::size_t>(nread));
    }
    c->in_read_ = false;
    // Also with nothing to write: a close decided during this read (close_when_flushed) happens here, and TLS
    // handshake records go out.
    if ((!c->out_.empty() || c->close_after_flush_ || c->h2_ != nullptr ||
         (c->tls_ != nullptr && c->tls_->pending_output() > 0)) &&
        !c->closing_)
      c->flush();
    // A WebSocket peer that sends pings (or closes) but never reads: its pongs must not pile up.
    if (c->ws_ != nullptr && !c->closing_) c->block_on_output();
    if (c->h2_ != nullptr && !c->closing_ && c->h2_->has_pending_input()) c->h2_schedule_resume();
  }
  in_read_callback_ = false;
}

void Connection::take_input(char* data, std::size_t len) {
  if (h2_ != nullptr) {
    if (!h2_->receive(data, len)) close_when_flushed();
    else if (h2_->has_pending_input()) stop_reading();  // the rest of this batch's turn waits (bounded: one read)
    return;
  }
  if (sniff_h2_) {
    if (h2_sniff(data, len)) return;
    if (!in_.empty()) {
      // A few bytes were held back while they could still have been the HTTP/2 preface: parse them first.
      std::string pending;
      pending.swap(in_);
      pending.append(data, len);
      process(pending.data(), pending.size());
      return;
    }
  }
  if (paused_) {
    in_.append(data, len);
    // Bounded read-ahead: stop pulling from the socket while the app is behind.
    if (in_.size() > server_->config().body_high_water) stop_reading();
  } else {
    process(data, len);
  }
}

void Connection::handle_eof() {
  stop_reading();
  close();
}

void Connection::process(char* data, std::size_t len) {
  if (ws_ != nullptr) {
    ws_process(data, len);
    return;
  }
  // Runs the parser at least once even for zero bytes: after a pause inside on_body, llhttp may still owe the
  // on_message_complete callback for a body that was already fully consumed.
  if (!closing_) {
    parsing_ = true;
    const ParseResult r = parser_.execute(data, len);
    parsing_ = false;
    switch (r.kind) {
      case ParseResult::kOk:
        return;
      case ParseResult::kPaused:
        paused_ = true;
        in_.append(data + r.consumed, len - r.consumed);
        if (in_.size() > server_->config().body_high_water) stop_reading();
        return;
      case ParseResult::kUpgrade:
        if (ws_ != nullptr) {
          ws_process(data + r.consumed, len - r.consumed);  // the handler accepted synchronously
          return;
        }
        if (ws_state_ != kWsNone) {
          // A WebSocket handshake waiting for the app's accept: what follows is frames, kept (bounded, like a
          // paused body) until the session starts. Reading goes on so that a client leaving is noticed.
          paused_ = true;
          in_.append(data + r.consumed, len - r.consumed);
          if (in_.size() > server_->config().body_high_water) stop_reading();
          return;
        }
        // Other protocol upgrades are not supported: the request was answered as plain HTTP; the bytes after it
        // belong to another protocol, so the connection closes after the response.
        close_after_response_ = true;
        stop_reading();
        if (!in_flight_) close_when_flushed();
        return;
      case ParseResult::kError:
        reject_request(r.status, r.reason);
        return;
    }
  }
}

void Connection::resume() {
  if (closing_) return;
  if (paused_) {
    paused_ = false;
    if (ws_ == nullptr) parser_.resume();
    std::string pending;
    pending.swap(in_);
    process(pending.data(), pending.size());
    // Keep the larger buffer's capacity for the next pause.
    if (in_.empty() && pending.capacity() > in_.capacity()) {
      pending.clear();
      in_.swap(pending);
    }
  }
  if (!paused_ && !closing_ && !output_blocked_ && (ws_ != nullptr ? !close_after_flush_ : !close_after_response_))
    start_reading();
  if (!in_read_ && !out_.empty() && !closing_) flush();
}

void Connection::start_reading() {
  if (reading_ || closing_) return;
  if (uv.uv_read_start(&io_.stream, &Connection::on_alloc, &Connection::on_read) == 0) reading_ = true;
}

void Connection::stop_reading() {
  if (!reading_) return;
  uv.uv_read_stop(&io_.stream);
  reading_ = false;
}

void Connection::on_request_begin() {
  idle_ = false;  // the timer, if it fires now, finds the connection busy with a head
  reading_head_ = true;
  head_started_ms_ = server_->loop()->time;  // what uv_now() returns, without the call
  if (server_->config().header_timeout_ms > 0) arm_timer(head_started_ms_ + server_->config().header_timeout_ms);
  // Until the head is complete, an error answer knows nothing of this request (not even whether it is a HEAD).
  response_.reset(false, false, false);
  request_start_ns_ = monotonic_ns();
}

int Connection::on_request_head(RequestHead& head) {
  const bool http10 = head.http_major == 1 && head.http_minor == 0;
  reading_head_ = false;
  if (head.has_body) {
    last_body_ms_ = server_->loop()->time;
    if (server_->config().body_timeout_ms > 0) arm_timer(last_body_ms_ + server_->config().body_timeout_ms);
  }
  // Upgrades (WebSocket) are answered as plain HTTP; what follows on the stream is another protocol.
  if (head.upgrade) close_after_response_ = true;
  bool keep_alive = head.keep_alive && !server_->shutting_down() && !close_after_response_;
  response_.reset(head.method == HTTP_HEAD, keep_alive, http10);
  native_.end();
  // WebSocket handshakes do not count against --limit-concurrency (uvicorn applies it to HTTP requests only).
  if (head.upgrade && server_->config().websocket && ws::is_websocket_upgrade(head)) return start_websocket(head);
  switch (dispatch_request(*server_, *this, head, native_)) {
    case Dispatch::kOverLimit:  // answered 503: uvicorn then closes the connection
      close_after_response_ = true;
      close_when_flushed();
      return kPause;
    case Dispatch::kNative:
      // A client that sent `Expect: 100-continue` waits for it before sending the body (RFC 9110 10.1.1).
      if (head.expect_continue && head.has_body) out_.append("HTTP/1.1 100 Continue\r\n\r\n");
      in_flight_ = true;
      server_->active_requests_++;
      return kContinue;
    case Dispatch::kApp:
      break;
  }
  in_flight_ = true;
  server_->active_requests_++;
  continue_pending_ = head.expect_continue;
  server_->handler()->on_request(*this, head);
  return kContinue;
}

int Connection::on_request_body(const char* data, std::size_t len) {
  last_body_ms_ = server_->loop()->time;
  if (native_.active()) {
    if (!take_native_body(native_, data, len)) {
      reject_request(413, "request body too large for a native route");
      return kPause;
    }
    return kContinue;
  }
  if (!in_flight_ || ws_state_ != kWsNone) return kContinue;  // the app already answered: read and dropped
  return server_->handler()->on_body(*this, data, len) ? kPause : kContinue;
}

int Connection::on_request_complete() {
  if (ws_state_ != kWsNone) return kContinue;  // llhttp stops with HPE_PAUSED_UPGRADE right after
  if (native_.active()) {
    answer_native();
    native_.end();
    // A file still going out: the next pipelined request waits for it (file_done() resumes).
    return closing_ || close_after_flush_ || native_file_route_ != nullptr || block_on_output() ? kPause
                                                                                                  : kContinue;
  }
  if (in_flight_) {
    server_->handler()->on_body_complete(*this);
    // Pipelining: do not parse the next request until this response is complete.
    if (in_flight_) return kPause;
  }
  // The response is complete already (an app that answered synchronously: its Task started eagerly and finished
  // while this message was still being parsed, so finish_response() left the keep-alive bound to this point).
  if (!in_flight_ && !close_after_response_) arm_keep_alive();
  return close_after_flush_ || block_on_output() ? kPause : kContinue;
}

void Connection::answer_native() {
  // A route answered by a file: marked before it runs, so that a file sent at once (inside send_file()) is not
  // taken for an app's (file_done()); the status stays -1 until run_native_route() returns.
  const NativeRoute* route = native_.route;
  if (route != nullptr && route->sends_file()) {
    native_file_route_ = route;
    native_file_status_ = -1;
  }
  const int status = run_native_request(*this, native_);
  if (closing_ && !in_flight_) {
    // The client left while its file was going out (close() counted the request out): its access line all the
    // same, as uvicorn logs a response when it starts.
    if (route != nullptr && route->sends_file()) server_->handler()->on_native_response(*this, status);
    return;
  }
  if (file_ != nullptr && native_file_route_ != nullptr) {
    native_file_status_ = status;  // file_done() completes the request
    return;
  }
  native_file_route_ = nullptr;
  finish_native(status, route);
}

void Connection::finish_native(int status, const NativeRoute* route) {
  count_native_response(*server_, *this, route, status, request_start_ns_);
  in_flight_ = false;
  server_->active_requests_--;
  // close_after_response_: a graceful shutdown began while a file was going out.
  if (!response_.keep_alive() || close_after_response_) {
    close_after_response_ = true;
    close_when_flushed();
  } else {
    arm_keep_alive();
  }
}

void Connection::reject_request(int status, const char* reason) {
  server_->counters().bad_requests++;
  server_->handler()->on_bad_request(*this, status, reason);
  stop_reading();
  if (in_flight_) {
    // The request being streamed to the app turned out malformed (e.g. bad chunk framing): the app sees a
    // disconnect. If its response has not started, the client still gets the 400; else the stream just closes.
    const bool started = response_.started();
    in_flight_ = false;
    server_->active_requests_--;
    if (!native_.active()) server_->handler()->on_disconnect(*this);
    if (started) {
      close();
      return;
    }
  }
  const char* body = "Invalid HTTP request received.";
  switch (status) {
    case 413: body = "Request body too large."; break;
    case 414: body = "Request-URI too long."; break;
    case 431: body = "Request header fields too large."; break;
    case 501: body = "Unsupported transfer encoding."; break;
    default: break;
  }
  answer_error(status, body);
  close_after_response_ = true;
  close_when_flushed();
}
// ---------------------------------------------------------------------------------------------------------------
// Timers and closing
// ---------------------------------------------------------------------------------------------------------------

// The timer is lazy: it is not stopped when a request begins nor restarted when it ends. When it fires,
// check_timeouts() looks at what the connection is doing and either closes it or re-arms for the next deadline.
// NOTE: stopping and restarting it per request cost ~0.8% of server CPU on raw ASGI plain text (perf; two
// timer-heap operations per request); a lazy timer costs a comparison.
void Connection::arm_timer(std::uint64_t due_ms) {
  if (closing_ || (timer_armed_ && timer_due_ms_ <= due_ms)) return;
  const std::uint64_t now = uv.uv_now(server_->loop());
  uv.uv_timer_start(&timer_, &Connection::on_timer, due_ms > now ? due_ms - now : 0, 0);
  timer_armed_ = true;
  timer_due_ms_ = due_ms;
}

void Connection::arm_keep_alive() {
  if (closing_ || in_flight_) return;
  idle_ = true;
  idle_since_ms_ = uv.uv_now(server_->loop());
  arm_timer(idle_since_ms_ + server_->config().keep_alive_ms);
}

void Connection::on_timer(uv_timer_t* t) {
  Connection* c = static_cast<Connection*>(t->data);
  c->timer_armed_ = false;
  if (c->closing_) return;
  CallbackScope scope(c->server_->handler());
  // No exception may unwind into libuv: a bound that cannot be served (memory exhausted) closes the connection.
  try {
    c->check_timeouts();
  } catch (...) {
    c->close();
  }
}

void Connection::check_timeouts() {
  const ServerConfig& cfg = server_->config();
  const std::uint64_t now = uv.uv_now(server_->loop());
  std::uint64_t next_due = UINT64_MAX;
  // Each bound: past it -> act; else remember when it falls due.
  auto due = [&](std::uint64_t since, std::uint64_t limit) {
    if (now - since >= limit) return true;
    next_due = std::min(next_due, since + limit);
    return false;
  };
  // A file waiting for the socket to take more: its last progress is last_write_ms_ (sendfile updates it).
  if (file_ != nullptr && file_->waiting && tls_ == nullptr && pending_writes_ == 0 && cfg.send_timeout_ms > 0 &&
      due(last_write_ms_, cfg.send_timeout_ms)) {
    server_->handler()->on_timeout(*this, "send timeout: the client does not read its response");
    close();
    return;
  }
  // Output the client does not take. Any shrinking of libuv's queue counts as progress.
  if (pending_writes_ > 0) {
    const std::size_t queued = io_.stream.write_queue_size;
    if (queued < queue_at_check_) last_write_ms_ = now;
    queue_at_check_ = queued;
    if (cfg.send_timeout_ms > 0 && due(last_write_ms_, cfg.send_timeout_ms)) {
      server_->handler()->on_timeout(*this, "send timeout: the client does not read its response");
      close();
      return;
    }
  }
  // HTTP/2: responses the peer's flow-control window holds back. A client that never opens its window (zero-window
  // stall) keeps nothing here longer than the send bound.
  if (h2_ != nullptr && cfg.send_timeout_ms > 0 && h2_->output_waiting() &&
      due(h2_->last_progress_ms(), cfg.send_timeout_ms)) {
    server_->handler()->on_timeout(*this, "send timeout: the HTTP/2 client does not take its responses");
    close();
    return;
  }
  // HTTP/2: each stream's request body has the HTTP/1.1 body bound; a stalled stream is reset, not the connection.
  if (h2_ != nullptr && cfg.body_timeout_ms > 0) {
    next_due = std::min(next_due, h2_->expire_stalled_bodies(now, cfg.body_timeout_ms));
    if (closing_) return;
  }
  if (ws_state_ != kWsNone) {
    // A WebSocket session is never idle-closed; its keepalive pings and its closing handshake have bounds.
    if (!ws_keepalive(now, &next_due)) {
      // Failed with 1011: the close frame is on its way (the send bound, when armed, still applies).
      if (!closing_ && next_due != UINT64_MAX) arm_timer(next_due);
      return;
    }
    if (ws_close_due_ms_ != 0) {
      if (now >= ws_close_due_ms_) {
        close();
        return;
      }
      next_due = std::min(next_due, ws_close_due_ms_);
    }
  } else if (reading_head_ && tls_ != nullptr && !tls_->handshake_done()) {
    if (due(head_started_ms_, cfg.tls_handshake_timeout_ms)) {
      server_->counters().tls_handshake_failures++;
      server_->handler()->on_timeout(*this, "TLS handshake timeout: the handshake did not complete in time");
      close();
      return;
    }
  } else if (reading_head_) {
    if (cfg.header_timeout_ms > 0 && due(head_started_ms_, cfg.header_timeout_ms)) {
      server_->handler()->on_timeout(*this, "header timeout: the request head did not arrive in time");
      server_->counters().bad_requests++;
      stop_reading();
      answer_error(408, "Request Timeout");
      close_after_response_ = true;
      close_when_flushed();
      return;
    }
  } else if (in_flight_ && parser_.message_in_progress() && reading_ && !paused_) {
    // The body is being read (not held back by the app): the client must keep sending it.
    if (cfg.body_timeout_ms > 0 && due(last_body_ms_, cfg.body_timeout_ms)) {
      server_->handler()->on_timeout(*this, "body timeout: the request body stopped arriving");
      close();  // the app sees http.disconnect
      return;
    }
  } else if (idle_ && !in_flight_ && (h2_ == nullptr || !h2_->has_active())) {
    if (due(idle_since_ms_, cfg.keep_alive_ms)) {
      if (h2_ != nullptr) {
        h2_->shutdown();  // an idle HTTP/2 connection says GOAWAY before it closes
        close_when_flushed();
        return;
      }
      close();
      return;
    }
  }
  if (next_due != UINT64_MAX) arm_timer(next_due);
}

// ---------------------------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------------------------

void Connection::close_when_flushed() {
  close_after_flush_ = true;
  stop_reading();
  if (!in_read_ || closing_) flush();
}

void Connection::close_when_idle() {
  if (closing_) return;
  if (h2_ != nullptr) {
    // GOAWAY naming the last stream taken; the streams in progress finish, then the connection closes.
    close_after_response_ = true;
    h2_->shutdown();
    if (h2_->idle()) close_when_flushed();
    else cork();
    return;
  }
  switch (ws_state_) {
    case kWsNone:
      break;
    case kWsHandshake:
      // As uvicorn: a handshake the app has not answered yet gets a 500.
      if (!response_.started()) answer_error(500, "Internal Server Error");
      close_when_flushed();
      return;
    case kWsOpen:
      ws_state_ = kWsDone;
      ws::append_close(out_, ws::kCloseServiceRestart, "");
      server_->handler()->on_ws_close(*this, ws::kCloseServiceRestart, "");
      close_when_flushed();
      return;
    case kWsClosing:
    case kWsDone:
      close_when_flushed();
      return;
  }
  close_after_response_ = true;
  if (in_flight_ || parser_.message_in_progress()) return;  // closed after this response
  if (!received_ && idle_) {
    // Accepted, but not a byte read yet: its first request is most likely on its way (clients send as soon as they
    // have connected, and a worker being restarted may have accepted it an instant before the signal). Closing it
    // would reset that request, so the keep-alive bound is brought forward to kFreshShutdownGraceMs from now: a
    // request arriving by then is served (with `connection: close`), else the timer closes the connection.
    const std::uint64_t now = uv.uv_now(server_->loop());
    const std::uint64_t keep_alive = server_->config().keep_alive_ms;
    if (now + kFreshShutdownGraceMs < idle_since_ms_ + keep_alive)
      idle_since_ms_ = now + kFreshShutdownGraceMs >= keep_alive ? now + kFreshShutdownGraceMs - keep_alive : 0;
    arm_timer(idle_since_ms_ + keep_alive);
    return;
  }
  close_when_flushed();
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  if (corked_) {
    corked_ = false;
    server_->uncork(this);
  }
  stop_reading();
  if (h2_ != nullptr) h2_->connection_lost();  // every stream's app sees http.disconnect
  if (in_flight_) {
    in_flight_ = false;
    server_->active_requests_--;
    if (!native_.active() && native_file_route_ == nullptr) server_->handler()->on_disconnect(*this);
  }
  if (native_file_route_ != nullptr) {
    // A native file cut short (client gone, send timeout): its access line all the same, as uvicorn logs a
    // response when it starts (not when the head itself could not be sent: status still -1).
    native_file_route_ = nullptr;
    if (native_file_status_ >= 0) server_->handler()->on_native_response(*this, native_file_status_);
  }
  if (file_ != nullptr) {
    ::close(file_->fd);
    file_.reset();
  }
  uv.uv_timer_stop(&timer_);
  // The poll handle first: its descriptor is a dup of the stream's, closed in its close callback.
  if (file_poll_ != nullptr)
    uv.uv_close(reinterpret_cast<uv_handle_t*>(&file_poll_->handle), &Connection::on_handle_closed);
  uv.uv_close(&io_.handle, &Connection::on_handle_closed);
  uv.uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::on_handle_closed);
}

void Connection::on_handle_closed(uv_handle_t* h) {
  Connection* c = static_cast<Connection*>(h->data);
  live_handles_add(-1);
  if (c->file_poll_ != nullptr && h == reinterpret_cast<uv_handle_t*>(&c->file_poll_->handle)) {
    ::close(c->file_poll_->fd);
    c->file_poll_->fd = -1;
  }
  if (--c->open_handles_ > 0) return;
  Server* server = c->server_;
  // The handler outlives the server; the server may be deleted by on_callback_end() once this was its last
  // connection, which is why the scope holds the handler, not the server.
  CallbackScope scope(server->handler());
  server->unlink(c);
  server->handler()->on_closed(*c);
  delete c;
}

}  // namespace fa
