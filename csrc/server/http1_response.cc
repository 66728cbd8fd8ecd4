// Http1Session, part 2: the response to the current request (the server's wire format), files as bodies, the
// end of a response (keep-alive or close) and write backpressure. The bytes leave through the Transport.
#include <unistd.h>

#include "server/connection.h"
#include "server/http1_session.h"
#include "server/server.h"
#include "server/transport.h"

namespace fa {

// ---------------------------------------------------------------------------------------------------------------
// The response
// ---------------------------------------------------------------------------------------------------------------

const char* Http1Session::start_response(int status, const std::string_view* names,
                                         const std::string_view* values, std::size_t count) {
  return response_.write_head(transport_.out(), status, names, values, count, server_->config().defaults,
                              server_->date());
}

const char* Http1Session::write_body(const char* data, std::size_t len, bool more) {
  std::string& out = transport_.out();
  bool emit = false;
  std::string_view suffix;
  if (const char* err = response_.frame_body(out, len, more, &emit, &suffix)) {
    // As uvicorn: the head already "went out"; the stream is unusable now. It closes when the app's failure
    // (the error raised in its send) reaches the server.
    response_.set_keep_alive(false);
    transport_.flush();
    return err;
  }
  if (emit && len >= kZeroCopyThreshold && suffix.empty()) {
    transport_.flush(data, len);
  } else {
    if (emit) out.append(data, len);
    out.append(suffix);
  }
  // NOTE: a streamed chunk is corked to the end of the loop turn: a 16-chunk 64 KB StreamingResponse leaves in one
  // write instead of sixteen (uvloop corks its own transports the same way); the last one leaves with
  // finish_response().
  if (more) transport_.cork();
  return nullptr;
}

void Http1Session::answer_error(int status, std::string_view body, std::string_view extra_headers,
                                bool server_headers) {
  const ResponseDefaults& defaults = server_->config().defaults;
  ResponseDefaults date_only;
  date_only.date_header = defaults.date_header;
  write_error_response(transport_.out(), status, body, extra_headers, response_.head_request(),
                       server_headers ? defaults : date_only, server_->date());
  response_.set_answered(status);
}

void Http1Session::write_response(int status, std::string_view headers, std::string_view body, bool with_length) {
  char scratch[64];
  std::string_view line = status_line(status, scratch);
  if (line.empty()) line = status_line(500, scratch);
  std::string& out = transport_.out();
  out.append(line);
  append_default_headers(out, server_->config().defaults, server_->date());
  out.append(headers);
  if (with_length) {
    out.append("content-length: ");
    append_decimal(out, body.size());
    out.append("\r\n");
  }
  if (!response_.keep_alive()) out.append("connection: close\r\n");
  else if (response_.http10()) out.append("connection: keep-alive\r\n");
  out.append("\r\n");
  if (!response_.head_request()) out.append(body);
}

const char* Http1Session::send_file(int fd, std::uint64_t size, std::uint64_t offset) {
  if (transport_.closing() || transport_.sending_file()) {
    ::close(fd);
    return "the connection cannot send a file now";
  }
  bool emit = false;
  std::string_view suffix;
  if (const char* err = response_.frame_body(transport_.out(), static_cast<std::size_t>(size), false, &emit,
                                             &suffix)) {
    ::close(fd);
    response_.set_keep_alive(false);
    transport_.flush();
    return err;
  }
  transport_.send_file(fd, offset, emit ? size : 0, std::string(suffix));
  return nullptr;
}

bool Http1Session::sending_file() const { return transport_.sending_file(); }

// ---------------------------------------------------------------------------------------------------------------
// Backpressure and the end of a response
// ---------------------------------------------------------------------------------------------------------------

std::size_t Http1Session::write_queue_bytes() const { return transport_.write_queue_bytes(); }

bool Http1Session::want_drain() {
  // Bytes still buffered (a send() inside a read callback, where flushing waits for the callback's end) would be
  // written synchronously by that flush with no on_write to follow, and the waiting send() would never be woken:
  // output_backed_up() lets libuv take what it can now; only what it queues is waited for.
  if (!transport_.output_backed_up()) return false;
  drain_wanted_ = true;
  return true;
}

void Http1Session::send_continue() {
  if (!continue_pending_) return;
  continue_pending_ = false;
  if (response_.started()) return;
  transport_.out().append("HTTP/1.1 100 Continue\r\n\r\n");
  transport_.flush();
}

void Http1Session::finish_response() {
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
    transport_.close_when_flushed();
    return;
  }
  // If the app answered before reading the whole body, the rest is read and dropped (in_flight_ is false now),
  // so the connection can still be reused.
  if (!transport_.in_read()) transport_.flush();
  if (transport_.closing()) return;
  if (!parser_.message_in_progress()) arm_keep_alive();
  // Inside the parser (an app that answered synchronously, e.g. under an eager task factory) parsing simply goes
  // on when the callback returns; resuming here would re-enter llhttp. A client that does not read its responses
  // gets no further request taken up until they drain (bounded memory per connection).
  if (!parsing_ && (held_.paused() || !transport_.reading()) && !block_on_output()) resume();
}

bool Http1Session::block_on_output() {
  if (!transport_.output_backed_up()) return false;
  output_blocked_ = true;
  transport_.stop_reading();
  return true;
}

void Http1Session::notify_drained() {
  if (!drain_wanted_) return;
  drain_wanted_ = false;
  server_->handler()->on_drain(*this);
}

void Http1Session::output_progress(bool drained) {
  if (!drained) return;
  notify_drained();
  if (output_blocked_ && !transport_.closing()) {
    output_blocked_ = false;
    resume();
  }
}

}  // namespace fa
