#include "core/memory_probe.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace fa {

bool memory_readable(const void* p, std::size_t len) {
  if (p == nullptr || reinterpret_cast<std::uintptr_t>(p) % alignof(void*) != 0) return false;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) return false;
  const char* at = static_cast<const char*>(p);
  bool ok = true;
  char sink[4096];
  while (ok && len > 0) {
    const std::size_t step = len < sizeof sink ? len : sizeof sink;  // below the pipe's capacity
    const ssize_t n = ::write(fds[1], at, step);
    if (n < 0 && errno == EINTR) continue;
    ok = n == static_cast<ssize_t>(step);  // EFAULT: not readable
    if (ok) {
      while (::read(fds[0], sink, sizeof sink) > 0) {
      }
      at += step;
      len -= step;
    }
  }
  ::close(fds[0]);
  ::close(fds[1]);
  return ok;
}

}  // namespace fa
