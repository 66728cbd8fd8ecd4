// WsSession: frames in and out, keepalive and the closing handshake of an accepted WebSocket session.
#include "server/ws_session.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <new>
#include <random>
#include <vector>

#include "core/uv_api.h"
#include "server/connection.h"
#include "server/http1_session.h"
#include "server/server.h"
#include "server/transport.h"

namespace fa {

namespace {

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

ws::Negotiation negotiate_ws_deflate(const RequestHead& head, ws::DeflateParams* params, std::string* response) {
  std::vector<std::string_view> values;
  for (const auto& h : head.headers)
    if (head.str(h.first) == "sec-websocket-extensions") values.push_back(trim_ows(head.str(h.second)));
  if (values.empty()) return ws::Negotiation::kNone;
  return ws::negotiate_deflate(values.data(), values.size(), params, response);
}


WsSession::WsSession(Server* server, Connection* connection, Transport& transport, Http1Session& stream,
                     const ws::DeflateParams* deflate)
    : server_(server), connection_(connection), transport_(transport), stream_(stream) {
  const ServerConfig& cfg = server_->config();
  parser_ = std::make_unique<ws::FrameParser>(this, cfg.ws_max_message);
  if (deflate != nullptr) {
    parser_->set_inflater(std::make_unique<ws::Inflater>(deflate->client_max_window_bits,
                                                         deflate->client_no_context_takeover, cfg.ws_max_message));
    deflater_ = std::make_unique<ws::Deflater>(deflate->server_max_window_bits, deflate->server_no_context_takeover);
  }
}

WsSession::~WsSession() = default;

void WsSession::write_handshake(std::string_view accept_key, std::string_view extensions,
                                const std::string_view* names, const std::string_view* values, std::size_t count,
                                std::string_view subprotocol) {
  std::string& out = transport_.out();
  out.append("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Accept: ");
  out.append(accept_key);
  out.append("\r\n");
  if (!extensions.empty()) {
    out.append("Sec-WebSocket-Extensions: ");
    out.append(extensions);
    out.append("\r\n");
  }
  append_default_headers(out, server_->config().defaults, server_->date());
  for (std::size_t i = 0; i < count; ++i) {
    for (char ch : names[i]) out.push_back(ascii_lower(ch));
    out.append(": ");
    out.append(values[i]);
    out.append("\r\n");
  }
  if (!subprotocol.empty()) {
    out.append("Sec-WebSocket-Protocol: ");
    out.append(subprotocol);
    out.append("\r\n");
  }
  out.append("\r\n");
}

void WsSession::start(std::string held) {
  const ServerConfig& cfg = server_->config();
  if (cfg.ws_ping_interval_ms > 0) {
    keepalive_due_ms_ = uv.uv_now(server_->loop()) + cfg.ws_ping_interval_ms;
    transport_.arm_timer(keepalive_due_ms_);
  }
  transport_.flush();
  if (transport_.closing()) return;
  held_.reset(std::move(held));
  resume();  // frames that arrived with the handshake, then reading
}

void WsSession::flush() { transport_.flush(); }

// ---------------------------------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------------------------------

void WsSession::receive(char* data, std::size_t len) {
  if (held_.paused()) hold(data, len);
  else process(data, len);
}

void WsSession::hold(const char* data, std::size_t len) {
  if (held_.hold(data, len) > server_->config().body_high_water) transport_.stop_reading();
}

void WsSession::resume() {
  if (transport_.closing()) return;
  if (held_.paused()) held_.replay([this](char* data, std::size_t len) { process(data, len); });
  if (!held_.paused() && !transport_.closing() && !output_blocked_ && !transport_.closing_when_flushed())
    transport_.start_reading();
  if (!transport_.in_read() && !transport_.out().empty() && !transport_.closing()) transport_.flush();
}

void WsSession::process(char* data, std::size_t len) {
  if (state_ == kDone) return;
  const ws::FrameResult r = parser_->execute(data, len);
  switch (r.kind) {
    case ws::FrameResult::kOk:
    case ws::FrameResult::kClosed:
      return;
    case ws::FrameResult::kPaused:
      held_.pause();
      hold(data + r.consumed, len - r.consumed);
      return;
    case ws::FrameResult::kError:
      fail(r.close_code, r.reason);
      return;
  }
}

void WsSession::read_end() {
  if (!transport_.closing()) block_on_output();
}

bool WsSession::block_on_output() {
  if (!transport_.output_backed_up()) return false;
  output_blocked_ = true;
  transport_.stop_reading();
  return true;
}

void WsSession::output_progress(bool drained) {
  if (!drained) return;
  stream_.notify_drained();
  if (output_blocked_ && !transport_.closing()) {
    output_blocked_ = false;
    resume();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------------------------

void WsSession::send(bool text, const char* data, std::size_t len) {
  if (transport_.closing() || state_ != kOpen) return;
  ws::ByteBuffer* compressed = nullptr;
  if (deflater_ != nullptr) {
    // Every message is compressed, as websockets (uvicorn) does: the negotiated client expects RSV1 messages and a
    // shared LZ77 window makes even short repetitive messages small. The server's scratch holds the result only
    // until flush() has handed it to the socket (or copied what the socket could not take).
    compressed = &server_->ws_deflate_scratch();
    if (!deflater_->compress(data, len, *compressed)) throw std::bad_alloc();  // the app's send() raises
    data = compressed->data();
    len = compressed->size();
  }
  char h[10];
  std::string& out = transport_.out();
  out.append(h, ws::frame_header(h, text ? ws::kText : ws::kBinary, len, true, compressed != nullptr));
  if (len >= 16 * 1024) {
    transport_.flush(data, len);  // large payloads by reference, copied only if the socket cannot take them now
  } else {
    out.append(data, len);
    transport_.flush();
  }
  if (compressed != nullptr) compressed->trim(1 << 20);
}

int WsSession::on_ws_message(bool text, const char* data, std::size_t len) {
  if (state_ != kOpen) return kMsgContinue;  // after our close frame: discarded
  return server_->handler()->on_ws_message(stream_, text, data, len) ? kMsgPause : kMsgContinue;
}

void WsSession::on_ws_ping(const char* data, std::size_t len) {
  if (state_ != kOpen) return;
  ws::append_frame(transport_.out(), ws::kPong, data, len);
  if (!transport_.in_read()) transport_.flush();
}

void WsSession::on_ws_pong(const char* data, std::size_t len) {
  // Only the pong to our keepalive ping counts (as uvicorn: unsolicited and stale pongs are ignored).
  if (!awaiting_pong_ || len != 4) return;
  std::uint32_t v;
  std::memcpy(&v, data, 4);
  if (v != ping_payload_) return;
  awaiting_pong_ = false;
  // The next ping an interval after the last one was sent (uvicorn: interval - round trip from now).
  const ServerConfig& cfg = server_->config();
  const std::uint64_t now = uv.uv_now(server_->loop());
  const std::uint64_t sent = keepalive_due_ms_ - cfg.ws_ping_timeout_ms;
  keepalive_due_ms_ = sent + cfg.ws_ping_interval_ms > now ? sent + cfg.ws_ping_interval_ms : now;
  transport_.arm_timer(keepalive_due_ms_);
}

// ---------------------------------------------------------------------------------------------------------------
// Time bounds and closing
// ---------------------------------------------------------------------------------------------------------------

bool WsSession::keepalive(std::uint64_t now, std::uint64_t* next_due) {
  if (state_ != kOpen || keepalive_due_ms_ == 0) return true;
  if (now < keepalive_due_ms_) {
    *next_due = std::min(*next_due, keepalive_due_ms_);
    return true;
  }
  if (awaiting_pong_) {
    // As websockets: the peer is presumed gone; the app sees websocket.disconnect with 1011.
    connection_->log_timeout("WebSocket keepalive ping timeout");
    awaiting_pong_ = false;
    fail(ws::kCloseInternalError, "keepalive ping timeout");
    return false;
  }
  const ServerConfig& cfg = server_->config();
  ping_payload_ = next_ping_payload();
  ws::append_frame(transport_.out(), ws::kPing, reinterpret_cast<const char*>(&ping_payload_), 4);
  if (cfg.ws_ping_timeout_ms != ServerConfig::kNoPingTimeout) {
    awaiting_pong_ = true;
    keepalive_due_ms_ = now + cfg.ws_ping_timeout_ms;
  } else {
    keepalive_due_ms_ = now + cfg.ws_ping_interval_ms;  // pongs are not waited for
  }
  transport_.flush();
  if (transport_.closing()) return false;
  *next_due = std::min(*next_due, keepalive_due_ms_);
  return true;
}

std::uint64_t WsSession::check_timeouts(std::uint64_t now) {
  // A WebSocket session is never idle-closed; its keepalive pings and its closing handshake have bounds.
  std::uint64_t next_due = UINT64_MAX;
  // Failed with 1011: the close frame is on its way (the send bound, when armed, still applies).
  if (!keepalive(now, &next_due)) return next_due;
  if (close_due_ms_ != 0) {
    if (now >= close_due_ms_) {
      connection_->close();
      return UINT64_MAX;
    }
    next_due = std::min(next_due, close_due_ms_);
  }
  return next_due;
}

void WsSession::close(int code, std::string_view reason) {
  if (transport_.closing() || state_ != kOpen) return;
  state_ = kClosing;
  ws::append_close(transport_.out(), code, reason);
  transport_.flush();
  if (transport_.closing()) return;
  close_due_ms_ = uv.uv_now(server_->loop()) + server_->config().ws_close_timeout_ms;
  transport_.arm_timer(close_due_ms_);
  resume();  // read on (discarding messages) until the peer's close frame
}

void WsSession::app_done() {
  if (transport_.closing()) return;
  if (state_ == kOpen || state_ == kDone) {
    // As uvicorn: an app that returns without closing the session just closes the stream.
    state_ = kDone;
    transport_.close_when_flushed();
  }
  // kClosing: the close handshake completes (peer's reply) or times out.
}

void WsSession::close_when_idle() {
  if (state_ == kOpen) {
    state_ = kDone;
    ws::append_close(transport_.out(), ws::kCloseServiceRestart, "");
    server_->handler()->on_ws_close(stream_, ws::kCloseServiceRestart, "");
  }
  transport_.close_when_flushed();
}

void WsSession::fail(int code, const char* reason) {
  const bool was_open = state_ == kOpen;
  state_ = kDone;
  if (was_open) {
    ws::append_close(transport_.out(), code, reason);
    server_->handler()->on_ws_close(stream_, code, reason);
  }
  transport_.close_when_flushed();
}

void WsSession::on_ws_close(int code, std::string_view reason) {
  if (state_ == kOpen) {
    // The peer starts the closing handshake: echo its close frame, tell the app, close the stream.
    state_ = kDone;
    ws::append_close(transport_.out(), code, reason);
    server_->handler()->on_ws_close(stream_, code, reason);
  } else {
    state_ = kDone;  // the reply to our close frame
  }
  transport_.close_when_flushed();
}

}  // namespace fa
