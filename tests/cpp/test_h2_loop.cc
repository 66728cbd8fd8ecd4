// HTTP/2 through fa::Connection + fa::H2Session on a real libuv loop, over 127.0.0.1 sockets, with an nghttp2 client
// session on the client thread: native and app requests on many streams, request bodies, deferred responses,
// resets, a file body, graceful shutdown, and a clean teardown (zero live handles, uv_loop_close() == 0). Built
// plain and under ASan+UBSan like the other loop tests, so every ownership rule of h2_session.h is exercised.
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <string_view>

#include "catch_compat.h"
#include "loop_harness.h"

namespace {

using fa_test::check_clean_teardown;
using fa_test::LoopHarness;
using fa_test::static_text;

fa::ServerConfig h2_config() {
  fa::ServerConfig c = LoopHarness::default_config();
  c.http2.enabled = true;
  return c;
}

struct StreamResult {
  int status = 0;
  std::string body;
  bool closed = false;
  std::uint32_t error = 0;
};

// A blocking HTTP/2 client: an nghttp2 client session over a socket, driven by run_until().
class Client {
 public:
  explicit Client(int port) : fd_(fa_test::connect_loopback(port, 5000)) {
    nghttp2_session_callbacks* cbs = nullptr;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, &Client::on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &Client::on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &Client::on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &Client::on_frame);
    nghttp2_session_client_new(&session_, cbs, this);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~Client() {
    nghttp2_session_del(session_);
    if (fd_ >= 0) ::close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  bool ok() const { return fd_ >= 0; }

  std::int32_t request(const std::string& method, const std::string& path, const std::string* body = nullptr) {
    const nghttp2_nv nva[] = {nv(":method", method), nv(":scheme", "http"), nv(":authority", "t"), nv(":path", path)};
    nghttp2_data_provider2 provider{};
    if (body != nullptr) {
      provider.source.ptr = new Body{*body, 0};
      provider.read_callback = &Client::read_body;
    }
    const std::int32_t id = nghttp2_submit_request2(session_, nullptr, nva, 4, body != nullptr ? &provider : nullptr,
                                                    nullptr);
    results[id];
    return id;
  }
  // A request whose body never comes: HEADERS without END_STREAM. The app holds it until the client leaves.
  std::int32_t open(const std::string& path) {
    const nghttp2_nv nva[] = {nv(":method", "POST"), nv(":scheme", "http"), nv(":authority", "t"), nv(":path", path)};
    const std::int32_t id = nghttp2_submit_headers(session_, NGHTTP2_FLAG_NONE, -1, nullptr, nva, 4, nullptr);
    results[id];
    return id;
  }
  void reset(std::int32_t id) { nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL); }

  // Exchange frames until `done()` or the time is up; false on timeout or a closed connection.
  bool run_until(const std::function<bool()>& done, int timeout_ms = 5000) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!done()) {
      if (!flush()) return false;
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline -
                                                                              std::chrono::steady_clock::now());
      if (left.count() <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(std::min<long long>(left.count(), 100))) <= 0) continue;
      char buf[65536];
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) {
        eof = true;
        return done();
      }
      if (nghttp2_session_mem_recv2(session_, reinterpret_cast<std::uint8_t*>(buf), static_cast<std::size_t>(n)) < 0)
        return false;
    }
    return flush();
  }
  bool closed(std::int32_t id) { return results[id].closed; }

  std::map<std::int32_t, StreamResult> results;
  std::int32_t goaway_last_stream = -1;
  std::uint32_t goaway_error = 0xffffffff;
  bool eof = false;

 private:
  struct Body {
    std::string data;
    std::size_t off;
  };
  // `value` must outlive the submit call: a std::string the caller holds, or a literal.
  static nghttp2_nv nv(const char* name, std::string_view value) {
    return {reinterpret_cast<std::uint8_t*>(const_cast<char*>(name)),
            reinterpret_cast<std::uint8_t*>(const_cast<char*>(value.data())), std::strlen(name), value.size(),
            NGHTTP2_NV_FLAG_NONE};
  }
  bool flush() {
    for (;;) {
      const std::uint8_t* data = nullptr;
      const nghttp2_ssize n = nghttp2_session_mem_send2(session_, &data);
      if (n < 0) return false;
      if (n == 0) return true;
      if (!fa_test::send_all(fd_, reinterpret_cast<const char*>(data), static_cast<std::size_t>(n))) return false;
    }
  }
  static nghttp2_ssize read_body(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                                 std::uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* b = static_cast<Body*>(source->ptr);
    const std::size_t n = std::min(length, b->data.size() - b->off);
    std::memcpy(buf, b->data.data() + b->off, n);
    b->off += n;
    if (b->off == b->data.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF;
      delete b;
    }
    return static_cast<nghttp2_ssize>(n);
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const std::uint8_t* name, std::size_t namelen,
                       const std::uint8_t* value, std::size_t valuelen, std::uint8_t, void* user) {
    if (std::string_view(reinterpret_cast<const char*>(name), namelen) == ":status")
      static_cast<Client*>(user)->results[f->hd.stream_id].status =
          std::stoi(std::string(reinterpret_cast<const char*>(value), valuelen));
    return 0;
  }
  static int on_data(nghttp2_session*, std::uint8_t, std::int32_t id, const std::uint8_t* data, std::size_t len,
                     void* user) {
    static_cast<Client*>(user)->results[id].body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }
  static int on_close(nghttp2_session*, std::int32_t id, std::uint32_t error, void* user) {
    auto& r = static_cast<Client*>(user)->results[id];
    r.closed = true;
    r.error = error;
    return 0;
  }
  static int on_frame(nghttp2_session*, const nghttp2_frame* f, void* user) {
    if (f->hd.type == NGHTTP2_GOAWAY) {
      static_cast<Client*>(user)->goaway_last_stream = f->goaway.last_stream_id;
      static_cast<Client*>(user)->goaway_error = f->goaway.error_code;
    }
    return 0;
  }

  int fd_;
  nghttp2_session* session_ = nullptr;
};

