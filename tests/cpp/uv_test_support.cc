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

namespace fa_test {

namespace {

bool fill(int fd, std::string& pending) {
  char buf[16384];
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof buf, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    pending.append(buf, static_cast<std::size_t>(n));
    return true;
  }
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c + 32);
  return s;
}

}  // namespace

std::string HttpResponse::header(const std::string& lower_name) const {
  for (const auto& h : headers)
    if (lower(h.first) == lower_name) return h.second;
  return {};
}

std::string read_response(int fd, std::string& pending, bool head_request, HttpResponse* out) {
  *out = HttpResponse{};
  std::size_t head_end;
  while ((head_end = pending.find("\r\n\r\n")) == std::string::npos) {
    if (!fill(fd, pending)) return pending.empty() ? "eof" : "connection ended inside a response head";
  }
  const std::string head = pending.substr(0, head_end + 2);
  std::size_t pos = head.find("\r\n");
  const std::string status_line = head.substr(0, pos);
  if (status_line.rfind("HTTP/1.1 ", 0) != 0 || status_line.size() < 13) return "bad status line: " + status_line;
  out->status = std::stoi(status_line.substr(9, 3));
  pos += 2;
  while (pos < head.size()) {
    const std::size_t eol = head.find("\r\n", pos);
    const std::string line = head.substr(pos, eol - pos);
    const std::size_t colon = line.find(':');
    if (colon == std::string::npos) return "bad header line: " + line;
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    out->headers.emplace_back(line.substr(0, colon), value);
    pos = eol + 2;
  }
  std::size_t body_start = head_end + 4;
  const bool no_body = head_request || out->status < 200 || out->status == 204 || out->status == 304;
  const std::string te = lower(out->header("transfer-encoding"));
  const std::string cl = out->header("content-length");
  std::size_t end = body_start;
  if (no_body) {
    end = body_start;
  } else if (te.find("chunked") != std::string::npos) {
    std::size_t p = body_start;
    for (;;) {
      std::size_t eol;
      while ((eol = pending.find("\r\n", p)) == std::string::npos)
        if (!fill(fd, pending)) return "connection ended inside a chunk size";
      const std::size_t size = std::stoul(pending.substr(p, eol - p), nullptr, 16);
      p = eol + 2;
      while (pending.size() < p + size + 2)
        if (!fill(fd, pending)) return "connection ended inside a chunk";
      if (pending.compare(p + size, 2, "\r\n") != 0) return "chunk not followed by CRLF";
      out->body.append(pending, p, size);
      p += size + 2;
      if (size == 0) break;  // no trailers from this server
    }
    end = p;
  } else if (!cl.empty()) {
    const std::size_t len = std::stoul(cl);
    while (pending.size() < body_start + len)
      if (!fill(fd, pending)) return "connection ended inside a body";
    out->body = pending.substr(body_start, len);
    end = body_start + len;
  } else {
    while (fill(fd, pending)) {
    }
    out->body = pending.substr(body_start);
    end = pending.size();
  }
  out->raw = pending.substr(0, end);
  pending.erase(0, end);
  return {};
}

bool reads_eof(int fd, std::string& pending) {
  if (!pending.empty()) return false;
  char c;
  for (;;) {
    const ssize_t n = recv(fd, &c, 1, 0);
    if (n < 0 && errno == EINTR) continue;
    return n == 0;
  }
}

std::string with_date_masked(const std::string& raw) {
  const std::size_t at = raw.find("\r\ndate: ");
  if (at == std::string::npos) return raw;
  const std::size_t v = at + 8;
  const std::size_t eol = raw.find("\r\n", v);
  if (eol == std::string::npos || eol - v != 29 || raw.compare(eol - 4, 4, " GMT") != 0) return {};
  return raw.substr(0, v) + "<date>" + raw.substr(eol);
}

}  // namespace fa_test
