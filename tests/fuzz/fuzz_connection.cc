// libFuzzer target: the connection state machine (fa::Connection over a real fa::Server on a real libuv loop),
// driven by a loopback client in this thread. The input is split on 0xFE into separate sends with loop turns in
// between (reads split anywhere, pipelining, bodies across reads, WebSocket frames after an accept); then the
// client half-closes and the connection must end. HTTP/2 is on: an input that begins with the client preface
// drives H2Session and its streams instead of the HTTP/1.1 parser. Invariants: no sanitizer finding, the server
// closes every connection and handle it opened, and it always keeps answering: a fresh request after each input
// gets a 200.
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

namespace {

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

World* world() {
  static World* w = [] {
    auto* v = new World();
    if (!fa_test::bind_uv().empty()) std::abort();
    uv_loop_init(&v->loop);
    fa::ServerConfig cfg;
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
  }();
  return w;
}

void turn(World* w, int n = 3) {
  for (int i = 0; i < n; ++i) uv_run(&w->loop, UV_RUN_NOWAIT);
}

// Reads what is available; returns false at EOF or error.
bool drain(int fd) {
  char buf[65536];
  while (true) {
    const ssize_t r = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) continue;
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

int connect_nonblocking(World* w) {
  const int fd = fa_test::connect_loopback(w->port, 1000);
  if (fd >= 0) turn(w);  // accept
  return fd;
}

// Close without TIME_WAIT: two connections per input would exhaust the ephemeral ports within seconds.
void close_now(int fd) {
  const linger l{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  ::close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  World* w = world();
  const int fd = connect_nonblocking(w);
  if (fd < 0) return 0;  // the machine ran out of something (ports, descriptors): not the server's doing
  std::string_view rest(reinterpret_cast<const char*>(bytes), size);
  bool open = true;
  while (open && !rest.empty()) {
    const std::size_t cut = rest.find('\xfe');
    const std::string_view piece = rest.substr(0, cut);
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
    if (!piece.empty() && ::send(fd, piece.data(), piece.size(), MSG_NOSIGNAL | MSG_DONTWAIT) < 0 &&
        errno != EAGAIN)
      open = false;
    turn(w);
    open = open && drain(fd);
  }
  ::shutdown(fd, SHUT_WR);
  for (int i = 0; i < 50 && drain(fd); ++i) turn(w);
  close_now(fd);
  for (int i = 0; i < 100 && w->server->connection_count() > 0; ++i) turn(w);
  if (w->server->connection_count() != 0) std::abort();  // a connection outlived its client
  if (fa::live_handles() != w->handles_at_rest) std::abort();  // a handle leaked
  // And the server still answers a plain request.
  const int probe = connect_nonblocking(w);
  if (probe < 0) return 0;
  const char req[] = "GET /native HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::send(probe, req, sizeof req - 1, MSG_NOSIGNAL) < 0) std::abort();
  std::string got;
  for (int i = 0; i < 100 && got.find("\r\n\r\nok") == std::string::npos; ++i) {
    turn(w, 1);
    char buf[4096];
    const ssize_t r = ::recv(probe, buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) got.append(buf, static_cast<std::size_t>(r));
  }
  if (got.rfind("HTTP/1.1 200 OK\r\n", 0) != 0) std::abort();
  close_now(probe);
  for (int i = 0; i < 100 && w->server->connection_count() > 0; ++i) turn(w);
  return 0;
}
