// fa::Server + fa::Connection on a real libuv loop in the test process, over 127.0.0.1 sockets: keep-alive,
// pipelining (native, inline app and deferred app responses mixed), errors, closing rules, and a clean teardown
// (zero live handles, uv_loop_close() == 0) after every test.
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <csignal>

#include "catch_compat.h"
#include "loop_harness.h"

namespace {

using fa_test::HttpResponse;
using fa_test::check_clean_teardown;
using fa_test::LoopHarness;
using fa_test::static_text;

int user_handler(const fa_request* req, fa_response* res, const fa_response_api* api, void*) {
  const std::string_view id = fasterapi_asgi::param(req, "id");
  std::string body = "user " + std::string(id) + " q=" + std::string(fasterapi_asgi::view(req->query)) +
                     " body=" + std::string(fasterapi_asgi::view(req->body));
  api->set_status(res, 201);
  if (api->add_header(res, "x-user", 6, id.data(), id.size()) != 0) return 1;
  if (api->add_header(res, "bad\nname", 8, "v", 1) == 0) return 1;  // must be refused
  api->write(res, body.data(), body.size());
  return 0;
}

int throwing_handler(const fa_request*, fa_response*, const fa_response_api*, void*) {
  throw std::runtime_error("boom");
}

// Client-side record of one exchange, checked on the test thread.
struct Exchange {
  std::string request;
  bool head = false;
  std::string error;
  HttpResponse response;
};

const char* const kNativeResponse =
    "HTTP/1.1 200 OK\r\nserver: fa-test\r\ndate: <date>\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok";

std::string app_response(const std::string& method, const std::string& path, const std::string& body) {
  const std::string text = "app " + method + " " + path + " body=" + body;
  return "HTTP/1.1 200 OK\r\nserver: fa-test\r\ndate: <date>\r\ncontent-type: text/plain\r\ncontent-length: " +
         std::to_string(text.size()) + "\r\n\r\n" + text;
}

}  // namespace

