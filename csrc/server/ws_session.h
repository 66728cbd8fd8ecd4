// WsSession: a WebSocket session (RFC 6455) after the app accepted the handshake: frames in and out, permessage-
// deflate, keepalive pings, the closing handshake. Framing itself is http/websocket.h; the app's side is
// AppHandler::on_ws_*, called with the handshake's stream (whose exchange is the app's). Its time bounds: the
// keepalive (--ws-ping-interval / --ws-ping-timeout) and the peer's reply to our close frame.
//
// Lifetime: owned by its Connection from the accept on; the Http1Session that held the handshake outlives it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "http/request.h"
#include "http/websocket.h"
#include "http/ws_deflate.h"
#include "server/session.h"

namespace fa {

class Connection;
class Http1Session;
class Server;
class Transport;

// permessage-deflate against the request's Sec-WebSocket-Extensions values (ws_deflate.h). The request head stays
// valid for the whole session (a WebSocket connection carries one request), so the handshake check and the accept
// both read it.
ws::Negotiation negotiate_ws_deflate(const RequestHead& head, ws::DeflateParams* params, std::string* response);

class WsSession final : public Session, public ws::FrameListener {
 public:
  // `deflate`: the negotiated permessage-deflate parameters (nullptr: none). May throw std::bad_alloc, before
  // anything has changed.
  WsSession(Server* server, Connection* connection, Transport& transport, Http1Session& stream,
            const ws::DeflateParams* deflate);
  ~WsSession();
  WsSession(const WsSession&) = delete;
  WsSession& operator=(const WsSession&) = delete;

  // The 101 head into the output: Sec-WebSocket-Accept `accept_key`, the negotiated `extensions` (if any), the
  // default headers, the app's `count` headers (validated by the caller) and `subprotocol` (if not empty).
  void write_handshake(std::string_view accept_key, std::string_view extensions, const std::string_view* names,
                       const std::string_view* values, std::size_t count, std::string_view subprotocol);
  // The session begins: keepalive armed, the 101 sent, then `held` (frames that came with the handshake) and
  // reading.
  void start(std::string held);
  // One unfragmented text or binary message.
  void send(bool text, const char* data, std::size_t len);
  // Send a close frame and wait (--ws-close-timeout at most) for the peer's reply, then close. Further messages
  // are discarded.
  void close(int code, std::string_view reason);
  // The app is done: close the stream now (after flushing) unless a close handshake is in progress.
  void app_done();
  bool open() const { return state_ == kOpen; }
  // The app took the messages it paused for (AppHandler::on_ws_message returned true): read on.
  void resume();

  // Session
  void receive(char* data, std::size_t len) override;
  void read_end() override;
  void output_progress(bool drained) override;
  std::uint64_t check_timeouts(std::uint64_t now) override;
  void close_when_idle() override;
  void connection_lost() override {}  // the app learns it through the handshake's stream (Http1Session)
  void flush() override;

 private:
  // ws::FrameListener
  int on_ws_message(bool text, const char* data, std::size_t len) override;
  void on_ws_ping(const char* data, std::size_t len) override;
  void on_ws_pong(const char* data, std::size_t len) override;
  void on_ws_close(int code, std::string_view reason) override;

  void process(char* data, std::size_t len);
  void hold(const char* data, std::size_t len);
  void fail(int code, const char* reason);
  // A ping is due, or its pong is late. Returns false when the connection was failed (1011).
  bool keepalive(std::uint64_t now, std::uint64_t* next_due);
  // A peer that sends pings (or closes) but never reads: its pongs must not pile up.
  bool block_on_output();

  Server* server_;
  Connection* connection_;
  Transport& transport_;
  Http1Session& stream_;
  std::unique_ptr<ws::FrameParser> parser_;
  std::unique_ptr<ws::Deflater> deflater_;  // permessage-deflate negotiated: compresses what send() sends
  HeldInput held_;  // bytes read but not parsed yet (paused: the app is behind)
  enum State : std::uint8_t { kOpen, kClosing, kDone };
  State state_ = kOpen;
  bool output_blocked_ = false;
  bool awaiting_pong_ = false;
  std::uint32_t ping_payload_ = 0;
  std::uint64_t close_due_ms_ = 0;  // the peer's close reply is due (0: no close handshake pending)
  // Keepalive: when the next ping is due, or (awaiting_pong_) when the pong to ping_payload_ is; 0: no pings.
  // Served by the connection's one timer like every other bound: nothing happens per message.
  std::uint64_t keepalive_due_ms_ = 0;
};

}  // namespace fa