std::string app_body(const std::string& method, const std::string& path, const std::string& body) {
  return "app " + method + " " + path + " body=" + body;
}

}  // namespace

TEST_CASE("h2: native and app requests on many streams, bodies, deferred answers", "[h2]") {
  LoopHarness h(h2_config());
  REQUIRE(h.bind_error == "");
  REQUIRE(h.server->add_route("GET", "/native", static_text("ok")) == "");
  REQUIRE(h.listen() == "");
  std::string upload(100000, 'u');
  for (std::size_t i = 0; i < upload.size(); ++i) upload[i] = static_cast<char>('a' + i % 26);
  std::map<std::int32_t, std::string> expected;
  bool finished = false;
  const int rc = h.run([&] {
    Client c(h.port);
    if (!c.ok()) return;
    expected[c.request("GET", "/native")] = "ok";
    for (int i = 0; i < 20; ++i) {
      const std::string path = (i % 2 == 0 ? "/defer/" : "/x/") + std::to_string(i);
      expected[c.request("GET", path)] = app_body("GET", path, "");
    }
    expected[c.request("GET", "/chunked/a")] = app_body("GET", "/chunked/a", "");
    finished = c.run_until([&] {
      for (const auto& [id, body] : expected)
        if (!c.closed(id)) return false;
      return true;
    });
    for (const auto& [id, body] : expected) {
      CHECK(c.results[id].status == 200);
      CHECK(c.results[id].body == body);
      CHECK(c.results[id].error == NGHTTP2_NO_ERROR);
    }
    // A request body larger than the stream window (64 KiB) arrives whole: the app takes it, the window reopens.
    const std::int32_t post = c.request("POST", "/echo", &upload);
    CHECK(c.run_until([&] { return c.closed(post); }));
    CHECK(c.results[post].body == app_body("POST", "/echo", upload));
  });
  CHECK(finished);
  CHECK(h.app.requests == 22);
  CHECK(h.app.native_responses == 1);
  check_clean_teardown(h, rc);
}

TEST_CASE("h2: a reset stream and a connection that goes away disconnect the app; nothing leaks", "[h2]") {
  LoopHarness h(h2_config());
  REQUIRE(h.bind_error == "");
  REQUIRE(h.listen() == "");
  bool ok = false;
  const int rc = h.run([&] {
    {
      Client c(h.port);
      if (!c.ok()) return;
      // A request waiting for its body, reset while the app holds the stream.
      const std::int32_t held = c.open("/x/held");
      const std::int32_t other = c.request("GET", "/x/after");
      c.run_until([&] { return c.closed(other); });
      c.reset(held);
      const std::int32_t more = c.request("GET", "/x/more");
      ok = c.run_until([&] { return c.closed(more); }) && c.results[more].status == 200;
      // Streams left open when the client leaves: their apps see a disconnect.
      c.open("/x/left1");
      c.open("/x/left2");
      c.run_until([&] { return h.app.heads.load() >= 5; });
    }  // the socket closes here with two deferred requests pending
    usleep(100 * 1000);
  });
  CHECK(ok);
  CHECK(h.app.disconnects == 3);
  check_clean_teardown(h, rc);
}

