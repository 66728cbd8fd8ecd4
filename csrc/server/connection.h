// Connection: one accepted connection, as the server and the AppHandler know it. It puts the layers together and
// owns them:
//
//   socket -> Transport (reads, TLS, writes, cork, send bound, files, the timer)
//          -> the Session in charge: Http1Session, then possibly an H2Session (preface or ALPN "h2") or a
//             WsSession (an accepted WebSocket upgrade)
//          -> the request dispatcher (request_dispatch.h) -> native route or AppHandler
//
// and back: the stream the app answers through (Http1Session, H2Stream) frames the response into the transport's
// output; the transport writes it. The connection routes the transport's events to the session in charge and
// checks every time bound (the transport's, then the session's) when the one timer fires.
//
// Lifecycle (libuv rules): created on accept; close() closes the transport's handles; the object is deleted when the
// last one has closed (on_transport_closed), never earlier. Every method runs on the loop thread. Callbacks into the
// AppHandler may run without the GIL; the handler acquires it when it needs Python.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "server/http1_session.h"
#include "server/session.h"
#include "server/transport.h"

namespace fa {

class Server;
class H2Session;
class WsSession;

class Connection final : private TransportListener {
 public:
  Connection(Server* server, bool tcp);
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Initialise handles and accept from `listener`. On failure the connection closes itself; returns false.
  bool accept_from(uv_stream_t* listener);

  // The HTTP/1.x session: the current request's stream on an HTTP/1.x connection, and the WebSocket handshake's.
  Http1Session& http1() { return http1_; }
  // The session in charge of the connection's input.
  Session& session() { return *session_; }
  Transport& transport() { return transport_; }
  Server* server() const { return server_; }

  // Send what the session has (HTTP/2 makes its frames first).
  void flush() { session_->flush(); }
  void close() { transport_.close(); }
  bool closing() const { return transport_.closing(); }
  // Send what is buffered (HTTP/2: the frames still to make), then close; reading stops now.
  void close_when_flushed() { transport_.close_when_flushed(); }
  // Graceful stop: close now if idle, else after the exchange in flight; an open WebSocket gets a 1012 close. A
  // connection that has not received a byte yet is given a short grace for its first request.
  void close_when_idle();
  // A time bound fired and the connection is being closed (for the AppHandler's debug log).
  void log_timeout(const char* what);

  // ---- WebSocket (after AppHandler::on_websocket on http1()) ----
  // Accept the handshake: the 101 head with `accept_key` (Sec-WebSocket-Accept), the default headers, the app's
  // `count` headers (validated) and `subprotocol` (if not empty); then the WebSocket session takes the input.
  // Returns nullptr, or an error message with nothing written (the handshake is still open).
  const char* ws_accept(std::string_view accept_key, const std::string_view* names, const std::string_view* values,
                        std::size_t count, std::string_view subprotocol);
  void ws_send(bool text, const char* data, std::size_t len);
  void ws_close(int code, std::string_view reason);
  void ws_app_done();
  void ws_resume();
  bool ws_open() const;
  bool is_websocket() const { return ws_ != nullptr || http1_.ws_handshake_open(); }

  // ---- HTTP/2 (connection_h2.cc; called by the H2Session) ----
  bool is_h2() const { return h2_ != nullptr; }
  // Frames are waiting: flush at the end of this loop turn, never now (nghttp2 must not be re-entered).
  void flush_soon();
  // The input beyond this turn's batch of requests waits (reading stops) for the next batch after the next flush.
  void h2_schedule_resume();

  // ---- the peer (the transport's) ----
  const std::string& peer_host() const { return transport_.peer_host(); }
  int peer_port() const { return transport_.peer_port(); }
  const std::string& local_host() const { return transport_.local_host(); }
  int local_port() const { return transport_.local_port(); }
  bool is_tcp() const { return transport_.is_tcp(); }
  bool is_tls() const { return transport_.is_tls(); }

  // Per-connection state owned by the AppHandler (e.g. the cached client tuple).
  void* app_data = nullptr;
  Connection* prev = nullptr;
  Connection* next = nullptr;

 private:
  ~Connection();
  friend class Server;  // sets a Unix socket's local address on accept

  // TransportListener
  void on_transport_input(char* data, std::size_t len) override;
  void on_transport_read_end() override;
  void on_transport_output(bool drained) override;
  bool transport_output_pending() const override;
  void on_transport_flush_due() override { flush(); }
  void on_tls_handshake_done() override;
  void on_transport_timer() override;
  void on_file_sent() override { http1_.on_file_sent(); }
  void on_transport_timeout(const char* what) override { log_timeout(what); }
  void on_tls_failure(const char* reason) override;
  void on_transport_closing() override;
  void on_transport_closed() override;

  // HTTP/2 (connection_h2.cc).
  bool start_h2();
  // Plain port with --http2: true when it took the bytes (the preface, or a prefix of it, held back).
  bool h2_sniff(const char* data, std::size_t len);

  Server* server_;
  Transport transport_;
  Http1Session http1_;
  std::unique_ptr<WsSession> ws_;  // after the app accepted a WebSocket handshake
  std::unique_ptr<H2Session> h2_;  // HTTP/2 on this connection (after the preface or ALPN h2)
  Session* session_;               // the one in charge: http1_, *ws_ or *h2_
  std::string sniffed_;            // plain port with --http2: first bytes held while they may be the preface
  bool sniff_h2_ = false;
};

}  // namespace fa
