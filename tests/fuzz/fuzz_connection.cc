// libFuzzer target: the connection state machine (fa::Connection over a real fa::Server on a real libuv loop),
// driven by a loopback client in this thread. The input is split on 0xFE into separate sends with loop turns in
// between (reads split anywhere, pipelining, bodies across reads, WebSocket frames after an accept); then the
// client half-closes and the connection must end. HTTP/2 is on: an input that begins with the client preface
// drives H2Session and its streams instead of the HTTP/1.1 parser. Invariants: no sanitizer finding, the server
// closes every connection and handle it opened, and it always keeps answering: a fresh request after each input
// gets a 200.
#include "fuzz_world.h"

namespace {

fuzz::World* world() {
  static fuzz::World* w = fuzz::make_world();
  return w;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  using namespace fuzz;
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
  expect_all_closed(w);
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
