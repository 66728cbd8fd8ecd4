// Connection, part 3: the WebSocket session after a handshake (RFC 6455): accept, frames in and out, closing
// handshake. Framing itself is http/websocket.h; the app's side is AppHandler::on_ws_*.
#include "server/connection.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include "core/uv_api.h"
#include "server/server.h"

namespace fa {

namespace {

// permessage-deflate against the request's Sec-WebSocket-Extensions values (ws_deflate.h). The request head stays
// valid for the whole session (a WebSocket connection carries one request), so the handshake check and the accept
// both read it.
ws::Negotiation negotiate_deflate(const RequestHead& head, ws::DeflateParams* params, std::string* response) {
  std::vector<std::string_view> values;
  for (const auto& h : head.headers)
    if (head.str(h.first) == "sec-websocket-extensions") values.push_back(trim_ows(head.str(h.second)));
  if (values.empty()) return ws::Negotiation::kNone;
  return ws::negotiate_deflate(values.data(), values.size(), params, response);
}

const char rd_fallback_anchor = 0;

// Keepalive ping payloads: 4 bytes that tell our ping's pong from any other pong (as websockets and uvicorn use 4
// random bytes). A splitmix64 sequence from a random seed; atomic only because several loops may run in threads.
std::uint64_t ping_seed() {
  try {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  } catch (...) {  // no entropy source: any varying value does (the payload needs to be distinct, not secret)
    return monotonic_ns() ^ reinterpret_cast<std::uintptr_t>(&rd_fallback_anchor);
  }
}

std::uint32_t next_ping_payload() {
  static std::atomic<std::uint64_t> state{ping_seed()};
  std::uint64_t z = state.fetch_add(0x9E3779B97F4A7C15ull, std::memory_order_relaxed) + 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return static_cast<std::uint32_t>(z ^ (z >> 31));
}

}  // namespace

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
    server_->handler()->on_ws_refused(*this, status);
    close_after_response_ = true;
    close_when_flushed();
    return kPause;
  }
  if (server_->config().ws_per_message_deflate) {
    // As websockets with the extension enabled: a Sec-WebSocket-Extensions value that does not parse refuses the
    // handshake before the app sees it (the negotiation itself happens on accept).
    ws::DeflateParams params;
    std::string error;
    if (negotiate_deflate(head, &params, &error) == ws::Negotiation::kInvalidHeader) {
      answer_error(400, "Failed to open a WebSocket connection: " + error + ".\n");
      server_->handler()->on_ws_refused(*this, 400);
      close_after_response_ = true;
      close_when_flushed();
      return kPause;
    }
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
  const ServerConfig& cfg = server_->config();
  // Everything that may throw (std::bad_alloc) before anything changes: the handshake then stays open.
  auto parser = std::make_unique<ws::FrameParser>(this, cfg.ws_max_message);
  std::unique_ptr<ws::Deflater> deflater;
  std::string extensions;
  ws::DeflateParams params;
  if (cfg.ws_per_message_deflate && negotiate_deflate(head(), &params, &extensions) == ws::Negotiation::kAccepted) {
    parser->set_inflater(std::make_unique<ws::Inflater>(params.client_max_window_bits,
                                                        params.client_no_context_takeover, cfg.ws_max_message));
    deflater = std::make_unique<ws::Deflater>(params.server_max_window_bits, params.server_no_context_takeover);
  } else {
    extensions.clear();
  }
  ws_ = std::move(parser);
  ws_deflate_ = std::move(deflater);
  out_.append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              "Sec-WebSocket-Accept: ");
  out_.append(accept_key);
  out_.append("\r\n");
  if (!extensions.empty()) {
    out_.append("Sec-WebSocket-Extensions: ");
    out_.append(extensions);
    out_.append("\r\n");
  }
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
  if (cfg.ws_ping_interval_ms > 0) {
    ws_keepalive_due_ms_ = uv.uv_now(server_->loop()) + cfg.ws_ping_interval_ms;
    arm_timer(ws_keepalive_due_ms_);
  }
  flush();
  if (!closing_) resume();  // frames that arrived with the handshake, then reading
  return nullptr;
}

void Connection::ws_send(bool text, const char* data, std::size_t len) {
  if (closing_ || ws_state_ != kWsOpen) return;
  ws::ByteBuffer* compressed = nullptr;
  if (ws_deflate_ != nullptr) {
    // Every message is compressed, as websockets (uvicorn) does: the negotiated client expects RSV1 messages and a
    // shared LZ77 window makes even short repetitive messages small. The server's scratch holds the result only
    // until flush() has handed it to the socket (or copied what the socket could not take).
    compressed = &server_->ws_deflate_scratch();
    if (!ws_deflate_->compress(data, len, *compressed)) throw std::bad_alloc();  // the app's send() raises
    data = compressed->data();
    len = compressed->size();
  }
  char h[10];
  out_.append(h, ws::frame_header(h, text ? ws::kText : ws::kBinary, len, true, compressed != nullptr));
  if (len >= 16 * 1024) {
    flush(data, len);  // large payloads by reference, copied only if the socket cannot take them now
  } else {
    out_.append(data, len);
    flush();
  }
  if (compressed != nullptr) compressed->trim(1 << 20);
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

void Connection::on_ws_pong(const char* data, std::size_t len) {
  // Only the pong to our keepalive ping counts (as uvicorn: unsolicited and stale pongs are ignored).
  if (!ws_awaiting_pong_ || len != 4) return;
  std::uint32_t v;
  std::memcpy(&v, data, 4);
  if (v != ws_ping_payload_) return;
  ws_awaiting_pong_ = false;
  // The next ping an interval after the last one was sent (uvicorn: interval - round trip from now).
  const ServerConfig& cfg = server_->config();
  const std::uint64_t now = uv.uv_now(server_->loop());
  const std::uint64_t sent = ws_keepalive_due_ms_ - cfg.ws_ping_timeout_ms;
  ws_keepalive_due_ms_ = sent + cfg.ws_ping_interval_ms > now ? sent + cfg.ws_ping_interval_ms : now;
  arm_timer(ws_keepalive_due_ms_);
}

bool Connection::ws_keepalive(std::uint64_t now, std::uint64_t* next_due) {
  if (ws_state_ != kWsOpen || ws_keepalive_due_ms_ == 0) return true;
  if (now < ws_keepalive_due_ms_) {
    *next_due = std::min(*next_due, ws_keepalive_due_ms_);
    return true;
  }
  if (ws_awaiting_pong_) {
    // As websockets: the peer is presumed gone; the app sees websocket.disconnect with 1011.
    server_->handler()->on_timeout(*this, "WebSocket keepalive ping timeout");
    ws_awaiting_pong_ = false;
    ws_fail(ws::kCloseInternalError, "keepalive ping timeout");
    return false;
  }
  const ServerConfig& cfg = server_->config();
  ws_ping_payload_ = next_ping_payload();
  ws::append_frame(out_, ws::kPing, reinterpret_cast<const char*>(&ws_ping_payload_), 4);
  if (cfg.ws_ping_timeout_ms != ServerConfig::kNoPingTimeout) {
    ws_awaiting_pong_ = true;
    ws_keepalive_due_ms_ = now + cfg.ws_ping_timeout_ms;
  } else {
    ws_keepalive_due_ms_ = now + cfg.ws_ping_interval_ms;  // pongs are not waited for
  }
  flush();
  if (closing_) return false;
  *next_due = std::min(*next_due, ws_keepalive_due_ms_);
  return true;
}

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
