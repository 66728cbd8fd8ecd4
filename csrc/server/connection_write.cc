// Connection, part 2: the response to the current request (the server's wire format), output corking, writes
// and write backpressure.
#include "server/connection.h"

#include <cstdlib>
#include <cstring>

#include "core/uv_api.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

namespace {

// A write libuv could not take at once: the unsent bytes, copied, freed in on_write.
struct WriteReq {
  uv_write_t req;
  std::size_t len;
  char data[1];
};

}  // namespace

// ---------------------------------------------------------------------------------------------------------------
// The response
// ---------------------------------------------------------------------------------------------------------------

const char* Connection::start_response(int status, const std::string_view* names, const std::string_view* values,
                                       std::size_t count) {
  return response_.write_head(out_, status, names, values, count, server_->config().defaults, server_->date());
}

const char* Connection::write_body(const char* data, std::size_t len, bool more) {
  bool emit = false;
  std::string_view suffix;
  if (const char* err = response_.frame_body(out_, len, more, &emit, &suffix)) {
    // As uvicorn: the head already "went out"; the stream is unusable now. It closes when the app's failure
    // (the error raised in its send) reaches the server.
    response_.set_keep_alive(false);
    flush();
    return err;
  }
  if (emit && len >= kZeroCopyThreshold && suffix.empty()) {
    flush(data, len);
  } else {
    if (emit) out_.append(data, len);
    out_.append(suffix);
  }
  // NOTE: a streamed chunk is corked to the end of the loop turn: a 16-chunk 64 KB StreamingResponse leaves in one
  // write instead of sixteen (uvloop corks its own transports the same way); the last one leaves with
  // finish_response().
  if (more) cork();
  return nullptr;
}

void Connection::answer_error(int status, std::string_view body, std::string_view extra_headers,
                              bool server_headers) {
  const ResponseDefaults& defaults = server_->config().defaults;
  ResponseDefaults date_only;
  date_only.date_header = defaults.date_header;
  write_error_response(out_, status, body, extra_headers, response_.head_request(),
                       server_headers ? defaults : date_only, server_->date());
  response_.set_answered(status);
}

void Connection::write_response(int status, std::string_view headers, std::string_view body, bool with_length) {
  char scratch[64];
  std::string_view line = status_line(status, scratch);
  if (line.empty()) line = status_line(500, scratch);
  out_.append(line);
  append_default_headers(out_, server_->config().defaults, server_->date());
  out_.append(headers);
  if (with_length) {
    out_.append("content-length: ");
    append_decimal(out_, body.size());
    out_.append("\r\n");
  }
  if (!response_.keep_alive()) out_.append("connection: close\r\n");
  else if (response_.http10()) out_.append("connection: keep-alive\r\n");
  out_.append("\r\n");
  if (!response_.head_request()) out_.append(body);
}
// ---------------------------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------------------------

void Connection::flush(const char* extra, std::size_t extra_len) {
  if (h2_ != nullptr && !closing_) {
    flush_h2();  // `extra` is HTTP/1.1's (a body by reference): never given on an HTTP/2 connection
    return;
  }
  flush_out(extra, extra_len);
}

void Connection::flush_out(const char* extra, std::size_t extra_len) {
  if (closing_) {
    out_.clear();
    return;
  }
  if (tls_ != nullptr) {
    flush_tls(extra, extra_len);
    return;
  }
  const std::size_t total = out_.size() + extra_len;
  if (total == 0) {
    if (close_after_flush_ && pending_writes_ == 0 && !h2_has_more()) close();
    return;
  }
  StageScope write_stage(kStageWrite);
  if (!write_raw(out_.data(), out_.size(), extra, extra_len)) return;
  out_.clear();
  if (close_after_flush_ && pending_writes_ == 0 && !h2_has_more()) close();
}

