// AppHandler: what the server calls to hand requests to the application (the bindings implement it for ASGI),
// and CallbackScope, which brackets every libuv callback of the server layer.
//
// All calls happen on the loop thread, inside libuv callbacks or inside calls the handler itself made into the
// connection. They may arrive without the GIL; the handler takes it when it needs Python and gives it back in
// on_callback_end().
#pragma once

#include <cstddef>
#include <string_view>

#include "http/request.h"
#include "server/http_stream.h"

namespace fa {

class Connection;

class AppHandler {
 public:
  virtual ~AppHandler() = default;
  // A request head arrived that no native route answers. The handler keeps per-request state in c.exchange and must
  // eventually complete the response (HttpStream::write_body with more=false, or answer_error) and call
  // c.finish_response(), or call c.close().
  virtual void on_request(HttpStream& c, const RequestHead& head) = 0;
  // Body bytes of the current request. Return true to pause reading until the handler calls c.resume().
  virtual bool on_body(HttpStream& c, const char* data, std::size_t len) = 0;
  virtual void on_body_complete(HttpStream& c) = 0;
  // The client went away (or the connection is being closed) while a request was in flight.
  virtual void on_disconnect(HttpStream& c) = 0;
  // The write queue drained below the low-water mark after c.want_drain() was called.
  virtual void on_drain(HttpStream& c) = 0;
  // The file of c.send_file() has been sent completely (the response body is complete: the handler calls
  // c.finish_response()). A transfer that fails closes the connection instead (on_disconnect).
  virtual void on_file_sent(HttpStream& c) { (void)c; }
  // The connection's handles are closed; drop anything kept in c.http1().exchange / c.app_data. Called exactly
  // once, before the connection is deleted.
  virtual void on_closed(Connection& c) = 0;
  // End of one libuv callback that may have called into the handler (where a GIL taken lazily is released).
  // Called by CallbackScope only.
  virtual void on_callback_end() {}
  // A request was refused with 503 because of --limit-concurrency (for logging).
  virtual void on_over_limit(HttpStream& c) = 0;
  // A native route answered the current request with `status` (for the access log; must be cheap when off).
  virtual void on_native_response(HttpStream& c, int status) = 0;
  // A request could not be parsed; `status` is being sent. For logging.
  virtual void on_bad_request(HttpStream& c, int status, const char* reason) = 0;
  // A time bound fired and the connection is being closed (`what`: "header timeout", ...). For debug logging.
  virtual void on_timeout(Connection& c, const char* what) { (void)c, (void)what; }
  // TLS failed on this connection (handshake refused, plain HTTP on the TLS port, a bad record); `reason` is
  // OpenSSL's. The connection is being closed. For debug logging.
  virtual void on_tls_error(Connection& c, const char* reason) { (void)c, (void)reason; }

  // ---- WebSocket (only with ServerConfig::websocket; otherwise upgrade requests are answered as plain HTTP) ----
  // A valid opening handshake arrived on `c` (the HTTP/1.1 stream that holds it for the whole session). Like
  // on_request: the handler keeps its state in c.exchange and answers either with c.connection().ws_accept(...) or
  // with an HTTP response (answer_error) and c.finish_response().
  virtual void on_websocket(HttpStream& c, const RequestHead& head) = 0;
  // The server refused an opening handshake itself (`status`: 400 for a missing or bad key, version or extension
  // header, 405 for a method other than GET); the answer is on its way, the app never saw the request.
  virtual void on_ws_refused(HttpStream& c, int status) { (void)c, (void)status; }
  // A complete message (text is valid UTF-8). Return true to pause reading until c.resume().
  virtual bool on_ws_message(HttpStream& c, bool text, const char* data, std::size_t len) {
    (void)c, (void)text, (void)data, (void)len;
    return false;
  }
  // The session is ending with `code`: the peer's close frame (echoed), a protocol error the server failed the
  // connection with (1002, 1007, 1009), or a graceful shutdown (1012). on_disconnect follows when the stream closes.
  virtual void on_ws_close(HttpStream& c, int code, std::string_view reason) { (void)c, (void)code, (void)reason; }
};

// Put first in every libuv callback of the server layer: whatever path the callback leaves by, the handler's
// on_callback_end() runs once at its end, so a GIL taken during the callback is never carried back into the loop.
// `handler` must outlive the scope (read it before anything the callback does can delete its owner).
class CallbackScope {
 public:
  explicit CallbackScope(AppHandler* handler) : handler_(handler) {}
  CallbackScope(const CallbackScope&) = delete;
  CallbackScope& operator=(const CallbackScope&) = delete;
  ~CallbackScope() { handler_->on_callback_end(); }

 private:
  AppHandler* handler_;
};

}  // namespace fa
