// What the connection fuzz targets share: a server on a real libuv loop in this thread (fuzz_connection plain,
// fuzz_tls_connection over TLS), the app it serves, and the client-side helpers. Header-only: each target is its
// own binary.
#pragma once

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "server/connection.h"
#include "server/server.h"
#include "uv_test_support.h"

namespace fuzz {

// Answers at the head ("/now...") or once the body is complete (everything else); accepts WebSockets and echoes.
class App final : public fa::AppHandler {
 public:
  void on_request(fa::HttpStream& c, const fa::RequestHead& head) override {
    c.exchange = this;
    if (head.path_view().rfind("/now", 0) == 0) respond(c);
  }
  bool on_body(fa::HttpStream&, const char*, std::size_t) override { return false; }
  void on_body_complete(fa::HttpStream& c) override {
    if (c.exchange != nullptr) respond(c);
  }
  void on_disconnect(fa::HttpStream& c) override { c.exchange = nullptr; }
  void on_drain(fa::HttpStream&) override {}
  void on_closed(fa::Connection&) override {}
  void on_over_limit(fa::HttpStream&) override {}
  void on_native_response(fa::HttpStream&, int) override {}
  void on_bad_request(fa::HttpStream&, int, const char*) override {}
  void on_websocket(fa::HttpStream& c, const fa::RequestHead&) override {
    c.exchange = nullptr;
    (void)c.connection().ws_accept("fuzz", nullptr, nullptr, 0, "");
  }
  bool on_ws_message(fa::HttpStream& c, bool text, const char* data, std::size_t len) override {
    if (len == 5 && std::string_view(data, len) == "close") c.connection().ws_close(4000, "bye");
    else c.connection().ws_send(text, data, len);
    return false;
  }

 private:
  static void respond(fa::HttpStream& c) {
    c.exchange = nullptr;
    const std::string_view names[] = {"content-type"};
    const std::string_view values[] = {"text/plain"};
    if (c.start_response(200, names, values, 1) == nullptr) (void)c.write_body("ok", 2, false);
    c.finish_response();
  }
};

struct World {
  uv_loop_t loop;
  App app;
  std::unique_ptr<fa::Server> server;
  int port = 0;
  std::int64_t handles_at_rest = 0;
};

// The server: HTTP/2 on (inputs that begin with the preface drive an H2Session; over TLS, ALPN "h2" does), two
// native routes, the app above for everything else. `tls`: serve HTTPS with it.
inline World* make_world(std::shared_ptr<fa::TlsContext> tls = nullptr) {
  auto* v = new World();
  if (!fa_test::bind_uv().empty()) std::abort();
  uv_loop_init(&v->loop);
  fa::ServerConfig cfg;
  cfg.tls = std::move(tls);
  cfg.websocket = true;
  cfg.keep_alive_ms = 60000;
  cfg.limits.max_header_bytes = 4096;
  cfg.http2.enabled = true;  // inputs that begin with the HTTP/2 preface drive an H2Session
  v->server = std::make_unique<fa::Server>(&v->loop, &v->app, cfg);
  fa::NativeRoute text;
  text.headers = "content-type: text/plain\r\ncontent-length: 2\r\n";
  text.body = "ok";
  if (!v->server->add_route("GET", "/native", text).empty()) std::abort();
  if (!v->server->add_route("POST", "/items/{id:int}", text).empty()) std::abort();
  const int fd = fa_test::bound_loopback_socket(&v->port);
  if (fd < 0 || !v->server->listen_fd(fd, 64).empty()) std::abort();
  ::close(fd);
  uv_run(&v->loop, UV_RUN_NOWAIT);
  v->handles_at_rest = fa::live_handles();
  return v;
}

inline void turn(World* w, int n = 3) {
  for (int i = 0; i < n; ++i) uv_run(&w->loop, UV_RUN_NOWAIT);
}

// Reads what is available; returns false at EOF or error.
inline bool drain(int fd) {
  char buf[65536];
  while (true) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) continue;
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

inline int connect_nonblocking(World* w) {
  const int fd = fa_test::connect_loopback(w->port, 1000);
  if (fd >= 0) turn(w);  // accept
  return fd;
}

// Close without TIME_WAIT: two connections per input would exhaust the ephemeral ports within seconds.
inline void close_now(int fd) {
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

// After an input: the client is gone, so every connection must end and every handle close.
inline void expect_all_closed(World* w) {
  for (int i = 0; i < 100 && w->server->connection_count() > 0; ++i) turn(w);
  if (w->server->connection_count() != 0) std::abort();        // a connection outlived its client
  if (fa::live_handles() != w->handles_at_rest) std::abort();  // a handle leaked
}

}  // namespace fuzz