TEST_CASE("h2: a file body (send_file) goes out whole through the flow-control windows", "[h2]") {
  ::signal(SIGPIPE, SIG_IGN);
  LoopHarness h(h2_config());
  REQUIRE(h.bind_error == "");
  const fa_test::TempFile file(1 << 20);
  REQUIRE(file.ok());
  const std::string& content = file.content();
  h.app.file_path = file.path();
  REQUIRE(h.listen() == "");
  std::string got;
  const int rc = h.run([&] {
    Client c(h.port);
    if (!c.ok()) return;
    const std::int32_t a = c.request("GET", "/file/1");
    const std::int32_t b = c.request("GET", "/file/2");
    c.run_until([&] { return c.closed(a) && c.closed(b); }, 10000);
    got = c.results[a].body;
    CHECK(c.results[b].body == content);
  });
  CHECK(got == content);
  CHECK(h.app.files_sent == 2);
  check_clean_teardown(h, rc);
}

TEST_CASE("h2: graceful shutdown sends GOAWAY and lets the streams in progress finish", "[h2]") {
  LoopHarness h(h2_config());
  REQUIRE(h.bind_error == "");
  REQUIRE(h.listen() == "");
  std::int32_t last = 0;
  StreamResult pending;
  std::int32_t goaway_last = -1;
  std::uint32_t goaway_error = 1;
  std::atomic<bool> shutdown_done{false};
  uv_async_t shutdown_async;
  uv_async_init(&h.loop, &shutdown_async, [](uv_async_t* a) {
    static_cast<LoopHarness*>(a->data)->server->shutdown();
    uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
  });
  shutdown_async.data = &h;
  const int rc = h.run([&] {
    Client c(h.port);
    if (!c.ok()) return;
    c.request("GET", "/x/first");
    last = c.request("GET", "/defer/in-progress");
    c.run_until([&] { return h.app.heads.load() >= 2; });
    uv_async_send(&shutdown_async);
    c.run_until([&] { return c.closed(last) && c.eof; });
    pending = c.results[last];
    goaway_last = c.goaway_last_stream;
    goaway_error = c.goaway_error;
    shutdown_done = true;
  });
  CHECK(shutdown_done);
  CHECK(goaway_last == last);
  CHECK(goaway_error == NGHTTP2_NO_ERROR);
  CHECK(pending.status == 200);
  CHECK(pending.body == app_body("GET", "/defer/in-progress", ""));
  check_clean_teardown(h, rc);
}

TEST_CASE("h2: streams the server resets itself do not count towards the rapid-reset bound", "[h2]") {
  LoopHarness h(h2_config());
  REQUIRE(h.bind_error == "");
  REQUIRE(h.listen() == "");
  int reset_internal = 0;
  int last_status = 0;
  std::uint32_t goaway_error = 0xffffffff;
  const int rc = h.run([&] {
    Client c(h.port);
    if (!c.ok()) return;
    // 4 x 100 responses that cannot complete, reset by the server while their handler is attached: twice the
    // bucket (2 x max_concurrent_streams), faster than it refills. Only client resets may count.
    for (int batch = 0; batch < 4; ++batch) {
      std::vector<std::int32_t> ids;
      for (int i = 0; i < 100; ++i) ids.push_back(c.request("GET", "/reset/" + std::to_string(i)));
      c.run_until([&] {
        for (const std::int32_t id : ids)
          if (!c.closed(id)) return false;
        return true;
      });
      for (const std::int32_t id : ids) reset_internal += c.results[id].error == NGHTTP2_INTERNAL_ERROR;
    }
    const std::int32_t after = c.request("GET", "/x/after");
    c.run_until([&] { return c.closed(after); });
    last_status = c.results[after].status;
    goaway_error = c.goaway_error;
  });
  CHECK(reset_internal == 400);
  CHECK(last_status == 200);
  CHECK(goaway_error == 0xffffffff);  // no GOAWAY at all
  CHECK(h.app.disconnects == 400);
  check_clean_teardown(h, rc);
}