TEST_CASE("loop: keep-alive and pipelined requests, native and app, byte for byte", "[loop]") {
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  fa::Server& router = *h.server;  // add_route: the server keeps the route statistics
  REQUIRE(router.add_route("GET", "/native", static_text("ok")) == "");
  fa::NativeRoute user;
  user.kind = fa::NativeRoute::kUser;
  user.fn = &user_handler;
  REQUIRE(router.add_route("POST", "/users/{id:int}", user) == "");
  fa::NativeRoute thrower;
  thrower.kind = fa::NativeRoute::kUser;
  thrower.fn = &throwing_handler;
  REQUIRE(router.add_route("GET", "/throw", thrower) == "");
  REQUIRE(h.listen() == "");

  constexpr int kSequential = 25;
  std::vector<Exchange> sequential(kSequential), pipelined;
  std::string client_error;
  int connects = 0;

  // One pipelined batch: every kind of answer, in one send; responses must come back in order.
  const std::vector<std::pair<std::string, bool>> batch = {
      {"GET /native HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /app/one?x=1 HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"GET /defer/two HTTP/1.1\r\nHost: t\r\n\r\n", false},
      {"HEAD /native HTTP/1.1\r\nHost: t\r\n\r\n", true},
      {"POST /app/body HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello", false},
      {"PUT /native HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", false},
      {"POST /users/42?q=v HTTP/1.1\r\nContent-Length: 4\r\n\r\ndata", false},
      {"POST /defer/chunk HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", false},
      {"GET /chunked/x HTTP/1.1\r\n\r\n", false},
      {"GET /throw HTTP/1.1\r\n\r\n", false},
      {"GET /native HTTP/1.1\r\n\r\n", false},
  };

  const int rc = h.run([&] {
    const int fd = fa_test::connect_loopback(h.port, 5000);
    if (fd < 0) {
      client_error = "connect failed";
      return;
    }
    ++connects;
    std::string pending;
    for (int i = 0; i < kSequential; ++i) {
      Exchange& e = sequential[i];
      e.request = i % 2 == 0 ? "GET /native HTTP/1.1\r\nHost: t\r\n\r\n"
                             : "GET /app/seq HTTP/1.1\r\nHost: t\r\n\r\n";
      if (!fa_test::send_all(fd, e.request.data(), e.request.size())) e.error = "send failed";
      else e.error = fa_test::read_response(fd, pending, false, &e.response);
    }
    std::string all;
    for (const auto& b : batch) all += b.first;
    if (!fa_test::send_all(fd, all.data(), all.size())) client_error = "batch send failed";
    for (const auto& b : batch) {
      Exchange e;
      e.request = b.first;
      e.head = b.second;
      e.error = fa_test::read_response(fd, pending, b.second, &e.response);
      pipelined.push_back(std::move(e));
    }
    // The same batch again, one byte per send: requests split everywhere.
    for (char c : all)
      if (!fa_test::send_all(fd, &c, 1)) client_error = "bytewise send failed";
    for (const auto& b : batch) {
      Exchange e;
      e.request = b.first;
      e.head = b.second;
      e.error = fa_test::read_response(fd, pending, b.second, &e.response);
      pipelined.push_back(std::move(e));
    }
    ::close(fd);
  });

  REQUIRE(client_error == "");
  CHECK(connects == 1);
  for (int i = 0; i < kSequential; ++i) {
    INFO("sequential request " << i);
    REQUIRE(sequential[i].error == "");
    const std::string got = fa_test::with_date_masked(sequential[i].response.raw);
    CHECK(got == (i % 2 == 0 ? std::string(kNativeResponse) : app_response("GET", "/app/seq", "")));
  }
  const std::vector<std::string> expected = {
      kNativeResponse,
      app_response("GET", "/app/one", ""),
      app_response("GET", "/defer/two", ""),
      "HTTP/1.1 200 OK\r\nserver: fa-test\r\ndate: <date>\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\n",
      app_response("POST", "/app/body", "hello"),
      "HTTP/1.1 405 Method Not Allowed\r\nserver: fa-test\r\ndate: <date>\r\nallow: GET, HEAD\r\n"
      "content-type: text/plain; charset=utf-8\r\ncontent-length: 18\r\n\r\nMethod Not Allowed",
      "HTTP/1.1 201 Created\r\nserver: fa-test\r\ndate: <date>\r\nx-user: 42\r\ncontent-length: 23\r\n\r\n"
      "user 42 q=q=v body=data",
      app_response("POST", "/defer/chunk", "abcde"),
      "",  // chunked: checked separately below
      "HTTP/1.1 500 Internal Server Error\r\nserver: fa-test\r\ndate: <date>\r\n"
      "content-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n\r\nInternal Server Error",
      kNativeResponse,
  };
  REQUIRE(pipelined.size() == 2 * batch.size());
  for (std::size_t i = 0; i < pipelined.size(); ++i) {
    const std::size_t k = i % batch.size();
    INFO("pipelined request " << i << ": " << pipelined[i].request);
    REQUIRE(pipelined[i].error == "");
    const std::string got = fa_test::with_date_masked(pipelined[i].response.raw);
    if (expected[k].empty()) {
      const std::string text = "app GET /chunked/x body=";
      const std::size_t half = text.size() / 2;
      char a[24], b[24];
      std::snprintf(a, sizeof a, "%zx\r\n", half);
      std::snprintf(b, sizeof b, "%zx\r\n", text.size() - half);
      CHECK(got == "HTTP/1.1 200 OK\r\nserver: fa-test\r\ndate: <date>\r\ncontent-type: text/plain\r\n"
                   "transfer-encoding: chunked\r\n\r\n" +
                       std::string(a) + text.substr(0, half) + "\r\n" + b + text.substr(half) + "\r\n0\r\n\r\n");
      CHECK(pipelined[i].response.body == text);
    } else {
      CHECK(got == expected[k]);
    }
  }
  CHECK(h.app.requests == kSequential / 2 + 2 * 5);
  CHECK(h.app.bad_requests == 0);
  CHECK(h.app.closed == 1);
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: a malformed request gets its error status and the connection closes", "[loop]") {
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  REQUIRE(h.server->add_route("GET", "/native", static_text("ok")) == "");
  REQUIRE(h.listen() == "");
  struct Probe {
    std::string request;
    int status;
    std::string body;
    std::string error;
    HttpResponse first, response;
    bool eof = false;
  };
  std::vector<Probe> probes = {
      {"GET /native HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
       "Invalid HTTP request received."},
      {"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501, "Unsupported transfer encoding."},
      {"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\n\r\n", 414, "Request-URI too long."},
      {"GET / HTTP/1.1\r\nX: " + std::string(17000, 'b') + "\r\n\r\n", 431, "Request header fields too large."},
      {"NOT HTTP AT ALL\r\n\r\n", 400, "Invalid HTTP request received."},
  };
  const int rc = h.run([&] {
    for (Probe& p : probes) {
      const int fd = fa_test::connect_loopback(h.port, 5000);
      std::string pending;
      // A good request first: the error must not depend on being the first request on the connection.
      const std::string good = "GET /native HTTP/1.1\r\n\r\n";
      fa_test::send_all(fd, good.data(), good.size());
      p.error = fa_test::read_response(fd, pending, false, &p.first);
      fa_test::send_all(fd, p.request.data(), p.request.size());
      if (p.error.empty()) p.error = fa_test::read_response(fd, pending, false, &p.response);
      p.eof = fa_test::reads_eof(fd, pending);
      ::close(fd);
    }
  });
  for (const Probe& p : probes) {
    INFO("request: " << p.request.substr(0, 80));
    REQUIRE(p.error == "");
    CHECK(p.first.status == 200);
    CHECK(p.response.status == p.status);
    CHECK(p.response.body == p.body);
    CHECK(p.response.header("connection") == "close");
    CHECK(p.response.header("content-type") == "text/plain; charset=utf-8");
    CHECK(p.eof);
  }
  CHECK(h.app.bad_requests == static_cast<int>(probes.size()));
  CHECK(h.server->counters().bad_requests == probes.size());
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: closing rules (Connection: close, HTTP/1.0, keep-alive timeout, Expect: 100-continue)", "[loop]") {
  fa::ServerConfig config = LoopHarness::default_config();
  config.keep_alive_ms = 100;
  LoopHarness h(config);
  REQUIRE(h.bind_error == "");
  REQUIRE(h.server->add_route("GET", "/native", static_text("ok")) == "");
  REQUIRE(h.listen() == "");
  std::vector<std::string> errors;
  HttpResponse close_native, close_app, http10, http10_ka, http10_ka_next, cont_final, idle;
  std::string cont_interim;
  bool eof_close_native = false, eof_close_app = false, eof_http10 = false, eof_http10_ka = false,
       eof_idle = false;
  const int rc = h.run([&] {
    auto exchange = [&](const std::string& req, HttpResponse* res, bool* eof) {
      const int fd = fa_test::connect_loopback(h.port, 5000);
      std::string pending;
      fa_test::send_all(fd, req.data(), req.size());
      const std::string e = fa_test::read_response(fd, pending, false, res);
      if (!e.empty()) errors.push_back(req + ": " + e);
      *eof = fa_test::reads_eof(fd, pending);
      ::close(fd);
    };
    exchange("GET /native HTTP/1.1\r\nConnection: close\r\n\r\n", &close_native, &eof_close_native);
    exchange("GET /app HTTP/1.1\r\nConnection: close\r\n\r\n", &close_app, &eof_close_app);
    exchange("GET /app HTTP/1.0\r\n\r\n", &http10, &eof_http10);
    {
      // HTTP/1.0 keep-alive: the connection stays open for a second request (until the keep-alive timeout).
      const int fd = fa_test::connect_loopback(h.port, 5000);
      std::string pending;
      const std::string req = "GET /native HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
      fa_test::send_all(fd, req.data(), req.size());
      std::string e = fa_test::read_response(fd, pending, false, &http10_ka);
      fa_test::send_all(fd, req.data(), req.size());
      if (e.empty()) e = fa_test::read_response(fd, pending, false, &http10_ka_next);
      if (!e.empty()) errors.push_back("http/1.0 keep-alive: " + e);
      eof_http10_ka = fa_test::reads_eof(fd, pending);  // after keep_alive_ms of silence
      ::close(fd);
    }
    {
      const int fd = fa_test::connect_loopback(h.port, 5000);
      std::string pending;
      const std::string head = "POST /app/upload HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
      fa_test::send_all(fd, head.data(), head.size());
      char buf[64];
      const ssize_t n = recv(fd, buf, 25, MSG_WAITALL);
      if (n > 0) cont_interim.assign(buf, static_cast<std::size_t>(n));
      fa_test::send_all(fd, "data", 4);
      const std::string e = fa_test::read_response(fd, pending, false, &cont_final);
      if (!e.empty()) errors.push_back("100-continue: " + e);
      ::close(fd);
    }
    {
      const int fd = fa_test::connect_loopback(h.port, 5000);
      std::string pending;
      const std::string req = "GET /native HTTP/1.1\r\n\r\n";
      fa_test::send_all(fd, req.data(), req.size());
      const std::string e = fa_test::read_response(fd, pending, false, &idle);
      if (!e.empty()) errors.push_back("idle: " + e);
      eof_idle = fa_test::reads_eof(fd, pending);
      ::close(fd);
    }
  });
  for (const auto& e : errors) INFO(e);
  CHECK(errors.empty());
  CHECK(fa_test::with_date_masked(close_native.raw) ==
        "HTTP/1.1 200 OK\r\nserver: fa-test\r\ndate: <date>\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n"
        "connection: close\r\n\r\nok");
  CHECK(eof_close_native);
  CHECK(close_app.header("connection") == "close");
  CHECK(close_app.body == "app GET /app body=");
  CHECK(eof_close_app);
  CHECK(http10.header("connection") == "close");
  CHECK(http10.body == "app GET /app body=");
  CHECK(eof_http10);
  CHECK(http10_ka.status == 200);
  CHECK(http10_ka_next.status == 200);
  CHECK(http10_ka.body == "ok");
  CHECK(eof_http10_ka);
  CHECK(cont_interim == "HTTP/1.1 100 Continue\r\n\r\n");
  CHECK(cont_final.body == "app POST /app/upload body=data");
  CHECK(idle.status == 200);
  CHECK(eof_idle);  // closed by the keep-alive timer
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: closing the server with connections open and a response pending leaves nothing behind", "[loop]") {
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  REQUIRE(h.server->add_route("GET", "/native", static_text("ok")) == "");
  REQUIRE(h.listen() == "");
  int fd = -1, idle_fd = -1;
  std::string error;
  const int rc = h.run([&] {
    fd = fa_test::connect_loopback(h.port, 5000);
    idle_fd = fa_test::connect_loopback(h.port, 5000);
    const std::string good = "GET /native HTTP/1.1\r\n\r\n";
    for (int s : {fd, idle_fd}) {
      std::string pending;
      HttpResponse r;
      fa_test::send_all(s, good.data(), good.size());
      const std::string e = fa_test::read_response(s, pending, false, &r);
      if (!e.empty()) error = e;
    }
    // A body that never completes: the app has a request in flight when the server closes.
    const std::string req = "POST /app HTTP/1.1\r\nContent-Length: 100\r\n\r\npartial";
    fa_test::send_all(fd, req.data(), req.size());
    for (int i = 0; i < 5000 && h.app.heads.load() == 0; ++i) usleep(1000);
  });
  // The client sockets stay open until the server has closed everything on its side.
  ::close(fd);
  ::close(idle_fd);
  CHECK(error == "");
  CHECK(h.app.requests == 1);
  CHECK(h.app.disconnects == 1);
  CHECK(h.app.closed == 2);
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: an app that pauses the body gets every byte once, and no empty chunks", "[loop]") {
  // The app pauses reading after every body chunk (backpressure) and resumes from a timer. Http1Session::resume()
  // re-runs the parser on what it buffered, possibly nothing: that must not produce empty on_body calls (each
  // would become an empty `http.request` message for the ASGI app).
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  REQUIRE(h.listen() == "");
  HttpResponse one, pipelined_a, pipelined_b;
  std::string error;
  const int rc = h.run([&] {
    const int fd = fa_test::connect_loopback(h.port, 5000);
    std::string pending;
    // The body arrives in two pieces: the app pauses after the first, mid-body, with nothing else buffered.
    const std::string req = "POST /slow/one HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234";
    fa_test::send_all(fd, req.data(), req.size());
    usleep(30000);
    fa_test::send_all(fd, "56789", 5);
    error = fa_test::read_response(fd, pending, false, &one);
    // Body in two sends, then two pipelined requests behind a paused body.
    const std::string head = "POST /slow/two HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n";
    fa_test::send_all(fd, head.data(), head.size());
    usleep(20000);
    const std::string rest = "2\r\nde\r\n0\r\n\r\nPOST /slow/three HTTP/1.1\r\nContent-Length: 2\r\n\r\nxy";
    fa_test::send_all(fd, rest.data(), rest.size());
    if (error.empty()) error = fa_test::read_response(fd, pending, false, &pipelined_a);
    if (error.empty()) error = fa_test::read_response(fd, pending, false, &pipelined_b);
    ::close(fd);
  });
  REQUIRE(error == "");
  CHECK(one.body == "app POST /slow/one body=0123456789");
  CHECK(pipelined_a.body == "app POST /slow/two body=abcde");
  CHECK(pipelined_b.body == "app POST /slow/three body=xy");
  std::size_t total = 0, empty_calls = 0;
  for (std::size_t n : h.app.body_calls) {
    total += n;
    empty_calls += n == 0;
  }
  CHECK(total == 10 + 5 + 2);
  INFO("on_body sizes: " << h.app.body_calls.size() << " calls");
  CHECK(empty_calls == 0);
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: a file as the body (sendfile, waits for a full socket), keep-alive after it, a reader that leaves",
          "[loop]") {
  // sendfile(2) to a socket the peer closed raises SIGPIPE unless it is ignored, as the Python runtime does.
  ::signal(SIGPIPE, SIG_IGN);
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  const fa_test::TempFile file(4 << 20);
  REQUIRE(file.ok());
  const std::string& content = file.content();
  h.app.file_path = file.path();
  REQUIRE(h.listen() == "");
  std::string error, first_body, after;
  const int rc = h.run([&] {
    // A small receive buffer: the server's sendfile fills the socket and has to wait for it many times.
    const int fd = fa_test::connect_loopback(h.port, 5000);
    int small = 8192;
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    std::string pending;
    HttpResponse r;
    const std::string req = "GET /file HTTP/1.1\r\nHost: t\r\n\r\nGET /app/next HTTP/1.1\r\nHost: t\r\n\r\n";
    fa_test::send_all(fd, req.data(), req.size());
    usleep(100 * 1000);  // let the socket fill before reading
    error = fa_test::read_response(fd, pending, false, &r);
    first_body = r.body;
    HttpResponse next;
    if (error.empty()) error = fa_test::read_response(fd, pending, false, &next);
    after = next.body;
    ::close(fd);
    // A client that reads a little of the file and leaves: the file and the poll handle are closed with it.
    const int leaver = fa_test::connect_loopback(h.port, 5000);
    ::setsockopt(leaver, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    const std::string one = "GET /file HTTP/1.1\r\nHost: t\r\n\r\n";
    fa_test::send_all(leaver, one.data(), one.size());
    char buf[4096];
    (void)::recv(leaver, buf, sizeof buf, 0);
    ::close(leaver);
    for (int i = 0; i < 2000 && h.app.disconnects == 0; ++i) usleep(1000);
  });
  CHECK(error == "");
  CHECK(first_body == content);
  CHECK(after == "app GET /app/next body=");
  CHECK(h.app.files_sent == 1);
  CHECK(h.app.disconnects == 1);
  CHECK(h.server->counters().sendfile_bytes >= content.size());
  check_clean_teardown(h, rc);
}

TEST_CASE("loop: a file whose first sendfile finds the socket full waits for it (the send bound starts with the file)",
          "[loop]") {
  ::signal(SIGPIPE, SIG_IGN);
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  const fa_test::TempFile file(1 << 20, 7);
  REQUIRE(file.ok());
  const std::string& content = file.content();
  h.app.file_path = file.path();
  REQUIRE(h.listen() == "");
  std::string got;
  const int rc = h.run([&] {
    const int fd = fa_test::connect_loopback(h.port, 1000);  // reads time out after 1 s without data
    const std::string req = "GET /fillfile HTTP/1.1\r\nHost: t\r\n\r\n";
    fa_test::send_all(fd, req.data(), req.size());
    usleep(300 * 1000);  // the server sends the head and fills the socket; the file must wait for room
    char buf[65536];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;  // EOF, or 1 s without data: all there is has arrived
      got.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
  });
  const std::size_t filled = h.app.filled;
  REQUIRE(filled > 0);
  INFO("received " << got.size() << " bytes, " << filled << " of them filler");
  // The head, then the bytes that filled the socket, then the whole file.
  REQUIRE(got.compare(0, 12, "HTTP/1.1 200") == 0);
  const std::size_t head = got.find("\r\n\r\n") + 4;
  CHECK(got.size() == head + filled + content.size());
  CHECK(got.compare(head, filled, std::string(filled, 'j')) == 0);
  if (got.size() >= content.size()) CHECK(got.compare(got.size() - content.size(), content.size(), content) == 0);
  CHECK(h.app.files_sent == 1);
  check_clean_teardown(h, rc);
}

namespace {

// The most sendfile(2) bytes one loop iteration sent: a check handle (after each poll phase) reads the counter.
struct TurnMeter {
  uv_check_t check;
  const fa::Server* server = nullptr;
  std::uint64_t last = 0;
  std::uint64_t max_per_turn = 0;
  static void on_check(uv_check_t* c) {
    auto* m = static_cast<TurnMeter*>(c->data);
    const std::uint64_t now = m->server->counters().sendfile_bytes;
    if (now - m->last > m->max_per_turn) m->max_per_turn = now - m->last;
    m->last = now;
  }
};

}  // namespace

TEST_CASE("loop: one connection's sendfile gives the loop back every 2 MiB whatever the socket takes",
          "[loop]") {
  ::signal(SIGPIPE, SIG_IGN);
  LoopHarness h;
  REQUIRE(h.bind_error == "");
  const fa_test::TempFile file(16 << 20, 3);
  REQUIRE(file.ok());
  h.app.file_path = file.path();
  // Socket buffers far larger than the file's first steps, so the socket alone would never stop the transfer: the
  // listener's send buffer (accepted sockets inherit it) and the client's receive buffer, forced past the sysctl
  // maxima (root only: CAP_NET_ADMIN).
  const int big = 32 << 20;
  const int lfd = fa_test::bound_loopback_socket(&h.port);
  REQUIRE(lfd >= 0);
  if (::setsockopt(lfd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big) != 0) {
    ::close(lfd);
    WARN("SO_SNDBUFFORCE needs CAP_NET_ADMIN: the per-turn sendfile bound is not tested here");
    return;
  }
  REQUIRE(h.server->listen_fd(lfd, 16) == "");
  ::close(lfd);
  TurnMeter meter;
  meter.server = h.server.get();
  uv_check_init(&h.loop, &meter.check);
  meter.check.data = &meter;
  uv_check_start(&meter.check, &TurnMeter::on_check);
  h.before_close = [&meter](LoopHarness&) { uv_close(reinterpret_cast<uv_handle_t*>(&meter.check), nullptr); };
  std::size_t received = 0;
  const int rc = h.run([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
    const timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<std::uint16_t>(h.port));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return;
    const std::string req = "GET /file HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    fa_test::send_all(fd, req.data(), req.size());
    usleep(200 * 1000);  // nothing read yet: the buffers take what the server's first turns send
    char buf[1 << 16];
    for (;;) {
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) break;
      received += static_cast<std::size_t>(n);
    }
    ::close(fd);
  });
  INFO("most sendfile bytes in one loop iteration: " << meter.max_per_turn);
  CHECK(received > file.content().size());  // the head and the whole file
  CHECK(h.server->counters().sendfile_bytes == file.content().size());
  CHECK(meter.max_per_turn > 0);
  CHECK(meter.max_per_turn <= (2u << 20));
  check_clean_teardown(h, rc);
}
