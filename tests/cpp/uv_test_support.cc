#include "uv_test_support.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>

#include "core/uv_api.h"

namespace fa_test {

namespace {
// fa_core calls libuv only through the fa::uv table, so nothing in the binary would reference the libuv functions and
// the linker would leave them out of the static libuv. Taking their addresses here pulls them in; ENABLE_EXPORTS
// (-rdynamic) then makes them visible to dlsym(dlopen(nullptr)), exactly like uvloop's module exports its libuv.
#define FA_TEST_UV_ADDR(name) reinterpret_cast<void*>(&::name),
void* const volatile kLinkedUvFunctions[] = {FA_UV_FUNCTIONS(FA_TEST_UV_ADDR)};
#undef FA_TEST_UV_ADDR
}  // namespace

std::string bind_uv() {
  (void)kLinkedUvFunctions[0];
  std::string err;
  void* self = dlopen(nullptr, RTLD_NOW);
  if (self == nullptr) return std::string("dlopen(nullptr) failed: ") + dlerror();
  if (!fa::uv_api_bind_handle(self, "test binary", &err)) return err;
  return {};
}

int bound_loopback_socket(int* port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

int connect_loopback(int port, int timeout_ms) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  timeval tv{};
  tv.tv_sec = timeout_ms / 1000;
  tv.tv_usec = (timeout_ms % 1000) * 1000;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool send_all(int fd, const char* data, std::size_t len) {
  while (len > 0) {
    const ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    data += n;
    len -= static_cast<std::size_t>(n);
  }
  return true;
}

}  // namespace fa_test
