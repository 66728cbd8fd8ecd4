// Connection, part 4: TLS. The read side decrypts what the socket delivered and hands the plaintext to the same
// parsing path as a plain connection (take_input); the write side encrypts what flush() would have sent and hands
// the ciphertext to the same try-write-then-queue path (write_raw). The TLS state itself is core/tls_session.h.
#include "server/connection.h"

#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

bool Connection::tls_read(const char* data, std::size_t len) {
  if (!tls_->handshake_done() && !reading_head_) {
    // The handshake has begun: it is bounded like a request head (a client that stalls mid-handshake).
    idle_ = false;
    reading_head_ = true;
    head_started_ms_ = server_->loop()->time;
    arm_timer(head_started_ms_ + server_->config().tls_handshake_timeout_ms);
  }
  tls_->feed(data, len);
  char* plain = server_->tls_input_buffer();
  // Everything fed is decrypted now, also while parsing is paused (the plaintext then waits in in_, bounded by one
  // socket read): ciphertext left in the BIO would not be looked at again until the socket had more.
  while (!closing_) {
    const bool was_done = tls_->handshake_done();
    const int n = tls_->read(plain, Server::kTlsBufferSize);
    if (!was_done && tls_->handshake_done()) tls_handshake_done();
    if (n > 0) {
      take_input(plain, static_cast<std::size_t>(n));
      continue;
    }
    if (n == TlsSession::kWantMore) return true;
    in_read_ = false;
    if (n == TlsSession::kClosed) {  // close_notify: the peer is done sending
      handle_eof();
      return false;
    }
    if (!tls_->handshake_done()) {
      server_->counters().tls_handshake_failures++;
      server_->handler()->on_tls_error(*this, tls_->failure().c_str());
      // The alert OpenSSL queued for the peer (e.g. unknown CA) is sent, then the connection closes.
      close_when_flushed();
    } else {
      server_->handler()->on_tls_error(*this, tls_->failure().c_str());
      close();
    }
    return false;
  }
  return true;
}

void Connection::tls_handshake_done() {
  // From here the connection waits for its first request like any idle keep-alive connection.
  reading_head_ = false;
  arm_keep_alive();
  if (server_->config().http2.enabled && tls_->alpn() == "h2") start_h2();
}

void Connection::flush_tls(const char* extra, std::size_t extra_len) {
  StageScope write_stage(kStageWrite);
  if ((!out_.empty() && !tls_->write(out_.data(), out_.size())) ||
      (extra_len > 0 && !tls_->write(extra, extra_len))) {
    out_.clear();
    server_->handler()->on_tls_error(*this, tls_->failure().c_str());
    close();
    return;
  }
  out_.clear();
  if (close_after_flush_ && !h2_has_more()) tls_->shutdown();  // close_notify before the stream closes
  // The ciphertext leaves through the server's TLS output buffer in steps (a large body is several steps); never
  // through the input buffer, which may hold plaintext still being parsed (flushes run inside parser callbacks).
  char* buf = server_->tls_output_buffer();
  while (tls_->pending_output() > 0) {
    const std::size_t n = tls_->take_output(buf, Server::kTlsBufferSize);
    if (n == 0 || !write_raw(buf, n, nullptr, 0)) return;
  }
  if (close_after_flush_ && pending_writes_ == 0 && !h2_has_more()) close();
}

}  // namespace fa
