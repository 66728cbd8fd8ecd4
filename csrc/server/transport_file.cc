// Transport: a file as the response body (ASGI http.response.pathsend, native file routes).
//
// Plain connections: a file of up to 16 KiB is read into the output buffer behind the head (one write, one
// segment); a larger one goes by sendfile(2) from the file to the socket, so the bytes go from the page cache to the socket
// without entering user space. When the socket's buffer is full (EAGAIN) the connection waits for it to become
// writable with a uv_poll on a dup of the socket's descriptor (libuv allows one watcher per descriptor, and the
// stream handle has its own), and goes on from there. Output queued before the file (the head, a chunk size) is
// written first: sendfile starts only when libuv's write queue is empty, so nothing is reordered.
// sendfile(2) has no MSG_NOSIGNAL: a peer that has closed raises SIGPIPE, which the process must ignore (Python
// does at start-up, as libuv's own writes also require; the core then sees EPIPE and closes the connection).
// TLS connections: the kernel cannot encrypt, so the file is read in 64 KiB steps into the TLS writer, each step
// taken when the write queue is below the high-water mark (the same backpressure as an app's send()).
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "core/uv_api.h"
#include "server/app_handler.h"
#include "server/server.h"
#include "server/transport.h"

namespace fa {

namespace {
// Bytes one connection's file may send per loop turn (nginx: sendfile_max_chunk): past it the transfer goes on
// when the socket is next seen writable, after the other connections' events of this turn, so one fast client
// fetching a large file cannot hold the loop.
constexpr std::uint64_t kSendfileTurnMax = 2u << 20;
// Files up to this size are read into the output buffer and leave with the head in one write (plain connections).
constexpr std::uint64_t kInlineFileMax = 16 * 1024;
}  // namespace

void Transport::send_file(int fd, std::uint64_t offset, std::uint64_t remaining, std::string suffix) {
  file_ = std::make_unique<FileSend>(FileSend{fd, offset, remaining, std::move(suffix)});
  // The send bound of a file counts from its start: a first sendfile that finds the socket full (its buffer filled
  // by earlier output that left without queueing) must not be measured from a stale or zero time.
  last_write_ms_ = uv.uv_now(server_->loop());
  file_pump();
}

void Transport::file_pump() {
  if (closing_ || file_ == nullptr) return;
  file_->waiting = false;
  const bool more = tls_ != nullptr                     ? file_read_into_writer()
                    : file_->remaining <= kInlineFileMax ? file_read_inline()
                                                         : file_sendfile();
  if (closing_ || file_ == nullptr) return;
  if (!more) return;  // waiting: on_file_writable() or on_write() calls again
  file_done();
}

bool Transport::file_sendfile() {
  uv_os_fd_t sock = -1;
  if (uv.uv_fileno(&io_.handle, &sock) != 0) {
    close();
    return false;
  }
  if (tcp_ && !file_->corked) {
    // The head and the first part of the file leave in full segments, as nginx's tcp_nopush does; uncorked
    // when the file is out.
    const int on = 1;
    file_->corked = ::setsockopt(sock, IPPROTO_TCP, TCP_CORK, &on, sizeof on) == 0;
  }
  // What was queued before the file goes first.
  if (!out_.empty()) flush();
  if (closing_) return false;
  if (pending_writes_ > 0) {
    file_->waiting = true;  // on_write() resumes when the queue is empty
    return false;
  }
  std::uint64_t this_turn = 0;
  while (file_->remaining > 0) {
    if (this_turn >= kSendfileTurnMax) {
      file_wait_writable();  // writable at once: the next turn goes on
      return false;
    }
    off_t offset = static_cast<off_t>(file_->offset);
    const std::uint64_t turn_left = kSendfileTurnMax - this_turn;
    const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(file_->remaining, turn_left));
    const ssize_t n = ::sendfile(sock, file_->fd, &offset, want);
    if (n > 0) {
      this_turn += static_cast<std::uint64_t>(n);
      file_->offset += static_cast<std::uint64_t>(n);
      file_->remaining -= static_cast<std::uint64_t>(n);
      server_->counters().bytes_out += static_cast<std::uint64_t>(n);
      server_->counters().sendfile_bytes += static_cast<std::uint64_t>(n);
      last_write_ms_ = uv.uv_now(server_->loop());
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      file_wait_writable();
      return false;
    }
    // n == 0: the file is shorter than when it was opened (truncated meanwhile); else a socket or read error.
    // The response cannot be completed: the client sees the connection close before Content-Length.
    close();
    return false;
  }
  return true;
}

