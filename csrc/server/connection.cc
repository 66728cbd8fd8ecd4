#include "server/connection.h"

#include <llhttp.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/uv_api.h"
#include "server/native_handlers.h"
#include "server/server.h"

namespace fa {

namespace {

struct WriteReq {
  uv_write_t req;
  std::size_t len;
  char data[1];
};

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
    : server_(server), parser_(this, &server->config().limits), tcp_(tcp) {}

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
  start_reading();
  arm_keep_alive();
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
    c->close();
  }
}

void Connection::on_read_data(ssize_t nread, const uv_buf_t* buf) {
  Connection* c = this;
  if (server_->stages().enabled) read_start_ns_ = monotonic_ns();
  if (nread < 0) {
    c->handle_eof();
  } else {
    c->server_->counters().bytes_in += static_cast<std::uint64_t>(nread);
    c->in_read_ = true;
    if (c->paused_) {
      c->in_.append(buf->base, static_cast<std::size_t>(nread));
      // Bounded read-ahead: stop pulling from the socket while the app is behind.
      if (c->in_.size() > c->server_->config().body_high_water) c->stop_reading();
    } else {
      c->process(buf->base, static_cast<std::size_t>(nread));
    }
    c->in_read_ = false;
    // Also with nothing to write: a close decided during this read (close_when_flushed) happens here.
    if ((!c->out_.empty() || c->close_after_flush_) && !c->closing_) c->flush();
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
  if (!paused_ && !closing_ && (ws_ != nullptr ? !close_after_flush_ : !close_after_response_)) start_reading();
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
  idle_ = false;  // the keep-alive timer, if it fires now, finds the connection busy and stays disarmed
  // Until the head is complete, an error answer knows nothing of this request (not even whether it is a HEAD).
  response_.reset(false, false, false);
  request_start_ns_ = monotonic_ns();
  request_write_ns_ = 0;
}

int Connection::on_request_head(RequestHead& head) {
  const bool http10 = head.http_major == 1 && head.http_minor == 0;
  // Upgrades (WebSocket) are answered as plain HTTP; what follows on the stream is another protocol.
  if (head.upgrade) close_after_response_ = true;
  bool keep_alive = head.keep_alive && !server_->shutting_down() && !close_after_response_;
  response_.reset(head.method == HTTP_HEAD, keep_alive, http10);
  native_ = nullptr;
  native_405_ = false;
  // --limit-concurrency, with uvicorn's rule: a request arriving while the open connections (this one included) or
  // the requests in progress reach the limit is answered 503 and its connection closed.
  const std::size_t limit = server_->config().limit_concurrency;
  if (limit > 0 && (server_->connection_count() >= limit || server_->active_requests() >= limit)) {
    answer_error(503, "Service Unavailable");
    server_->handler()->on_over_limit(*this);
    close_after_response_ = true;
    close_when_flushed();
    return kPause;
  }
  if (head.upgrade && server_->config().websocket && ws::is_websocket_upgrade(head)) return start_websocket(head);
  StageStats& stages = server_->stages();
  std::uint64_t t = 0;
  if (stages.enabled) {
    t = monotonic_ns();
    const std::uint64_t begin = read_start_ns_ > request_start_ns_ ? read_start_ns_ : request_start_ns_;
    stages.add(kStageReadParse, t - begin);
  }
  const Router& router = server_->router();
  if (!router.empty()) {
    const std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(head.method));
    // The one match: the parameters found here are the ones the native handler gets.
    const Router::Match m = router.match(method, head.path_view(), &native_, &native_params_, &native_allow_);
    if (stages.enabled) stages.add(kStageRoute, monotonic_ns() - t);
    if (m != Router::Match::kNone) {
      native_405_ = m == Router::Match::kMethodNotAllowed;
      if (native_405_) native_ = nullptr;
      // A client that sent `Expect: 100-continue` waits for it before sending the body (RFC 9110 10.1.1).
      if (head.expect_continue && head.has_body) out_.append("HTTP/1.1 100 Continue\r\n\r\n");
      native_body_.clear();
      in_flight_ = true;
      server_->active_requests_++;
      return kContinue;
    }
  }
  in_flight_ = true;
  server_->active_requests_++;
  continue_pending_ = head.expect_continue;
  server_->handler()->on_request(*this, head);
  if (stages.enabled) app_start_ns_ = monotonic_ns();
  return kContinue;
}

