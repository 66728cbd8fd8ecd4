// Transport: accepting, reading (and decrypting), writing (and encrypting), corking, the timer, closing. Files as
// response bodies are transport_file.cc; the TLS state itself is core/tls_session.h.
#include "server/transport.h"

#include <cstdlib>
#include <cstring>
#include <unistd.h>

#include "core/uv_api.h"
#include "server/app_handler.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

namespace {

void addr_to_host_port(const sockaddr_storage& ss, std::string* host, int* port) {
  char buf[64] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    uv.uv_ip4_name(a, buf, sizeof buf);
    *port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    uv.uv_ip6_name(a, buf, sizeof buf);
    *port = ntohs(a->sin6_port);
  }
  *host = buf;
}

// A write libuv could not take at once: the unsent bytes, copied, freed in on_write.
struct WriteReq {
  uv_write_t req;
  std::size_t len;
  char data[1];
};

constexpr std::size_t kCorkMaxBytes = 16 * 1024;

}  // namespace

Transport::Transport(Server* server, TransportListener* listener, bool tcp)
    : server_(server), listener_(listener), tcp_(tcp) {}

Transport::~Transport() = default;

bool Transport::accept_from(uv_stream_t* listener) {
  uv_loop_t* loop = server_->loop();
  if (tcp_) {
    uv.uv_tcp_init(loop, &io_.tcp);
  } else {
    uv.uv_pipe_init(loop, &io_.pipe, 0);
  }
  io_.handle.data = this;
  uv.uv_timer_init(loop, &timer_);
  timer_.data = this;
  open_handles_ = 2;
  live_handles_add(2);
  if (uv.uv_accept(listener, &io_.stream) != 0) {
    close();
    return false;
  }
  if (tcp_) {
    uv.uv_tcp_nodelay(&io_.tcp, 1);
    sockaddr_storage ss{};
    int len = sizeof ss;
    if (uv.uv_tcp_getpeername(&io_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      addr_to_host_port(ss, &addresses_.peer_host, &addresses_.peer_port);
    len = sizeof ss;
    if (uv.uv_tcp_getsockname(&io_.tcp, reinterpret_cast<sockaddr*>(&ss), &len) == 0)
      addr_to_host_port(ss, &addresses_.local_host, &addresses_.local_port);
  }
  server_->counters().connections_total++;
  if (server_->config().tls != nullptr) {
    tls_ = std::make_unique<TlsSession>(*server_->config().tls);
    if (!tls_->ok()) {
      close();
      return false;
    }
  }
  start_reading();
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------------------------

void Transport::start_reading() {
  if (reading_ || closing_) return;
  if (uv.uv_read_start(&io_.stream, &Transport::on_alloc, &Transport::on_read) == 0) reading_ = true;
}

void Transport::stop_reading() {
  if (!reading_) return;
  uv.uv_read_stop(&io_.stream);
  reading_ = false;
}

void Transport::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  (void)h;
  buf->base = static_cast<Transport*>(h->data)->server_->read_buffer();
  buf->len = Server::kReadBufferSize;
}

void Transport::on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  auto* t = static_cast<Transport*>(s->data);
  if (nread == 0) return;  // EAGAIN
  CallbackScope scope(t->server_->handler());
  // No exception may unwind into libuv (C): the only ones possible here are allocation failures.
  try {
    t->on_read_data(nread, buf);
  } catch (...) {
    t->in_read_ = false;
    t->in_read_callback_ = false;
    t->close();
  }
}

void Transport::on_read_data(ssize_t nread, const uv_buf_t* buf) {
  in_read_callback_ = true;
  StageScope parse_stage(kStageParse);  // the whole callback; what it starts (route, app, writes) is nested
  if (nread < 0) {
    stop_reading();
    close();
  } else {
    server_->counters().bytes_in += static_cast<std::uint64_t>(nread);
    received_ = true;
    in_read_ = true;
    if (tls_ != nullptr) {
      if (!tls_read(buf->base, static_cast<std::size_t>(nread))) {
        in_read_callback_ = false;
        return;
      }
    } else {
      listener_->on_transport_input(buf->base, static_cast<std::size_t>(nread));
    }
    in_read_ = false;
    if (!closing_) listener_->on_transport_read_end();
  }
  in_read_callback_ = false;
}

bool Transport::tls_read(const char* data, std::size_t len) {
  if (!tls_->handshake_done() && handshake_started_ms_ == 0) {
    // The handshake has begun: it is bounded like a request head (a client that stalls mid-handshake).
    handshake_started_ms_ = server_->loop()->time;
    arm_timer(handshake_started_ms_ + server_->config().tls_handshake_timeout_ms);
  }
  tls_->feed(data, len);
  char* plain = server_->tls_input_buffer();
  // Everything fed is decrypted now, also while parsing is paused (the plaintext then waits in the session,
  // bounded by one socket read): ciphertext left in the BIO would not be looked at again until the socket had more.
  while (!closing_) {
    const bool was_done = tls_->handshake_done();
    const int n = tls_->read(plain, Server::kTlsBufferSize);
    if (!was_done && tls_->handshake_done()) listener_->on_tls_handshake_done();
    if (n > 0) {
      listener_->on_transport_input(plain, static_cast<std::size_t>(n));
      continue;
    }
    if (n == TlsSession::kWantMore) return true;
    in_read_ = false;
    if (n == TlsSession::kClosed) {  // close_notify: the peer is done sending
      stop_reading();
      close();
      return false;
    }
    listener_->on_tls_failure(tls_->failure().c_str());
    if (!tls_->handshake_done()) {
      server_->counters().tls_handshake_failures++;
      // The alert OpenSSL queued for the peer (e.g. unknown CA) is sent, then the connection closes.
      close_when_flushed();
    } else {
      close();
    }
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

void Transport::flush(const char* extra, std::size_t extra_len) {
  if (closing_) {
    out_.clear();
    return;
  }
  if (tls_ != nullptr) {
    flush_tls(extra, extra_len);
    return;
  }
  if (out_.size() + extra_len == 0) {
    close_if_flushed();
    return;
  }
  StageScope write_stage(kStageWrite);
  if (!write_raw(out_.data(), out_.size(), extra, extra_len)) return;
  out_.clear();
  close_if_flushed();
}

void Transport::close_if_flushed() {
  if (close_after_flush_ && pending_writes_ == 0 && !closing_ && !listener_->transport_output_pending()) close();
}

void Transport::flush_tls(const char* extra, std::size_t extra_len) {
  StageScope write_stage(kStageWrite);
  if ((!out_.empty() && !tls_->write(out_.data(), out_.size())) ||
      (extra_len > 0 && !tls_->write(extra, extra_len))) {
    out_.clear();
    listener_->on_tls_failure(tls_->failure().c_str());
    close();
    return;
  }
  out_.clear();
  if (close_after_flush_ && !listener_->transport_output_pending()) tls_->shutdown();  // close_notify first
  // The ciphertext leaves through the server's TLS output buffer in steps (a large body is several steps); never
  // through the input buffer, which may hold plaintext still being parsed (flushes run inside parser callbacks).
  char* buf = server_->tls_output_buffer();
  while (tls_->pending_output() > 0) {
    const std::size_t n = tls_->take_output(buf, Server::kTlsBufferSize);
    if (n == 0 || !write_raw(buf, n, nullptr, 0)) return;
  }
  close_if_flushed();
}

bool Transport::write_raw(const char* a, std::size_t a_len, const char* b, std::size_t b_len) {
  const std::size_t total = a_len + b_len;
  std::size_t written = 0;
  if (pending_writes_ == 0) {
    uv_buf_t bufs[2];
    unsigned n = 0;
    if (a_len > 0) bufs[n++] = uv.uv_buf_init(const_cast<char*>(a), static_cast<unsigned>(a_len));
    if (b_len > 0) bufs[n++] = uv.uv_buf_init(const_cast<char*>(b), static_cast<unsigned>(b_len));
    const int r = uv.uv_try_write(&io_.stream, bufs, n);
    if (r > 0) {
      written = static_cast<std::size_t>(r);
    } else if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
      out_.clear();
      close();
      return false;
    }
  }
  server_->counters().bytes_out += written;
  if (written < total) {
    const std::size_t rest = total - written;
    auto* w = static_cast<WriteReq*>(std::malloc(sizeof(WriteReq) + rest));
    if (w == nullptr) {
      close();
      return false;
    }
    w->len = rest;
    if (written < a_len) {
      std::memcpy(w->data, a + written, a_len - written);
      if (b_len > 0) std::memcpy(w->data + (a_len - written), b, b_len);
    } else {
      const std::size_t skip = written - a_len;
      std::memcpy(w->data, b + skip, b_len - skip);
    }
    w->req.data = this;
    uv_buf_t buf = uv.uv_buf_init(w->data, static_cast<unsigned>(rest));
    if (uv.uv_write(&w->req, &io_.stream, &buf, 1, &Transport::on_write) != 0) {
      std::free(w);
      out_.clear();
      close();
      return false;
    }
    if (pending_writes_++ == 0) {
      // Output is now waiting for the client: the send bound starts.
      last_write_ms_ = uv.uv_now(server_->loop());
      queue_at_check_ = io_.stream.write_queue_size;
      if (server_->config().send_timeout_ms > 0) arm_timer(last_write_ms_ + server_->config().send_timeout_ms);
    }
  }
  return true;
}

bool Transport::output_backed_up_after_flush() {
  if (!out_.empty()) flush();
  return !closing_ && write_queue_bytes() > server_->config().write_high_water;
}

void Transport::cork() {
  if (closing_) return;
  // Cork only while nothing is in flight and little is buffered: the backpressure check (want_drain) looks at
  // libuv's write queue, whose drain is what wakes a waiting send().
  if (pending_writes_ > 0 || out_.size() >= kCorkMaxBytes) {
    if (!in_read_) listener_->on_transport_flush_due();
    return;
  }
  if (!corked_ && !in_read_) {
    corked_ = true;
    server_->cork(this);
  }
}

void Transport::flush_at_turn_end() {
  if (corked_ || closing_) return;
  corked_ = true;
  server_->cork(this);
}

void Transport::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  auto* t = static_cast<Transport*>(req->data);
  t->pending_writes_--;
  if (status == 0) t->server_->counters().bytes_out += w->len;
  std::free(w);
  if (t->closing_) return;
  CallbackScope scope(t->server_->handler());
  if (status < 0) {
    t->close();
    return;
  }
  t->last_write_ms_ = uv.uv_now(t->server_->loop());
  const bool drained = t->write_queue_bytes() <= t->server_->config().write_low_water;
  // A file waiting for the queue: empty for sendfile (nothing may overtake it), drained for the TLS reader.
  if (t->file_ != nullptr && t->file_->waiting && (t->tls_ != nullptr ? drained : t->pending_writes_ == 0)) {
    t->file_pump();
    if (t->closing_) return;
  }
  t->listener_->on_transport_output(drained);
  if (t->out_.empty()) t->close_if_flushed();
}

// ---------------------------------------------------------------------------------------------------------------
// Time bounds
// ---------------------------------------------------------------------------------------------------------------

void Transport::start_timer(std::uint64_t due_ms) {
  const std::uint64_t now = uv.uv_now(server_->loop());
  uv.uv_timer_start(&timer_, &Transport::on_timer, due_ms > now ? due_ms - now : 0, 0);
  timer_armed_ = true;
  timer_due_ms_ = due_ms;
}

void Transport::on_timer(uv_timer_t* timer) {
  auto* t = static_cast<Transport*>(timer->data);
  t->timer_armed_ = false;
  if (t->closing_) return;
  CallbackScope scope(t->server_->handler());
  // No exception may unwind into libuv: a bound that cannot be served (memory exhausted) closes the connection.
  try {
    t->listener_->on_transport_timer();
  } catch (...) {
    t->close();
  }
}

bool Transport::check_timeouts(std::uint64_t now, std::uint64_t* next_due) {
  const ServerConfig& cfg = server_->config();
  // A file waiting for the socket to take more: its last progress is last_write_ms_ (sendfile updates it).
  if (file_ != nullptr && file_->waiting && tls_ == nullptr && pending_writes_ == 0 && cfg.send_timeout_ms > 0 &&
      deadline_passed(now, last_write_ms_, cfg.send_timeout_ms, next_due)) {
    listener_->on_transport_timeout("send timeout: the client does not read its response");
    close();
    return false;
  }
  // Output the client does not take. Any shrinking of libuv's queue counts as progress.
  if (pending_writes_ > 0) {
    const std::size_t queued = io_.stream.write_queue_size;
    if (queued < queue_at_check_) last_write_ms_ = now;
    queue_at_check_ = queued;
    if (cfg.send_timeout_ms > 0 && deadline_passed(now, last_write_ms_, cfg.send_timeout_ms, next_due)) {
      listener_->on_transport_timeout("send timeout: the client does not read its response");
      close();
      return false;
    }
  }
  if (handshaking() && deadline_passed(now, handshake_started_ms_, cfg.tls_handshake_timeout_ms, next_due)) {
    server_->counters().tls_handshake_failures++;
    listener_->on_transport_timeout("TLS handshake timeout: the handshake did not complete in time");
    close();
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------------------------------------------

void Transport::close_when_flushed() {
  close_after_flush_ = true;
  stop_reading();
  if (!in_read_ || closing_) listener_->on_transport_flush_due();
}

void Transport::close() {
  if (closing_) return;
  closing_ = true;
  if (corked_) {
    corked_ = false;
    server_->uncork(this);
  }
  stop_reading();
  listener_->on_transport_closing();
  if (file_ != nullptr) {
    ::close(file_->fd);
    file_.reset();
  }
  uv.uv_timer_stop(&timer_);
  // The poll handle first: its descriptor is a dup of the stream's, closed in its close callback.
  if (file_poll_ != nullptr)
    uv.uv_close(reinterpret_cast<uv_handle_t*>(&file_poll_->handle), &Transport::on_handle_closed);
  uv.uv_close(&io_.handle, &Transport::on_handle_closed);
  uv.uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Transport::on_handle_closed);
}

void Transport::on_handle_closed(uv_handle_t* h) {
  auto* t = static_cast<Transport*>(h->data);
  live_handles_add(-1);
  if (t->file_poll_ != nullptr && h == reinterpret_cast<uv_handle_t*>(&t->file_poll_->handle)) {
    ::close(t->file_poll_->fd);
    t->file_poll_->fd = -1;
  }
  if (--t->open_handles_ > 0) return;
  t->listener_->on_transport_closed();  // may delete the transport
}

}  // namespace fa