bool Transport::file_read_inline() {
  // A small file goes out with the head in one write: a second system call (and a second segment, with
  // TCP_NODELAY) for the body costs more than copying a few KiB (native.static, 4 KiB asset: 21.1 -> see
  // docs/benchmarks.md, "Native static files").
  const std::size_t start = out_.size();
  const std::size_t want = static_cast<std::size_t>(file_->remaining);
  out_.resize(start + want);
  std::size_t got = 0;
  while (got < want) {
    const ssize_t n = ::pread(file_->fd, &out_[start + got], want - got, static_cast<off_t>(file_->offset + got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A read error, or a file shorter than its size (it shrank, or a /proc or /sys file that reports a page):
      // what was read goes out behind the head, then the connection closes, so the client sees the response cut
      // short before its Content-Length (as from uvicorn), never a request left waiting.
      out_.resize(start + got);
      close_when_flushed();
      return false;
    }
    got += static_cast<std::size_t>(n);
  }
  file_->offset += want;
  file_->remaining = 0;
  return true;
}

bool Transport::file_read_into_writer() {
  char* buf = server_->file_buffer();
  while (file_->remaining > 0) {
    if (write_queue_bytes() > server_->config().write_high_water) {
      file_->waiting = true;  // on_write() resumes below the low-water mark
      return false;
    }
    const std::size_t want = file_->remaining < Server::kFileBufferSize ? static_cast<std::size_t>(file_->remaining)
                                                                        : Server::kFileBufferSize;
    const ssize_t n = ::pread(file_->fd, buf, want, static_cast<off_t>(file_->offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // a read error, or the file shrank
      close();
      return false;
    }
    file_->offset += static_cast<std::uint64_t>(n);
    file_->remaining -= static_cast<std::uint64_t>(n);
    flush(buf, static_cast<std::size_t>(n));
    if (closing_) return false;
  }
  return true;
}

void Transport::file_wait_writable() {
  if (file_poll_ == nullptr) {
    uv_os_fd_t sock = -1;
    auto poll = std::make_unique<FilePoll>();
    if (uv.uv_fileno(&io_.handle, &sock) != 0 || (poll->fd = ::dup(sock)) < 0) {
      close();
      return;
    }
    if (uv.uv_poll_init(server_->loop(), &poll->handle, poll->fd) != 0) {
      ::close(poll->fd);
      close();
      return;
    }
    poll->handle.data = this;
    file_poll_ = std::move(poll);
    open_handles_++;
    live_handles_add(1);
  }
  if (uv.uv_poll_start(&file_poll_->handle, UV_WRITABLE, &Transport::on_file_writable) != 0) {
    close();
    return;
  }
  file_->waiting = true;
  // The send bound covers a client that stops reading a file too.
  if (server_->config().send_timeout_ms > 0) arm_timer(last_write_ms_ + server_->config().send_timeout_ms);
}

void Transport::on_file_writable(uv_poll_t* p, int status, int) {
  auto* t = static_cast<Transport*>(p->data);
  uv.uv_poll_stop(p);
  if (t->closing_) return;
  CallbackScope scope(t->server_->handler());
  if (status < 0) {
    t->close();
    return;
  }
  t->file_pump();
}

void Transport::file_done() {
  server_->counters().files_sent++;
  uv_os_fd_t sock = -1;
  if (file_->corked && uv.uv_fileno(&io_.handle, &sock) == 0) {
    const int off = 0;
    ::setsockopt(sock, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
  }
  ::close(file_->fd);
  out_.append(file_->suffix);
  file_.reset();
  listener_->on_file_sent();
}

}  // namespace fa