bool Connection::write_raw(const char* a, std::size_t a_len, const char* b, std::size_t b_len) {
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
    if (uv.uv_write(&w->req, &io_.stream, &buf, 1, &Connection::on_write) != 0) {
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

void Connection::cork() {
  if (closing_) return;
  // Cork only while nothing is in flight and little is buffered: the backpressure check (want_drain) looks at
  // libuv's write queue, whose drain is what wakes a waiting send().
  if (pending_writes_ > 0 || out_.size() >= kCorkMaxBytes) {
    if (!in_read_) flush();
    return;
  }
  if (!corked_ && !in_read_) {
    corked_ = true;
    server_->cork(this);
  }
}

void Connection::on_write(uv_write_t* req, int status) {
  auto* w = reinterpret_cast<WriteReq*>(req);
  Connection* c = static_cast<Connection*>(req->data);
  c->pending_writes_--;
  if (status == 0) c->server_->counters().bytes_out += w->len;
  std::free(w);
  if (c->closing_) return;
  CallbackScope scope(c->server_->handler());
  if (status < 0) {
    c->close();
    return;
  }
  c->last_write_ms_ = uv.uv_now(c->server_->loop());
  const bool drained = c->write_queue_bytes() <= c->server_->config().write_low_water;
  if (c->drain_wanted_ && drained) {
    c->drain_wanted_ = false;
    c->server_->handler()->on_drain(*c);
  }
  // A file waiting for the queue: empty for sendfile (nothing may overtake it), drained for the TLS reader.
  if (c->file_ != nullptr && c->file_->waiting && !c->closing_ &&
      (c->tls_ != nullptr ? drained : c->pending_writes_ == 0)) {
    c->file_pump();
    if (c->closing_) return;
  }
  if (c->output_blocked_ && drained && !c->closing_) {
    c->output_blocked_ = false;
    c->resume();
  }
  if (c->h2_ != nullptr && drained && !c->closing_) c->flush();  // more frames, as far as the socket takes them
  if (c->close_after_flush_ && c->pending_writes_ == 0 && c->out_.empty() && !c->closing_ && !c->h2_has_more())
    c->close();
}

std::size_t Connection::write_queue_bytes() const {
  return io_.stream.write_queue_size + out_.size();  // a public field of uv_stream_t
}

bool Connection::want_drain() {
  const std::size_t high = server_->config().write_high_water;
  if (write_queue_bytes() <= high) return false;
  // Bytes still in out_ (a send() inside a read callback, where flushing waits for the callback's end) would be
  // written synchronously by that flush with no on_write to follow, and the waiting send() would never be woken:
  // let libuv take what it can now, as block_on_output() does; only what it queues is waited for.
  if (!out_.empty()) flush();
  if (closing_ || write_queue_bytes() <= high) return false;
  drain_wanted_ = true;
  return true;
}

void Connection::send_continue() {
  if (!continue_pending_) return;
  continue_pending_ = false;
  if (response_.started()) return;
  out_.append("HTTP/1.1 100 Continue\r\n\r\n");
  flush();
}

void Connection::finish_response() {
  if (!in_flight_) return;
  in_flight_ = false;
  // The app answered without asking for the body of an `Expect: 100-continue` request: the client may or may not
  // send that body now, so the stream position is unknowable and the connection cannot be reused.
  if (continue_pending_ && parser_.message_in_progress()) close_after_response_ = true;
  continue_pending_ = false;
  server_->active_requests_--;
  server_->counters().requests++;
  if (response_.status() >= 500) server_->counters().responses_5xx++;
  if (!response_.keep_alive() || close_after_response_ || server_->shutting_down()) {
    close_after_response_ = true;
    // A request whose body was not read completely leaves the stream mid-message: it cannot be reused either.
    close_when_flushed();
    return;
  }
  // If the app answered before reading the whole body, the rest is read and dropped (in_flight_ is false now),
  // so the connection can still be reused.
  if (!in_read_) flush();
  if (closing_) return;
  if (!parser_.message_in_progress()) arm_keep_alive();
  // Inside the parser (an app that answered synchronously, e.g. under an eager task factory) parsing simply goes
  // on when the callback returns; resuming here would re-enter llhttp. A client that does not read its responses
  // gets no further request taken up until they drain (bounded memory per connection).
  if (!parsing_ && (paused_ || !reading_) && !block_on_output()) resume();
}

bool Connection::block_on_output() {
  const std::size_t high = server_->config().write_high_water;
  if (write_queue_bytes() <= high) return false;
  if (!out_.empty()) flush();  // let libuv take what it can now; what it cannot is what counts
  if (closing_ || write_queue_bytes() <= high) return false;
  output_blocked_ = true;
  stop_reading();
  return true;
}
}  // namespace fa
