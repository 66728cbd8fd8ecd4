// H2Session, the connection's side: plaintext in, frames out as fast as the socket takes them, the batches of
// requests taken up per loop turn, and the time bounds of an HTTP/2 connection. The protocol itself (nghttp2's
// callbacks, the streams) is h2_session.cc and h2_stream.cc.
#include "core/uv_api.h"
#include "server/connection.h"
#include "server/h2_session.h"
#include "server/server.h"
#include "server/transport.h"

namespace fa {

void H2Session::receive(char* data, std::size_t len) {
  if (!take_input(data, len)) conn_.close_when_flushed();
  else if (has_pending_input()) transport_.stop_reading();  // the rest of this batch's turn waits (one read)
}

void H2Session::read_end() {
  if (!transport_.closing() && has_pending_input()) schedule_resume();
}

void H2Session::output_progress(bool drained) {
  if (drained && !transport_.closing()) flush();  // more frames, as far as the socket takes them
}

void H2Session::flush() {
  if (transport_.closing()) {
    transport_.flush();
    return;
  }
  // Inside nghttp2 (a callback that ended up here): the outer flush goes on when nghttp2 returns.
  if (in_nghttp2()) return;
  if (!write_frames()) return;
  // This batch's responses went out as far as the socket took them: the next batch of requests may begin. What
  // taking it up queues at once (native responses, apps that answered inside their first step, WINDOW_UPDATE, a
  // GOAWAY) is written now: this may be the last flush of the loop turn, and nothing else would wake the loop for
  // it.
  if (!transport_.closing() && !transport_.in_read_callback() && has_pending_input()) {
    resume_batch();
    write_frames();
  }
}

bool H2Session::write_frames() {
  // Frames are made only as fast as the socket takes them: past the high-water mark nghttp2 keeps the streams'
  // data (and the streams their bodies: backpressure), and output_progress() comes back here when the queue drains.
  const std::size_t high = conn_.server()->config().write_high_water;
  for (;;) {
    if (transport_.closing()) return false;
    const std::size_t queued = transport_.socket_queue_bytes();
    if (queued >= high) return false;
    std::string& out = transport_.out();
    const std::size_t before = out.size();
    const bool alive = produce(out, before + (high - queued));
    if (!alive && !transport_.closing_when_flushed()) transport_.close_after_next_flush();
    const bool produced = out.size() > before;
    transport_.flush();
    if (!produced || !alive) return !transport_.closing();
  }
}

void H2Session::resume_batch() {
  if (!resume_input()) {
    conn_.close_when_flushed();
    return;
  }
  if (has_pending_input()) {
    schedule_resume();
  } else if (!transport_.closing_when_flushed()) {
    transport_.start_reading();
  }
}

void H2Session::schedule_resume() {
  transport_.stop_reading();
  transport_.flush_at_turn_end();  // flush() at the end of the next loop turn, which resumes the input
  // A due timer keeps the loop from blocking in poll while nothing else is pending (apps that answered at once).
  transport_.arm_timer(uv.uv_now(conn_.server()->loop()));
}

void H2Session::became_idle() {
  if (transport_.closing()) return;
  if (shutting_down_ || conn_.server()->shutting_down()) {
    // Called from inside nghttp2 (a stream closing): the close happens when the flush after it has nothing more
    // to send, never from here.
    transport_.close_after_next_flush();
    want_write();
    return;
  }
  keep_alive_idle_ = true;
  idle_since_ms_ = uv.uv_now(conn_.server()->loop());
  transport_.arm_timer(idle_since_ms_ + conn_.server()->config().keep_alive_ms);
}

std::uint64_t H2Session::check_timeouts(std::uint64_t now) {
  const ServerConfig& cfg = conn_.server()->config();
  std::uint64_t next_due = UINT64_MAX;
  // Responses the peer's flow-control window holds back: a client that never opens its window (zero-window stall)
  // keeps nothing here longer than the send bound.
  if (cfg.send_timeout_ms > 0 && output_waiting() &&
      deadline_passed(now, last_progress_ms_, cfg.send_timeout_ms, &next_due)) {
    conn_.log_timeout("send timeout: the HTTP/2 client does not take its responses");
    conn_.close();
    return UINT64_MAX;
  }
  // Each stream's request body has the HTTP/1.1 body bound; a stalled stream is reset, not the connection.
  if (cfg.body_timeout_ms > 0) {
    next_due = std::min(next_due, expire_stalled_bodies(now, cfg.body_timeout_ms));
    if (transport_.closing()) return UINT64_MAX;
  }
  if (keep_alive_idle_ && !has_active() &&
      deadline_passed(now, idle_since_ms_, cfg.keep_alive_ms, &next_due)) {
    shutdown();  // an idle HTTP/2 connection says GOAWAY before it closes
    conn_.close_when_flushed();
    return UINT64_MAX;
  }
  return next_due;
}

void H2Session::close_when_idle() {
  shutdown();
  if (idle()) conn_.close_when_flushed();
  else transport_.cork();
}

}  // namespace fa
