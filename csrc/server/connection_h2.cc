// Connection, part 5: HTTP/2. Deciding that a connection speaks it (ALPN "h2" after the TLS handshake, or the
// client's connection preface on a plain port: h2c by prior knowledge), then handing its plaintext to the
// H2Session and taking frames from it when the connection flushes. The protocol itself is h2_session.cc.
#include "server/connection.h"

#include <algorithm>
#include <cstring>

#include "core/uv_api.h"
#include "server/h2_session.h"
#include "server/server.h"

namespace fa {

namespace {

// RFC 9113 3.4: every HTTP/2 connection begins with these 24 bytes from the client.
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

bool Connection::start_h2() {
  h2_ = std::make_unique<H2Session>(*this);
  if (!h2_->ok()) {
    h2_.reset();
    close();
    return false;
  }
  sniff_h2_ = false;
  return true;
}

// Plain connections with --http2: the first bytes decide. Returns true when it took the bytes (buffered while they
// are still a prefix of the preface, or handed to the new H2Session); false when they are HTTP/1.x, to be parsed.
bool Connection::h2_sniff(const char* data, std::size_t len) {
  const std::size_t have = in_.size();
  const std::size_t n = std::min(len, kPreface.size() - have);
  if (std::memcmp(data, kPreface.data() + have, n) != 0) {
    sniff_h2_ = false;  // HTTP/1.x; bytes held back in in_ are its beginning (take_input parses them first)
    return false;
  }
  if (have + n < kPreface.size()) {
    in_.append(data, len);  // a prefix of the preface: wait for the rest
    return true;
  }
  if (!start_h2()) return true;
  std::string held;
  held.swap(in_);
  held.append(data, len);
  if (!h2_->receive(held.data(), held.size())) close_when_flushed();
  return true;
}

void Connection::h2_idle() {
  if (closing_) return;
  if (close_after_response_ || server_->shutting_down()) {
    // Called from inside nghttp2 (a stream closing): the close happens when the flush after it has nothing more
    // to send, never from here.
    close_after_flush_ = true;
    stop_reading();
    flush_soon();
    return;
  }
  arm_keep_alive();
}

bool Connection::h2_wants_write() const { return h2_->wants_write(); }

void Connection::flush_soon() {
  if (closing_ || corked_ || in_read_) return;  // a read callback flushes at its end
  corked_ = true;
  server_->cork(this);
}

void Connection::h2_busy() { idle_ = false; }

}  // namespace fa

namespace fa {

void Connection::flush_h2() {
  // Inside nghttp2 (a callback that ended up here): the outer flush goes on when nghttp2 returns.
  if (h2_->in_nghttp2()) return;
  if (!write_h2_frames()) return;
  // This batch's responses went out as far as the socket took them: the next batch of requests may begin. What
  // taking it up queues at once (native responses, apps that answered inside their first step, WINDOW_UPDATE, a
  // GOAWAY) is written now: this may be the last flush of the loop turn, and nothing else would wake the loop for
  // it.
  if (!closing_ && !in_read_callback_ && h2_->has_pending_input()) {
    h2_resume_input();
    write_h2_frames();
  }
}

bool Connection::write_h2_frames() {
  // Frames are made only as fast as the socket takes them: past the high-water mark nghttp2 keeps the streams'
  // data (and the streams their bodies: backpressure), and on_write comes back here when the queue drains.
  const std::size_t high = server_->config().write_high_water;
  for (;;) {
    if (closing_) return false;
    const std::size_t queued = io_.stream.write_queue_size;
    if (queued >= high) return false;
    const std::size_t before = out_.size();
    const bool alive = h2_->produce(out_, before + (high - queued));
    if (!alive && !close_after_flush_) {
      close_after_flush_ = true;
      stop_reading();
    }
    const bool produced = out_.size() > before;
    flush_out(nullptr, 0);
    if (!produced || !alive) return !closing_;
  }
}

void Connection::h2_resume_input() {
  if (!h2_->resume_input()) {
    close_when_flushed();
    return;
  }
  if (h2_->has_pending_input()) {
    h2_schedule_resume();
  } else if (!close_after_flush_) {
    start_reading();
  }
}

void Connection::h2_schedule_resume() {
  stop_reading();
  if (!corked_) {
    corked_ = true;
    server_->cork(this);  // flush_h2() at the end of the next loop turn, which resumes the input
  }
  // A due timer keeps the loop from blocking in poll while nothing else is pending (apps that answered at once).
  arm_timer(uv.uv_now(server_->loop()));
}

}  // namespace fa
