// Http1Session, part 1: parsing, handing requests to the dispatcher (native route or app), pipelining, time bounds
// and closing. The response's wire format and backpressure are http1_response.cc.
#include "server/http1_session.h"

#include <llhttp.h>

#include "core/uv_api.h"
#include "server/connection.h"
#include "server/server.h"
#include "server/stage_clock.h"
#include "server/transport.h"
#include "server/ws_session.h"

namespace fa {

Http1Session::Http1Session(Server* server, Connection* connection, Transport& transport)
    : HttpStream(server, connection, nullptr), transport_(transport), parser_(this, &server->config().limits) {
  head_ = &parser_.head();
}

bool Http1Session::closing() const { return transport_.closing(); }

void Http1Session::close() { connection_->close(); }

void Http1Session::close_after_output() { transport_.close_when_flushed(); }

void Http1Session::flush() { transport_.flush(); }

// ---------------------------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------------------------

void Http1Session::receive(char* data, std::size_t len) {
  if (held_.paused()) {
    hold(data, len);
  } else {
    process(data, len);
  }
}

void Http1Session::hold(const char* data, std::size_t len) {
  // Bounded read-ahead: stop pulling from the socket while the app is behind.
  if (held_.hold(data, len) > server_->config().body_high_water) transport_.stop_reading();
}

std::string Http1Session::take_held_input() { return held_.take(); }

void Http1Session::process(char* data, std::size_t len) {
  // Runs the parser at least once even for zero bytes: after a pause inside on_body, llhttp may still owe the
  // on_message_complete callback for a body that was already fully consumed.
  if (transport_.closing()) return;
  parsing_ = true;
  const ParseResult r = parser_.execute(data, len);
  parsing_ = false;
  switch (r.kind) {
    case ParseResult::kOk:
      return;
    case ParseResult::kPaused:
      held_.pause();
      hold(data + r.consumed, len - r.consumed);
      return;
    case ParseResult::kUpgrade:
      if (upgrade_ == kUpgradeAccepted) {
        // The handler accepted synchronously: what follows the head is the WebSocket session's.
        connection_->session().receive(data + r.consumed, len - r.consumed);
        return;
      }
      if (upgrade_ == kUpgradePending) {
        // A WebSocket handshake waiting for the app's accept: what follows is frames, kept (bounded, like a
        // paused body) until the session starts. Reading goes on so that a client leaving is noticed.
        held_.pause();
        hold(data + r.consumed, len - r.consumed);
        return;
      }
      // Other protocol upgrades are not supported: the request was answered as plain HTTP; the bytes after it
      // belong to another protocol, so the connection closes after the response.
      close_after_response_ = true;
      transport_.stop_reading();
      if (!in_flight_) transport_.close_when_flushed();
      return;
    case ParseResult::kError:
      reject_request(r.status, r.reason);
      return;
  }
}

void Http1Session::resume() {
  if (transport_.closing()) return;
  if (upgrade_ == kUpgradeAccepted) {
    connection_->ws_resume();  // the app took the WebSocket messages it paused for
    return;
  }
  if (held_.paused()) {
    parser_.resume();
    held_.replay([this](char* data, std::size_t len) { process(data, len); });
  }
  if (!held_.paused() && !transport_.closing() && !output_blocked_ && !close_after_response_) transport_.start_reading();
  if (!transport_.in_read() && !transport_.out().empty() && !transport_.closing()) transport_.flush();
}

// ---------------------------------------------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------------------------------------------

void Http1Session::on_request_begin() {
  idle_ = false;  // the timer, if it fires now, finds the connection busy with a head
  reading_head_ = true;
  head_started_ms_ = server_->loop()->time;  // what uv_now() returns, without the call
  if (server_->config().header_timeout_ms > 0)
    transport_.arm_timer(head_started_ms_ + server_->config().header_timeout_ms);
  // Until the head is complete, an error answer knows nothing of this request (not even whether it is a HEAD).
  response_.reset(false, false, false);
}

int Http1Session::on_request_head(RequestHead& head) {
  const bool http10 = head.http_major == 1 && head.http_minor == 0;
  reading_head_ = false;
  if (head.has_body) {
    last_body_ms_ = server_->loop()->time;
    const std::uint64_t body_timeout = server_->config().body_timeout_ms;
    if (body_timeout > 0) transport_.arm_timer(last_body_ms_ + body_timeout);
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
      transport_.close_when_flushed();
      return kPause;
    case Dispatch::kNative:
      // The route's statistics time it from here, as over HTTP/2 (only native answers are timed: no clock read for
      // an app's request).
      request_start_ns_ = monotonic_ns();
      // A client that sent `Expect: 100-continue` waits for it before sending the body (RFC 9110 10.1.1).
      if (head.expect_continue && head.has_body) transport_.out().append("HTTP/1.1 100 Continue\r\n\r\n");
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

int Http1Session::on_request_body(const char* data, std::size_t len) {
  last_body_ms_ = server_->loop()->time;
  if (native_.active()) {
    if (!take_native_body(native_, data, len)) {
      reject_request(413, "request body too large for a native route");
      return kPause;
    }
    return kContinue;
  }
  if (!in_flight_ || upgrade_ != kUpgradeNone) return kContinue;  // the app already answered: read and dropped
  return server_->handler()->on_body(*this, data, len) ? kPause : kContinue;
}

int Http1Session::on_request_complete() {
  if (upgrade_ != kUpgradeNone) return kContinue;  // llhttp stops with HPE_PAUSED_UPGRADE right after
  if (native_.active()) {
    answer_native();
    native_.end();
    // A file still going out: the next pipelined request waits for it (on_file_sent() resumes).
    return transport_.closing() || transport_.closing_when_flushed() || native_file_route_ != nullptr ||
                   block_on_output()
               ? kPause
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
  return transport_.closing_when_flushed() || block_on_output() ? kPause : kContinue;
}

void Http1Session::answer_native() {
  // A route answered by a file: marked before it runs, so that a file sent at once (inside send_file()) is not
  // taken for an app's (on_file_sent()); the status stays -1 until run_native_route() returns.
  const NativeRoute* route = native_.route;
  if (route != nullptr && route->sends_file()) {
    native_file_route_ = route;
    native_file_status_ = -1;
  }
  const int status = run_native_request(*this, native_);
  if (transport_.closing() && !in_flight_) {
    // The client left while its file was going out (the close counted the request out): its access line all the
    // same, as uvicorn logs a response when it starts.
    if (route != nullptr && route->sends_file()) server_->handler()->on_native_response(*this, status);
    return;
  }
  if (transport_.sending_file() && native_file_route_ != nullptr) {
    native_file_status_ = status;  // on_file_sent() completes the request
    return;
  }
  native_file_route_ = nullptr;
  finish_native(status, route);
}

void Http1Session::finish_native(int status, const NativeRoute* route) {
  count_native_response(*server_, *this, route, status, request_start_ns_);
  in_flight_ = false;
  server_->active_requests_--;
  // close_after_response_: a graceful shutdown began while a file was going out.
  if (!response_.keep_alive() || close_after_response_) {
    close_after_response_ = true;
    transport_.close_when_flushed();
  } else {
    arm_keep_alive();
  }
}

void Http1Session::on_file_sent() {
  if (native_file_route_ != nullptr) {
    // A native route's file. Sent at once, inside send_file() (status still -1): answer_native() completes the
    // request when the route returns. Else the request completes now and the next pipelined one may start.
    if (native_file_status_ < 0) return;
    const NativeRoute* route = native_file_route_;
    native_file_route_ = nullptr;
    finish_native(native_file_status_, route);
    resume();
    return;
  }
  server_->handler()->on_file_sent(*this);
}

void Http1Session::reject_request(int status, const char* reason) {
  server_->counters().bad_requests++;
  server_->handler()->on_bad_request(*this, status, reason);
  transport_.stop_reading();
  if (in_flight_) {
    // The request being streamed to the app turned out malformed (e.g. bad chunk framing): the app sees a
    // disconnect. If its response has not started, the client still gets the 400; else the stream just closes.
    const bool started = response_.started();
    in_flight_ = false;
    server_->active_requests_--;
    if (!native_.active()) server_->handler()->on_disconnect(*this);
    if (started) {
      connection_->close();
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
  transport_.close_when_flushed();
}

int Http1Session::start_websocket(const RequestHead& head) {
  const char* reason = "";
  const int status = ws::check_handshake(head, &reason);
  if (status != 0) {
    // As the websockets library (uvicorn's default) answers an invalid handshake.
    refuse_websocket(status, std::string("Failed to open a WebSocket connection: ") + reason + ".\n",
                     status == 405 ? "allow: GET\r\n" : "");
    return kPause;
  }
  if (server_->config().ws_per_message_deflate) {
    // As websockets with the extension enabled: a Sec-WebSocket-Extensions value that does not parse refuses the
    // handshake before the app sees it (the negotiation itself happens on accept).
    ws::DeflateParams params;
    std::string error;
    if (negotiate_ws_deflate(head, &params, &error) == ws::Negotiation::kInvalidHeader) {
      refuse_websocket(400, "Failed to open a WebSocket connection: " + error + ".\n", "");
      return kPause;
    }
  }
  upgrade_ = kUpgradePending;
  in_flight_ = true;
  server_->active_requests_++;
  server_->handler()->on_websocket(*this, head);
  return kContinue;
}

void Http1Session::refuse_websocket(int status, const std::string& body, std::string_view extra_headers) {
  answer_error(status, body, extra_headers);
  server_->handler()->on_ws_refused(*this, status);
  close_after_response_ = true;
  transport_.close_when_flushed();
}

// ---------------------------------------------------------------------------------------------------------------
// Time bounds and closing
// ---------------------------------------------------------------------------------------------------------------

void Http1Session::arm_keep_alive() {
  if (transport_.closing() || in_flight_) return;
  idle_ = true;
  idle_since_ms_ = server_->loop()->time;  // what uv_now() returns, without the call
  transport_.arm_timer(idle_since_ms_ + server_->config().keep_alive_ms);
}

std::uint64_t Http1Session::check_timeouts(std::uint64_t now) {
  const ServerConfig& cfg = server_->config();
  std::uint64_t next_due = UINT64_MAX;
  // A WebSocket handshake waiting for the app has no bound of its own (the app answers or the client leaves).
  if (upgrade_ != kUpgradeNone) return next_due;
  if (reading_head_) {
    if (cfg.header_timeout_ms > 0 && deadline_passed(now, head_started_ms_, cfg.header_timeout_ms, &next_due)) {
      connection_->log_timeout("header timeout: the request head did not arrive in time");
      server_->counters().bad_requests++;
      transport_.stop_reading();
      answer_error(408, "Request Timeout");
      close_after_response_ = true;
      transport_.close_when_flushed();
      return UINT64_MAX;
    }
  } else if (in_flight_ && parser_.message_in_progress() && transport_.reading() && !held_.paused()) {
    // The body is being read (not held back by the app): the client must keep sending it.
    if (cfg.body_timeout_ms > 0 && deadline_passed(now, last_body_ms_, cfg.body_timeout_ms, &next_due)) {
      connection_->log_timeout("body timeout: the request body stopped arriving");
      connection_->close();  // the app sees http.disconnect
      return UINT64_MAX;
    }
  } else if (idle_ && !in_flight_) {
    if (deadline_passed(now, idle_since_ms_, cfg.keep_alive_ms, &next_due)) {
      connection_->close();
      return UINT64_MAX;
    }
  }
  return next_due;
}

void Http1Session::close_when_idle() {
  if (upgrade_ == kUpgradePending) {
    // As uvicorn: a handshake the app has not answered yet gets a 500.
    if (!response_.started()) answer_error(500, "Internal Server Error");
    transport_.close_when_flushed();
    return;
  }
  close_after_response_ = true;
  if (in_flight_ || parser_.message_in_progress()) return;  // closed after this response
  if (!transport_.received() && idle_) {
    // Accepted, but not a byte read yet: its first request is most likely on its way (clients send as soon as they
    // have connected, and a worker being restarted may have accepted it an instant before the signal). Closing it
    // would reset that request, so the keep-alive bound is brought forward to kFreshShutdownGraceMs from now: a
    // request arriving by then is served (with `connection: close`), else the timer closes the connection.
    const std::uint64_t now = uv.uv_now(server_->loop());
    const std::uint64_t keep_alive = server_->config().keep_alive_ms;
    if (now + kFreshShutdownGraceMs < idle_since_ms_ + keep_alive)
      idle_since_ms_ = now + kFreshShutdownGraceMs >= keep_alive ? now + kFreshShutdownGraceMs - keep_alive : 0;
    transport_.arm_timer(idle_since_ms_ + keep_alive);
    return;
  }
  transport_.close_when_flushed();
}

void Http1Session::connection_lost() {
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
}

}  // namespace fa
