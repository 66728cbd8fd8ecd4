// A real fa::Server on a real libuv loop in the test process, with a small AppHandler standing in for the ASGI
// bindings, and a blocking client running on its own thread. Used by the loop-level and allocation tests.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "catch_compat.h"
#include "core/uv_api.h"
#include "server/connection.h"
#include "server/server.h"
#include "uv_test_support.h"

namespace fa_test {

// A temporary file of `size` bytes of a repeating pattern (content() gives them), removed when it goes.
class TempFile {
 public:
  explicit TempFile(std::size_t size, unsigned multiplier = 131) : content_(size, '\0') {
    for (std::size_t i = 0; i < size; ++i) content_[i] = static_cast<char>((i * multiplier) >> 3);
    char tmpl[] = "/tmp/fa-test-file-XXXXXX";
    const int fd = ::mkstemp(tmpl);
    if (fd >= 0) {
      ok_ = ::write(fd, content_.data(), size) == static_cast<ssize_t>(size);
      ::close(fd);
      path_ = tmpl;
    }
  }
  ~TempFile() {
    if (!path_.empty()) ::unlink(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  bool ok() const { return ok_; }
  const std::string& path() const { return path_; }
  const std::string& content() const { return content_; }

 private:
  std::string content_;
  std::string path_;
  bool ok_ = false;
};

// Answers every request that no native route takes: "app <METHOD> <path> body=<body>" with a content-length, or
// chunked for paths starting with /chunked. Paths starting with /defer are answered later, from a timer callback
// (like an app that awaits something), which makes the connection pause parsing pipelined requests meanwhile.
// Paths starting with /slow make every on_body pause reading; a timer resumes it (an app reading its body slowly).
// Paths starting with /file are answered with the file at `file_path` through HttpStream::send_file.
// Paths starting with /fillfile send the head of a file response, fill the connection's socket to the brim behind
// libuv's back (as output that left without queueing would), then send the file: its first sendfile finds no room
// and nothing queued in libuv.
// Paths starting with /reset start a response that cannot complete (Content-Length 100, 7 bytes sent) and close the
// stream while still attached to it, as the bindings do when an app fails after its response started.
class TestApp final : public fa::AppHandler {
 public:
  struct Pending {
    fa::HttpStream* conn = nullptr;
    std::string method, path, body;
  };
  int requests = 0, disconnects = 0, closed = 0, bad_requests = 0, drains = 0, files_sent = 0;
  std::string file_path;  // what /file... answers
  int last_bad_status = 0;
  int native_responses = 0, last_native_status = 0;
  int over_limit = 0;
  std::atomic<int> heads{0};  // readable from the client thread: lets it wait until the server saw a request
  std::vector<std::string> errors;  // checked by the test after the loop ends
  uv_timer_t defer_timer;
  uv_timer_t resume_timer;
  fa::HttpStream* to_resume = nullptr;
  std::vector<std::size_t> body_calls;  // sizes passed to on_body, in order
  Pending current;  // the request being received (one per connection at a time; tests use one app connection)
  std::vector<Pending> deferred;

  void init(uv_loop_t* loop) {
    uv_timer_init(loop, &defer_timer);
    defer_timer.data = this;
    uv_timer_init(loop, &resume_timer);
    resume_timer.data = this;
  }
  void close_handles() {
    uv_close(reinterpret_cast<uv_handle_t*>(&defer_timer), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(&resume_timer), nullptr);
  }

  void on_request(fa::HttpStream& c, const fa::RequestHead& head) override {
    ++requests;
    heads.fetch_add(1);
    current = Pending{&c, std::string(llhttp_method_name(static_cast<llhttp_method_t>(head.method))),
                      std::string(head.path_view()), {}};
    c.exchange = &current;
    if (head.expect_continue) c.send_continue();
  }
  bool on_body(fa::HttpStream& c, const char* data, std::size_t len) override {
    if (c.exchange != &current) errors.push_back("on_body without a request");
    current.body.append(data, len);
    body_calls.push_back(len);
    if (current.path.rfind("/slow", 0) == 0) {
      to_resume = &c;
      uv_timer_start(&resume_timer, &TestApp::on_resume_timer, 1, 0);
      return true;
    }
    return false;
  }
  void on_body_complete(fa::HttpStream& c) override {
    if (current.path.rfind("/reset", 0) == 0) {
      const std::string_view names[] = {"content-length"};
      const std::string_view values[] = {"100"};
      if (const char* err = c.start_response(200, names, values, 1)) errors.push_back(err);
      if (const char* err = c.write_body("partial", 7, true)) errors.push_back(err);
      c.close();  // attached: on_disconnect follows when the stream is gone
      return;
    }
    if (current.path.rfind("/defer", 0) == 0) {
      // Still attached until answered: a stream that goes away meanwhile reports on_disconnect (HTTP/2 streams
      // report it only to an attached handler).
      deferred.push_back(current);
      uv_timer_start(&defer_timer, &TestApp::on_defer_timer, 1, 0);
      return;
    }
    c.exchange = nullptr;
    respond(c, current);
  }
  void on_disconnect(fa::HttpStream& c) override {
    ++disconnects;
    for (auto& p : deferred)
      if (p.conn == &c) p.conn = nullptr;
    if (to_resume == &c) to_resume = nullptr;
  }
  void on_drain(fa::HttpStream&) override { ++drains; }
  void on_file_sent(fa::HttpStream& c) override {
    ++files_sent;
    c.finish_response();
  }
  void on_over_limit(fa::HttpStream&) override { ++over_limit; }
  void on_native_response(fa::HttpStream&, int status) override {
    ++native_responses;
    last_native_status = status;
  }
  void on_closed(fa::Connection& c) override {
    ++closed;
    for (auto& p : deferred)
      if (p.conn == &c.http1()) p.conn = nullptr;
    if (to_resume == &c.http1()) to_resume = nullptr;
  }
  void on_bad_request(fa::HttpStream&, int status, const char*) override {
    ++bad_requests;
    last_bad_status = status;
  }

  // WebSocket (with ServerConfig::websocket): accepted at once (a 101 with a dummy accept key: the tests' client
  // does not check it); every message is echoed; the text "close" makes the server close with 4000 "bye".
  int ws_sessions = 0, ws_messages = 0;
  std::vector<int> ws_close_codes;
  void on_websocket(fa::HttpStream& c, const fa::RequestHead&) override {
    ++ws_sessions;
    heads.fetch_add(1);
    c.exchange = nullptr;
    if (const char* err = c.connection().ws_accept("not-checked", nullptr, nullptr, 0, "")) errors.push_back(err);
  }
  bool on_ws_message(fa::HttpStream& c, bool text, const char* data, std::size_t len) override {
    ++ws_messages;
    if (text && std::string_view(data, len) == "close") c.connection().ws_close(4000, "bye");
    else c.connection().ws_send(text, data, len);
    return false;
  }
  void on_ws_close(fa::HttpStream&, int code, std::string_view) override { ws_close_codes.push_back(code); }

  // The file at `file_path` as the body. `fill_first`: the head leaves at once, then fill_socket(), then the file.
  void respond_file(fa::HttpStream& c, bool fill_first = false) {
    const int fd = ::open(file_path.c_str(), O_RDONLY | O_CLOEXEC);
    struct stat st {};
    if (fd < 0 || ::fstat(fd, &st) != 0) {
      errors.push_back("cannot open " + file_path);
      return;
    }
    const std::string length = std::to_string(st.st_size);
    const std::string_view names[] = {"content-length"};
    const std::string_view values[] = {length};
    if (const char* err = c.start_response(200, names, values, 1)) errors.push_back(err);
    if (fill_first) {
      c.connection().flush();  // the head leaves now, while there is room
      filled = fill_socket(c);
    }
    if (const char* err = c.send_file(fd, static_cast<std::uint64_t>(st.st_size))) errors.push_back(err);
  }

  // The accepted socket of `c` (this process holds both ends: the one whose peer is the client's port), made full:
  // bytes written until the kernel takes no more. Returns how many.
  std::size_t fill_socket(fa::HttpStream& c) {
    const int peer = c.connection().peer_port();
    for (int fd = 3; fd < 65536; ++fd) {
      sockaddr_in a{};
      socklen_t n = sizeof a;
      if (::getpeername(fd, reinterpret_cast<sockaddr*>(&a), &n) != 0 || a.sin_family != AF_INET ||
          ntohs(a.sin_port) != peer)
        continue;
      const std::string junk(4096, 'j');
      std::size_t filled = 0;
      for (;;) {
        const ssize_t w = ::send(fd, junk.data(), junk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) break;
        filled += static_cast<std::size_t>(w);
      }
      return filled;
    }
    errors.push_back("fill_socket: no socket with the client's port as its peer");
    return 0;
  }
  std::size_t filled = 0;  // what fill_socket() wrote last

  void respond(fa::HttpStream& c, const Pending& p) {
    if (p.path.rfind("/file", 0) == 0 || p.path.rfind("/fillfile", 0) == 0) {
      respond_file(c, p.path.rfind("/fillfile", 0) == 0);
      return;
    }
    const std::string body = "app " + p.method + " " + p.path + " body=" + p.body;
    const bool chunked = p.path.rfind("/chunked", 0) == 0;
    const std::string length = std::to_string(body.size());
    const std::string_view names[] = {"content-type", "content-length"};
    const std::string_view values[] = {"text/plain", length};
    const char* err = c.start_response(200, names, values, chunked ? 1 : 2);
    if (err != nullptr) errors.push_back(err);
    if (chunked) {
      const std::size_t half = body.size() / 2;
      if ((err = c.write_body(body.data(), half, true)) != nullptr) errors.push_back(err);
      if ((err = c.write_body(body.data() + half, body.size() - half, false)) != nullptr) errors.push_back(err);
    } else {
      if ((err = c.write_body(body.data(), body.size(), false)) != nullptr) errors.push_back(err);
    }
    c.finish_response();
  }

 private:
  static void on_resume_timer(uv_timer_t* t) {
    auto* self = static_cast<TestApp*>(t->data);
    fa::HttpStream* c = self->to_resume;
    self->to_resume = nullptr;
    if (c != nullptr && !c->closing()) c->resume();
  }
  static void on_defer_timer(uv_timer_t* t) {
    auto* self = static_cast<TestApp*>(t->data);
    std::vector<Pending> ready;
    ready.swap(self->deferred);
    for (const Pending& p : ready) {
      if (p.conn == nullptr || p.conn->closing()) continue;
      p.conn->exchange = nullptr;
      self->respond(*p.conn, p);
    }
  }
};

// Owns the loop, the server and the stop signal. run() serves until the client function (on its own thread)
// returns, then closes everything and runs the loop until no handle is left.
class LoopHarness {
 public:
  explicit LoopHarness(fa::ServerConfig config = default_config()) {
    bind_error = bind_uv();
    if (!bind_error.empty()) return;
    uv_loop_init(&loop);
    app.init(&loop);
    server = std::make_unique<fa::Server>(&loop, &app, std::move(config));
    uv_async_init(&loop, &stop_async, &LoopHarness::on_stop);
    stop_async.data = this;
  }

  static fa::ServerConfig default_config() {
    fa::ServerConfig c;
    c.defaults.header_block = "server: fa-test\r\n";
    c.defaults.date_header = true;
    c.keep_alive_ms = 30000;
    // These tests are about connection behaviour and send bare requests; the Host rule has its own parser cases.
    c.limits.require_host = false;
    return c;
  }

  std::string listen() {
    const int fd = bound_loopback_socket(&port);
    if (fd < 0) return "cannot bind a loopback socket";
    std::string err = server->listen_fd(fd, 128);
    ::close(fd);
    return err;
  }

  // Runs the loop on this thread and `client` on another; returns the loop_close result (0 when clean).
  int run(const std::function<void()>& client) {
    std::thread t([&] {
      client();
      uv_async_send(&stop_async);
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    t.join();
    return uv_loop_close(&loop);
  }

  std::string bind_error;
  uv_loop_t loop;
  TestApp app;
  std::unique_ptr<fa::Server> server;
  int port = 0;
  std::function<void(LoopHarness&)> before_close;  // runs on the loop thread, before everything closes

 private:
  static void on_stop(uv_async_t* a) {
    auto* self = static_cast<LoopHarness*>(a->data);
    if (self->before_close) self->before_close(*self);
    self->server->close_all();
    self->app.close_handles();
    uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
  }
  uv_async_t stop_async;
};

// A native route answering `body` as text/plain (pre-formatted headers, as the router stores them).
inline fa::NativeRoute static_text(std::string body) {
  fa::NativeRoute r;
  r.kind = fa::NativeRoute::kStatic;
  r.status = 200;
  r.headers = "content-type: text/plain\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
  r.body = std::move(body);
  return r;
}

// After LoopHarness::run(): the app saw no protocol error, every handle is closed and the loop closes cleanly.
inline void check_clean_teardown(LoopHarness& h, int loop_close_rc) {
  CHECK(h.app.errors.empty());
  for (const auto& e : h.app.errors) INFO("app error: " << e);
  CHECK(fa::live_handles() == 0);
  CHECK(loop_close_rc == 0);
}

}  // namespace fa_test