int Connection::on_request_body(const char* data, std::size_t len) {
  if (native_ != nullptr || native_405_) {
    if (native_body_.size() + len > kNativeMaxBody) {
      reject_request(413, "request body too large for a native route");
      return kPause;
    }
    native_body_.append(data, len);
    return kContinue;
  }
  if (!in_flight_ || ws_state_ != kWsNone) return kContinue;  // the app already answered: read and dropped
  return server_->handler()->on_body(*this, data, len) ? kPause : kContinue;
}

int Connection::on_request_complete() {
  if (ws_state_ != kWsNone) return kContinue;  // llhttp stops with HPE_PAUSED_UPGRADE right after
  if (native_ != nullptr || native_405_) {
    answer_native();
    native_ = nullptr;
    native_405_ = false;
    return closing_ || close_after_flush_ ? kPause : kContinue;
  }
  if (in_flight_) {
    server_->handler()->on_body_complete(*this);
    // Pipelining: do not parse the next request until this response is complete.
    if (in_flight_) return kPause;
  }
  return close_after_flush_ ? kPause : kContinue;
}

void Connection::answer_native() {
  StageStats& stages = server_->stages();
  const std::uint64_t t = stages.enabled ? monotonic_ns() : 0;
  const int status = native_405_ ? answer_method_not_allowed(*this, native_allow_)
                                 : run_native_route(*this, *native_, native_params_, native_body_);
  if (stages.enabled) stages.add(kStageNative, monotonic_ns() - t);
  server_->handler()->on_native_response(*this, status);
  in_flight_ = false;
  server_->active_requests_--;
  server_->counters().requests++;
  server_->counters().native_requests++;
  if (status >= 500) server_->counters().responses_5xx++;
  if (!response_.keep_alive()) {
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
    if (native_ == nullptr && !native_405_) server_->handler()->on_disconnect(*this);
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
// The response
// ---------------------------------------------------------------------------------------------------------------

const char* Connection::start_response(int status, const std::string_view* names, const std::string_view* values,
                                       std::size_t count) {
  return response_.write_head(out_, status, names, values, count, server_->config().defaults, server_->date());
}

const char* Connection::write_body(const char* data, std::size_t len, bool more) {
  bool emit = false;
  std::string_view suffix;
  if (const char* err = response_.frame_body(out_, len, more, &emit, &suffix)) {
    // As uvicorn: the head already "went out"; the stream is unusable now. It closes when the app's failure
    // (the error raised in its send) reaches the server.
    response_.set_keep_alive(false);
    flush();
    return err;
  }
  if (emit && len >= kZeroCopyThreshold && suffix.empty()) {
    flush(data, len);
  } else {
    if (emit) out_.append(data, len);
    out_.append(suffix);
  }
  // NOTE: a streamed chunk is corked to the end of the loop turn: a 16-chunk 64 KB StreamingResponse leaves in one
  // write instead of sixteen (uvloop corks its own transports the same way); the last one leaves with
  // finish_response().
  if (more) cork();
  return nullptr;
}

void Connection::answer_error(int status, std::string_view body, std::string_view extra_headers) {
  write_error_response(out_, status, body, extra_headers, response_.head_request(), server_->config().defaults,
                       server_->date());
  response_.set_answered(status);
}

void Connection::write_response(int status, std::string_view headers, std::string_view body, bool with_length) {
  char scratch[64];
  std::string_view line = status_line(status, scratch);
  if (line.empty()) line = status_line(500, scratch);
  out_.append(line);
  append_default_headers(out_, server_->config().defaults, server_->date());
  out_.append(headers);
  if (with_length) {
    out_.append("content-length: ");
    append_decimal(out_, body.size());
    out_.append("\r\n");
  }
  if (!response_.keep_alive()) out_.append("connection: close\r\n");
  else if (response_.http10()) out_.append("connection: keep-alive\r\n");
  out_.append("\r\n");
  if (!response_.head_request()) out_.append(body);
}

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

void Connection::flush(const char* extra, std::size_t extra_len) {
  if (closing_) {
    out_.clear();
    return;
  }
  const std::size_t total = out_.size() + extra_len;
  if (total == 0) {
    if (close_after_flush_ && pending_writes_ == 0) close();
    return;
  }
  StageStats& stages = server_->stages();
  const std::uint64_t t0 = stages.enabled ? monotonic_ns() : 0;
  std::size_t written = 0;
  if (pending_writes_ == 0) {
    uv_buf_t bufs[2];
    unsigned n = 0;
    if (!out_.empty()) bufs[n++] = uv.uv_buf_init(out_.data(), static_cast<unsigned>(out_.size()));
    if (extra_len > 0) bufs[n++] = uv.uv_buf_init(const_cast<char*>(extra), static_cast<unsigned>(extra_len));
    const int r = uv.uv_try_write(&io_.stream, bufs, n);
    if (r > 0) {
      written = static_cast<std::size_t>(r);
    } else if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
      out_.clear();
      close();
      return;
    }
  }
  server_->counters().bytes_out += written;
  if (written < total) {
    const std::size_t rest = total - written;
    auto* w = static_cast<WriteReq*>(std::malloc(sizeof(WriteReq) + rest));
    if (w == nullptr) {
      close();
      return;
    }
    w->len = rest;
    std::size_t pos = 0;
    if (written < out_.size()) {
      std::memcpy(w->data, out_.data() + written, out_.size() - written);
      pos = out_.size() - written;
      std::memcpy(w->data + pos, extra, extra_len);
    } else {
      const std::size_t skip = written - out_.size();
      std::memcpy(w->data, extra + skip, extra_len - skip);
    }
    w->req.data = this;
    uv_buf_t b = uv.uv_buf_init(w->data, static_cast<unsigned>(rest));
    if (uv.uv_write(&w->req, &io_.stream, &b, 1, &Connection::on_write) != 0) {
      std::free(w);
      out_.clear();
      close();
      return;
    }
    pending_writes_++;
  }
  out_.clear();
  if (stages.enabled) {
    const std::uint64_t dt = monotonic_ns() - t0;
    stages.add(kStageWrite, dt);
    request_write_ns_ += dt;
  }
  if (close_after_flush_ && pending_writes_ == 0) close();
}

void Connection::cork() {
  if (closing_) return;
  // Cork only while nothing is in flight and little is buffered: the backpressure check (want_drain) looks at
  // libuv's write queue, whose drain is what wakes a waiting send().
  if (pending_writes_ > 0 || out_.size() >= kCorkMaxBytes) {
    if (!in_read_) flush();
    return;
  }
  if (!corked_ && !in_read_) {
    corked_ = true;
    server_->cork(this);
  }
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  Connection* c = static_cast<Connection*>(req->data);
  c->pending_writes_--;
  if (status == 0) c->server_->counters().bytes_out += w->len;
  std::free(w);
  if (c->closing_) return;
  CallbackScope scope(c->server_->handler());
  if (status < 0) {
    c->close();
    return;
  }
  if (c->drain_wanted_ && c->write_queue_bytes() <= c->server_->config().write_low_water) {
    c->drain_wanted_ = false;
    c->server_->handler()->on_drain(*c);
  }
  if (c->close_after_flush_ && c->pending_writes_ == 0 && c->out_.empty()) c->close();
}

std::size_t Connection::write_queue_bytes() const {
  return io_.stream.write_queue_size + out_.size();  // a public field of uv_stream_t
}

bool Connection::want_drain() {
  if (write_queue_bytes() <= server_->config().write_high_water) return false;
  drain_wanted_ = true;
  return true;
}

void Connection::send_continue() {
  if (!continue_pending_) return;
  continue_pending_ = false;
  if (response_.started()) return;
  out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  flush();
}

void Connection::finish_response() {
  if (!in_flight_) return;
  in_flight_ = false;
  if (server_->stages().enabled && app_start_ns_ != 0) {
    // App time: from the Task's creation to the final send(), without the write time spent inside send().
    const std::uint64_t total = monotonic_ns() - app_start_ns_;
    server_->stages().add(kStageApp, total > request_write_ns_ ? total - request_write_ns_ : 0);
    app_start_ns_ = 0;
  }
  // The app answered without asking for the body of an `Expect: 100-continue` request: the client may or may not
  // send that body now, so the stream position is unknowable and the connection cannot be reused.
  if (continue_pending_ && parser_.message_in_progress()) close_after_response_ = true;
  continue_pending_ = false;
  server_->active_requests_--;
  server_->counters().requests++;
  if (response_.status() >= 500) server_->counters().responses_5xx++;
  if (!response_.keep_alive() || close_after_response_ || server_->shutting_down()) {
    close_after_response_ = true;
    // A request whose body was not read completely leaves the stream mid-message: it cannot be reused either.
    close_when_flushed();
    return;
  }
  // If the app answered before reading the whole body, the rest is read and dropped (in_flight_ is false now),
  // so the connection can still be reused.
  if (!in_read_) flush();
  if (closing_) return;
  if (!parser_.message_in_progress()) arm_keep_alive();
  // Inside the parser (an app that answered synchronously, e.g. under an eager task factory) parsing simply goes
  // on when the callback returns; resuming here would re-enter llhttp.
  if (!parsing_ && (paused_ || !reading_)) resume();
}

// ---------------------------------------------------------------------------------------------------------------
// Timers and closing
// ---------------------------------------------------------------------------------------------------------------

// The keep-alive timer is lazy: it is not stopped when a request begins nor restarted when it ends. When it fires
// it checks how long the connection has really been idle and re-arms for the rest. NOTE: stopping and restarting
// it per request cost ~0.8% of server CPU on raw ASGI plain text (perf; two timer-heap operations per request).
void Connection::arm_keep_alive() {
  if (closing_ || in_flight_) return;
  idle_ = true;
  idle_since_ms_ = uv.uv_now(server_->loop());
  if (!timer_armed_) {
    uv.uv_timer_start(&timer_, &Connection::on_timer, server_->config().keep_alive_ms, 0);
    timer_armed_ = true;
  }
}

void Connection::on_timer(uv_timer_t* t) {
  Connection* c = static_cast<Connection*>(t->data);
  c->timer_armed_ = false;
  if (!c->idle_ || c->in_flight_ || c->closing_) return;  // re-armed when the request in progress completes
  const std::uint64_t limit = c->server_->config().keep_alive_ms;
  const std::uint64_t idle_for = uv.uv_now(c->server_->loop()) - c->idle_since_ms_;
  if (idle_for < limit) {
    uv.uv_timer_start(&c->timer_, &Connection::on_timer, limit - idle_for, 0);
    c->timer_armed_ = true;
    return;
  }
  CallbackScope scope(c->server_->handler());
  c->close();
}

void Connection::on_ws_close_timer(uv_timer_t* t) {
  Connection* c = static_cast<Connection*>(t->data);
  c->timer_armed_ = false;
  if (c->closing_) return;
  CallbackScope scope(c->server_->handler());
  c->close();
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket
// ---------------------------------------------------------------------------------------------------------------

int Connection::start_websocket(const RequestHead& head) {
  const char* reason = "";
  const int status = ws::check_handshake(head, &reason);
  if (status != 0) {
    // As the websockets library (uvicorn's default) answers an invalid handshake.
    std::string body = "Failed to open a WebSocket connection: ";
    body += reason;
    body += ".\n";
    answer_error(status, body, status == 405 ? "allow: GET\r\n" : "");
    close_after_response_ = true;
    close_when_flushed();
    return kPause;
  }
  ws_state_ = kWsHandshake;
  in_flight_ = true;
  server_->active_requests_++;
  server_->handler()->on_websocket(*this, head);
  return kContinue;
}

const char* Connection::ws_accept(std::string_view accept_key, const std::string_view* names,
                                  const std::string_view* values, std::size_t count, std::string_view subprotocol) {
  if (closing_ || ws_state_ != kWsHandshake) return "the WebSocket handshake is no longer open";
  for (std::size_t i = 0; i < count; ++i)
    if (const char* err = header_error(names[i], values[i])) return err;
  if (!is_valid_header_value(subprotocol)) return "Invalid subprotocol in websocket.accept";
  ws_ = std::make_unique<ws::FrameParser>(this, server_->config().ws_max_message);
  out_.append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ");
  out_.append(accept_key);
  out_.append("\r\n");
  append_default_headers(out_, server_->config().defaults, server_->date());
  for (std::size_t i = 0; i < count; ++i) {
    for (char ch : names[i]) out_.push_back(ascii_lower(ch));
    out_.append(": ");
    out_.append(values[i]);
    out_.append("\r\n");
  }
  if (!subprotocol.empty()) {
    out_.append("Sec-WebSocket-Protocol: ");
    out_.append(subprotocol);
    out_.append("\r\n");
  }
  out_.append("\r\n");
  response_.set_answered(101);
  ws_state_ = kWsOpen;
  flush();
  if (!closing_) resume();  // frames that arrived with the handshake, then reading
  return nullptr;
}

void Connection::ws_send(bool text, const char* data, std::size_t len) {
  if (closing_ || ws_state_ != kWsOpen) return;
  char h[10];
  out_.append(h, ws::frame_header(h, text ? ws::kText : ws::kBinary, len));
  if (len >= 16 * 1024) {
    flush(data, len);  // large payloads by reference, copied only if the socket cannot take them now
  } else {
    out_.append(data, len);
    flush();
  }
}

void Connection::ws_close(int code, std::string_view reason) {
  if (closing_ || ws_state_ != kWsOpen) return;
  ws_state_ = kWsClosing;
  ws::append_close(out_, code, reason);
  flush();
  if (closing_) return;
  uv.uv_timer_start(&timer_, &Connection::on_ws_close_timer, server_->config().ws_close_timeout_ms, 0);
  timer_armed_ = true;
  resume();  // read on (discarding messages) until the peer's close frame
}

void Connection::ws_app_done() {
  if (closing_) return;
  if (ws_state_ == kWsOpen || ws_state_ == kWsDone) {
    // As uvicorn: an app that returns without closing the session just closes the stream.
    ws_state_ = kWsDone;
    close_when_flushed();
  }
  // kWsClosing: the close handshake completes (peer's reply) or times out.
}

void Connection::ws_process(char* data, std::size_t len) {
  if (ws_state_ == kWsDone) return;
  const ws::FrameResult r = ws_->execute(data, len);
  switch (r.kind) {
    case ws::FrameResult::kOk:
    case ws::FrameResult::kClosed:
      return;
    case ws::FrameResult::kPaused:
      paused_ = true;
      in_.append(data + r.consumed, len - r.consumed);
      if (in_.size() > server_->config().body_high_water) stop_reading();
      return;
    case ws::FrameResult::kError:
      ws_fail(r.close_code, r.reason);
      return;
  }
}

void Connection::ws_fail(int code, const char* reason) {
  const bool was_open = ws_state_ == kWsOpen;
  ws_state_ = kWsDone;
  if (was_open) {
    ws::append_close(out_, code, reason);
    server_->handler()->on_ws_close(*this, code, reason);
  }
  close_when_flushed();
}

int Connection::on_ws_message(bool text, const char* data, std::size_t len) {
  if (ws_state_ != kWsOpen) return kMsgContinue;  // after our close frame: discarded
  return server_->handler()->on_ws_message(*this, text, data, len) ? kMsgPause : kMsgContinue;
}

void Connection::on_ws_ping(const char* data, std::size_t len) {
  if (ws_state_ != kWsOpen) return;
  ws::append_frame(out_, ws::kPong, data, len);
  if (!in_read_) flush();
}

void Connection::on_ws_pong(const char*, std::size_t) {}

void Connection::on_ws_close(int code, std::string_view reason) {
  if (ws_state_ == kWsOpen) {
    // The peer starts the closing handshake: echo its close frame, tell the app, close the stream.
    ws_state_ = kWsDone;
    ws::append_close(out_, code, reason);
    server_->handler()->on_ws_close(*this, code, reason);
  } else {
    ws_state_ = kWsDone;  // the reply to our close frame
  }
  close_when_flushed();
}

void Connection::close_when_flushed() {
  close_after_flush_ = true;
  stop_reading();
  if (!in_read_ || closing_) flush();
}

void Connection::close_when_idle() {
  if (closing_) return;
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
  if (!in_flight_ && !parser_.message_in_progress()) {
    close_when_flushed();
  }
}

void Connection::close() {
  if (closing_) return;
  closing_ = true;
  if (corked_) {
    corked_ = false;
    server_->uncork(this);
  }
  stop_reading();
  if (in_flight_) {
    in_flight_ = false;
    server_->active_requests_--;
    if (native_ == nullptr && !native_405_) server_->handler()->on_disconnect(*this);
  }
  uv.uv_timer_stop(&timer_);
  uv.uv_close(&io_.handle, &Connection::on_handle_closed);
  uv.uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Connection::on_handle_closed);
}

void Connection::on_handle_closed(uv_handle_t* h) {
  Connection* c = static_cast<Connection*>(h->data);
  live_handles_add(-1);
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
