// Connection, part 3: the WebSocket session after a handshake (RFC 6455): accept, frames in and out, closing
// handshake. Framing itself is http/websocket.h; the app's side is AppHandler::on_ws_*.
#include "server/connection.h"

#include "core/uv_api.h"
#include "server/server.h"

namespace fa {

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
  ws_close_due_ms_ = uv.uv_now(server_->loop()) + server_->config().ws_close_timeout_ms;
  arm_timer(ws_close_due_ms_);
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
}  // namespace fa
