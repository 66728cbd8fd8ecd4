// WebSocket sessions through fa::Connection on a real libuv loop over 127.0.0.1: handshake with frames in the same
// packet, echo of small and large messages, automatic pong, server- and client-initiated close handshakes, protocol
// errors, and a clean teardown (zero live handles) afterwards.
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/websocket.h"
#include "loop_harness.h"

namespace ws = fa::ws;
using fa_test::LoopHarness;

namespace {

const char* const kHandshake =
    "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

struct Frame {
  int opcode = -1;
  std::string payload;
};

// Reads the HTTP head (up to the blank line) from `pending`/the socket; returns it, or "" on EOF.
std::string read_head(int fd, std::string& pending) {
  for (;;) {
    const auto end = pending.find("\r\n\r\n");
    if (end != std::string::npos) {
      std::string head = pending.substr(0, end + 4);
      pending.erase(0, end + 4);
      return head;
    }
    char buf[4096];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return {};
    pending.append(buf, static_cast<std::size_t>(n));
  }
}

bool fill(int fd, std::string& pending, std::size_t need) {
  while (pending.size() < need) {
    char buf[65536];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return false;
    pending.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

// One server frame (must be unmasked, FIN set); opcode -1 on EOF or a malformed frame.
Frame read_frame(int fd, std::string& pending) {
  Frame f;
  if (!fill(fd, pending, 2)) return f;
  const auto b0 = static_cast<std::uint8_t>(pending[0]), b1 = static_cast<std::uint8_t>(pending[1]);
  if ((b1 & 0x80) != 0 || (b0 & 0x80) == 0) return f;
  std::size_t hdr = 2;
  std::uint64_t len = b1 & 0x7F;
  if (len == 126) {
    if (!fill(fd, pending, 4)) return f;
    len = (static_cast<std::uint8_t>(pending[2]) << 8) | static_cast<std::uint8_t>(pending[3]);
    hdr = 4;
  } else if (len == 127) {
    if (!fill(fd, pending, 10)) return f;
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | static_cast<std::uint8_t>(pending[2 + i]);
    hdr = 10;
  }
  if (!fill(fd, pending, hdr + len)) return f;
  f.opcode = b0 & 0x0F;
  f.payload = pending.substr(hdr, len);
  pending.erase(0, hdr + len);
  return f;
}

int close_code(const Frame& f) {
  if (f.opcode != ws::kClose || f.payload.size() < 2) return -1;
  return (static_cast<std::uint8_t>(f.payload[0]) << 8) | static_cast<std::uint8_t>(f.payload[1]);
}

std::string close_payload(int code) {
  return std::string{static_cast<char>(code >> 8), static_cast<char>(code & 0xFF)};
}

bool reads_eof(int fd, std::string& pending) {
  if (!pending.empty()) return false;
  char c;
  return ::recv(fd, &c, 1, 0) <= 0;
}

fa::ServerConfig ws_config() {
  fa::ServerConfig c = LoopHarness::default_config();
  c.websocket = true;
  c.ws_max_message = 1 << 20;
  c.keep_alive_ms = 50;  // must never close an open session
  return c;
}

}  // namespace

TEST_CASE("ws loop: echo, pong, close handshakes, protocol errors, clean teardown", "[loop][ws]") {
  LoopHarness h(ws_config());
  REQUIRE(h.bind_error == "");
  REQUIRE(h.listen() == "");
  std::vector<std::string> failures;
  std::string head1;
  Frame echo1, echo_big, pong, echo_frag, server_close, client_close_echo, error_close, too_big_close;
  bool eof1 = false, eof2 = false, eof3 = false, eof4 = false;
  std::string big(200 * 1024, 'b');
  for (std::size_t i = 0; i < big.size(); i += 97) big[i] = static_cast<char>(i);

  const int rc = h.run([&] {
    // 1: frames in the same packet as the handshake; big message; ping; fragments; server-initiated close.
    int fd = fa_test::connect_loopback(h.port, 5000);
    if (fd < 0) {
      failures.push_back("connect 1");
      return;
    }
    std::string pending;
    std::string first = std::string(kHandshake) + ws::client_frame(ws::kText, "hello");
    fa_test::send_all(fd, first.data(), first.size());
    head1 = read_head(fd, pending);
    echo1 = read_frame(fd, pending);
    usleep(150 * 1000);  // past the keep-alive timeout: the session must stay open
    std::string msg = ws::client_frame(ws::kBinary, big);
    for (std::size_t i = 0; i < msg.size(); i += 7000)  // split across many reads
      fa_test::send_all(fd, msg.data() + i, std::min<std::size_t>(7000, msg.size() - i));
    echo_big = read_frame(fd, pending);
    msg = ws::client_frame(ws::kPing, "pp");
    fa_test::send_all(fd, msg.data(), msg.size());
    pong = read_frame(fd, pending);
    msg = ws::client_frame(ws::kText, "fr", false) + ws::client_frame(ws::kCont, "ag");
    fa_test::send_all(fd, msg.data(), msg.size());
    echo_frag = read_frame(fd, pending);
    msg = ws::client_frame(ws::kText, "close");
    fa_test::send_all(fd, msg.data(), msg.size());
    server_close = read_frame(fd, pending);
    msg = ws::client_frame(ws::kClose, close_payload(4000));
    fa_test::send_all(fd, msg.data(), msg.size());
    eof1 = reads_eof(fd, pending);
    ::close(fd);

    // 2: client-initiated close is echoed, then the server closes.
    fd = fa_test::connect_loopback(h.port, 5000);
    pending.clear();
    fa_test::send_all(fd, kHandshake, std::strlen(kHandshake));
    read_head(fd, pending);
    msg = ws::client_frame(ws::kClose, close_payload(1001) + "gone");
    fa_test::send_all(fd, msg.data(), msg.size());
    client_close_echo = read_frame(fd, pending);
    eof2 = reads_eof(fd, pending);
    ::close(fd);

    // 3: an unmasked frame fails the connection with 1002.
    fd = fa_test::connect_loopback(h.port, 5000);
    pending.clear();
    fa_test::send_all(fd, kHandshake, std::strlen(kHandshake));
    read_head(fd, pending);
    fa_test::send_all(fd, "\x81\x02hi", 4);
    error_close = read_frame(fd, pending);
    eof3 = reads_eof(fd, pending);
    ::close(fd);

    // 4: a message over the limit fails with 1009 as soon as its header is seen.
    fd = fa_test::connect_loopback(h.port, 5000);
    pending.clear();
    fa_test::send_all(fd, kHandshake, std::strlen(kHandshake));
    read_head(fd, pending);
    msg = ws::client_frame(ws::kBinary, std::string((1 << 20) + 1, 'x')).substr(0, 14);
    fa_test::send_all(fd, msg.data(), msg.size());
    too_big_close = read_frame(fd, pending);
    eof4 = reads_eof(fd, pending);
    ::close(fd);
  });

  for (const auto& f : failures) INFO("client: " << f);
  CHECK(failures.empty());
  CHECK(head1.rfind("HTTP/1.1 101 Switching Protocols\r\n", 0) == 0);
  CHECK(echo1.opcode == ws::kText);
  CHECK(echo1.payload == "hello");
  CHECK(echo_big.opcode == ws::kBinary);
  CHECK(echo_big.payload == big);
  CHECK(pong.opcode == ws::kPong);
  CHECK(pong.payload == "pp");
  CHECK(echo_frag.payload == "frag");
  CHECK(close_code(server_close) == 4000);
  CHECK(server_close.payload.substr(2) == "bye");
  CHECK(eof1);
  CHECK(close_code(client_close_echo) == 1001);
  CHECK(client_close_echo.payload.substr(2) == "gone");
  CHECK(eof2);
  CHECK(close_code(error_close) == 1002);
  CHECK(eof3);
  CHECK(close_code(too_big_close) == 1009);
  CHECK(eof4);
  CHECK(h.app.ws_sessions == 4);
  CHECK(h.app.ws_close_codes == std::vector<int>{1001, 1002, 1009});
  CHECK(h.app.errors.empty());
  CHECK(fa::live_handles() == 0);
  CHECK(rc == 0);
}
