// Connection: the layers of one connection put together (see connection.h): the transport's events to the session in
// charge, the switch to HTTP/2 or to a WebSocket session, the time bounds, closing.
#include "server/connection.h"

#include <algorithm>
#include <cstring>

#include "core/uv_api.h"
#include "server/h2_session.h"
#include "server/server.h"
#include "server/ws_session.h"

namespace fa {

namespace {

// RFC 9113 3.4: every HTTP/2 connection begins with these 24 bytes from the client.
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

Connection::Connection(Server* server, bool tcp)
    : server_(server), transport_(server, this, tcp), http1_(server, this, transport_), session_(&http1_) {}

Connection::~Connection() = default;  // here, where H2Session and WsSession are complete types

bool Connection::accept_from(uv_stream_t* listener) {
  server_->link(this);
  if (!transport_.accept_from(listener)) return false;
  sniff_h2_ = server_->config().http2.enabled && !transport_.is_tls();
  http1_.arm_keep_alive();  // a client that connects and sends nothing (not even a TLS ClientHello) is idle
  return true;
}

void Connection::log_timeout(const char* what) { server_->handler()->on_timeout(*this, what); }

// ---------------------------------------------------------------------------------------------------------------
// The transport's events
// ---------------------------------------------------------------------------------------------------------------

void Connection::on_transport_input(char* data, std::size_t len) {
  if (sniff_h2_) {
    if (h2_sniff(data, len)) return;
    if (!sniffed_.empty()) {
      // A few bytes were held back while they could still have been the HTTP/2 preface: parse them first.
      std::string pending;
      pending.swap(sniffed_);
      pending.append(data, len);
      session_->receive(pending.data(), pending.size());
      return;
    }
  }
  session_->receive(data, len);
}

void Connection::on_transport_read_end() {
  // Also with nothing to write: a close decided during this read (close_when_flushed) happens here, and TLS
  // handshake records go out.
  if (transport_.has_output() || h2_ != nullptr) flush();
  if (!transport_.closing()) session_->read_end();
}

void Connection::on_transport_output(bool drained) { session_->output_progress(drained); }

bool Connection::transport_output_pending() const { return session_->output_pending(); }

void Connection::on_tls_handshake_done() {
  // From here the connection waits for its first request like any idle keep-alive connection.
  http1_.arm_keep_alive();
  if (server_->config().http2.enabled && transport_.alpn() == "h2") start_h2();
}

void Connection::on_tls_failure(const char* reason) { server_->handler()->on_tls_error(*this, reason); }

void Connection::on_transport_timer() {
  const std::uint64_t now = uv.uv_now(server_->loop());
  std::uint64_t next_due = UINT64_MAX;
  if (!transport_.check_timeouts(now, &next_due)) return;
  // While the TLS handshake is under way, its bound is the only one.
  if (!transport_.handshaking()) next_due = std::min(next_due, session_->check_timeouts(now));
  if (next_due != UINT64_MAX && !transport_.closing()) transport_.arm_timer(next_due);
}

// ---------------------------------------------------------------------------------------------------------------
// HTTP/2: deciding that the connection speaks it (ALPN "h2" after the TLS handshake, or the client's connection
// preface on a plain port: h2c by prior knowledge)
// ---------------------------------------------------------------------------------------------------------------

bool Connection::start_h2() {
  h2_ = std::make_unique<H2Session>(*this);
  if (!h2_->ok()) {
    h2_.reset();
    close();
    return false;
  }
  session_ = h2_.get();
  sniff_h2_ = false;
  return true;
}

bool Connection::h2_sniff(const char* data, std::size_t len) {
  const std::size_t have = sniffed_.size();
  const std::size_t n = std::min(len, kPreface.size() - have);
  if (std::memcmp(data, kPreface.data() + have, n) != 0) {
    sniff_h2_ = false;  // HTTP/1.x; bytes held back in sniffed_ are its beginning (parsed first)
    return false;
  }
  if (have + n < kPreface.size()) {
    sniffed_.append(data, len);  // a prefix of the preface: wait for the rest
    return true;
  }
  if (!start_h2()) return true;
  std::string held;
  held.swap(sniffed_);
  held.append(data, len);
  h2_->receive(held.data(), held.size());
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket: the HTTP/1.1 session holds the handshake; once the app accepts, a WsSession takes the input
// ---------------------------------------------------------------------------------------------------------------

const char* Connection::ws_accept(std::string_view accept_key, const std::string_view* names,
                                  const std::string_view* values, std::size_t count, std::string_view subprotocol) {
  if (closing() || !http1_.ws_handshake_open()) return "the WebSocket handshake is no longer open";
  for (std::size_t i = 0; i < count; ++i)
    if (const char* err = header_error(names[i], values[i])) return err;
  if (!is_valid_header_value(subprotocol)) return "Invalid subprotocol in websocket.accept";
  // Everything that may throw (std::bad_alloc) before anything changes: the handshake then stays open.
  std::string extensions;
  ws::DeflateParams params;
  const bool deflate = server_->config().ws_per_message_deflate &&
                       negotiate_ws_deflate(http1_.head(), &params, &extensions) == ws::Negotiation::kAccepted;
  if (!deflate) extensions.clear();
  auto ws = std::make_unique<WsSession>(server_, this, transport_, http1_, deflate ? &params : nullptr);
  ws->write_handshake(accept_key, extensions, names, values, count, subprotocol);
  http1_.ws_accepted();
  ws_ = std::move(ws);
  session_ = ws_.get();
  ws_->start(http1_.take_held_input());
  return nullptr;
}

void Connection::ws_send(bool text, const char* data, std::size_t len) {
  if (ws_ != nullptr) ws_->send(text, data, len);
}

void Connection::ws_close(int code, std::string_view reason) {
  if (ws_ != nullptr) ws_->close(code, reason);
}

void Connection::ws_app_done() {
  if (ws_ != nullptr) ws_->app_done();
}

void Connection::ws_resume() {
  if (ws_ != nullptr) ws_->resume();
}

bool Connection::ws_open() const { return ws_ != nullptr && ws_->open(); }

// ---------------------------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------------------------

void Connection::close_when_idle() {
  if (closing()) return;
  session_->close_when_idle();
}

void Connection::on_transport_closing() {
  if (h2_ != nullptr) h2_->connection_lost();  // every stream's app sees http.disconnect
  http1_.connection_lost();                    // the request's (or the WebSocket's) app sees a disconnect
}

void Connection::on_transport_closed() {
  Server* server = server_;
  // The handler outlives the server; the server may be deleted by on_callback_end() once this was its last
  // connection, which is why the scope holds the handler, not the server.
  CallbackScope scope(server->handler());
  server->unlink(this);
  server->handler()->on_closed(*this);
  delete this;
}

}  // namespace fa
