// H2Session: nghttp2 driven by the connection's bytes; requests onto H2Streams, handed to native routes or the app.
// The response side of a stream is in h2_stream.cc.
#include "server/h2_session.h"

#include <llhttp.h>
#include <unistd.h>

#include <algorithm>

#include "core/uv_api.h"
#include "server/connection.h"
#include "server/server.h"
#include "server/transport.h"

namespace fa {

namespace {

H2Stream* stream_of(nghttp2_session* s, std::int32_t id) {
  return static_cast<H2Stream*>(nghttp2_session_get_stream_user_data(s, id));
}


}  // namespace

H2Session::H2Session(Connection& conn) : conn_(conn), transport_(conn.transport()) {
  idle_since_ms_ = uv.uv_now(conn.server()->loop());
  const Http2Config& cfg = conn.server()->config().http2;
  nghttp2_session_callbacks* cbs = nullptr;
  if (nghttp2_session_callbacks_new(&cbs) != 0) return;
  nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, &H2Session::on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cbs, &H2Session::on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, &H2Session::on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, &H2Session::on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cbs, &H2Session::on_stream_close);
  nghttp2_option* opt = nullptr;
  if (nghttp2_option_new(&opt) != 0) {
    nghttp2_session_callbacks_del(cbs);
    return;
  }
  // Request bodies are acknowledged (WINDOW_UPDATE) only once the app has taken them: a stream's window is what
  // bounds its buffered body, and a slow reader slows its sender.
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // The attack bounds nghttp2 offers, set explicitly (these are its current defaults): CONTINUATION flood
  // (CVE-2024-28182), rapid reset (CVE-2023-44487: 1000 burst, 33/s), SETTINGS flood, control-frame ACK flood.
  nghttp2_option_set_max_continuations(opt, 8);
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  nghttp2_option_set_max_settings(opt, 32);
  nghttp2_option_set_max_outbound_ack(opt, 1000);
  const int rv = nghttp2_session_server_new2(&session_, cbs, this, opt);
  nghttp2_option_del(opt);
  nghttp2_session_callbacks_del(cbs);
  if (rv != 0) {
    session_ = nullptr;
    return;
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, cfg.initial_stream_window},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, cfg.max_header_list_size},
  };
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, sizeof settings / sizeof settings[0]);
  if (cfg.connection_window > NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
    nghttp2_session_set_local_window_size(session_, NGHTTP2_FLAG_NONE, 0,
                                          static_cast<std::int32_t>(cfg.connection_window));
}

H2Session::~H2Session() {
  connection_lost();
  if (session_ != nullptr) nghttp2_session_del(session_);
}

bool H2Session::take_input(const char* data, std::size_t len) {
  if (failed_ || recv_failed_ || session_ == nullptr) return false;
  if (has_pending_input()) {
    pending_.append(data, len);  // behind the bytes already waiting (reading stops; this was a read in flight)
    return true;
  }
  requests_this_turn_ = 0;
  return feed(data, len);
}

bool H2Session::resume_input() {
  if (!has_pending_input()) return true;
  if (failed_ || recv_failed_ || session_ == nullptr) return false;
  requests_this_turn_ = 0;
  std::string rest;
  rest.swap(pending_);
  const bool ok = feed(rest.data(), rest.size());
  if (pending_.empty()) {
    rest.clear();
    pending_.swap(rest);  // keep the capacity for the next batch
  }
  return ok;
}

bool H2Session::feed(const char* data, std::size_t len) {
  in_nghttp2_ = true;
  const nghttp2_ssize n = nghttp2_session_mem_recv2(session_, reinterpret_cast<const std::uint8_t*>(data), len);
  in_nghttp2_ = false;
  if (n >= 0 && static_cast<std::size_t>(n) < len) {
    // on_header paused: this turn's batch of requests is full. The rest waits for resume_input().
    pending_.append(data + n, len - static_cast<std::size_t>(n));
    return true;
  }
  if (n < 0) {
    // A fatal error (a flood nghttp2 detected, too many CONTINUATIONs, memory): the GOAWAY nghttp2 may have queued
    // still goes out (produce), then the connection closes.
    recv_failed_ = true;
    return false;
  }
  return true;
}

bool H2Session::produce(std::string& out, std::size_t budget) {
  if (session_ == nullptr) return false;
  const std::size_t before = out.size();
  while (out.size() < budget) {
    const std::uint8_t* data = nullptr;
    in_nghttp2_ = true;
    const nghttp2_ssize n = nghttp2_session_mem_send2(session_, &data);
    in_nghttp2_ = false;
    if (n < 0) {
      failed_ = true;
      return false;
    }
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(data), static_cast<std::size_t>(n));
  }
  // The send bound: progress is a frame going out while some response waits to send more.
  const std::uint64_t now = uv.uv_now(conn_.server()->loop());
  const bool waiting = output_waiting();
  if (out.size() > before || (waiting && !was_waiting_)) last_progress_ms_ = now;
  was_waiting_ = waiting;
  const std::uint64_t send_timeout = conn_.server()->config().send_timeout_ms;
  if (waiting && send_timeout > 0) transport_.arm_timer(last_progress_ms_ + send_timeout);
  // Events for the app, after nghttp2 is done (its callbacks never call into the app's response path).
  while (!file_sent_.empty()) {
    H2Stream* st = file_sent_.back();
    file_sent_.pop_back();
    notify_file_sent(st);
  }
  if (!drain_waiters_.empty()) {
    const std::size_t low = conn_.server()->config().write_low_water;
    std::vector<H2Stream*> asked;
    asked.swap(drain_waiters_);
    for (H2Stream* st : asked) {
      if (st->body_.buffered() <= low || st->closing()) {
        st->drain_wanted_ = false;
        conn_.server()->handler()->on_drain(*st);
      } else {
        drain_waiters_.push_back(st);
      }
    }
  }
  return !failed_ && !recv_failed_ &&
         (nghttp2_session_want_read(session_) != 0 || nghttp2_session_want_write(session_) != 0);
}

void H2Session::want_write() {
  if (!transport_.in_read()) transport_.flush_at_turn_end();  // a read callback flushes at its end
}

bool H2Session::wants_write() const {
  return session_ != nullptr && !failed_ && nghttp2_session_want_write(session_) != 0;
}

bool H2Session::has_active() const {
  if (has_pending_input()) return true;
  for (const H2Stream* st = streams_; st != nullptr; st = st->next_)
    if (st->in_flight_ || (st->submitted_ && !st->body_.framed() && !st->closed_ && !st->reset_)) return true;
  return false;
}

bool H2Session::output_waiting() const {
  for (const H2Stream* st = streams_; st != nullptr; st = st->next_)
    if (st->submitted_ && !st->closed_ && !st->reset_ && (st->body_.buffered() > 0 || st->body_.has_file())) return true;
  return false;
}

void H2Session::request_done() {
  if (!has_active()) became_idle();
}

void H2Session::shutdown() {
  if (shutting_down_ || session_ == nullptr) return;
  shutting_down_ = true;
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(session_),
                        NGHTTP2_NO_ERROR, nullptr, 0);
}

void H2Session::connection_lost() {
  while (streams_ != nullptr) {
    H2Stream* st = streams_;
    st->closed_ = true;
    if (st->in_flight_) {
      st->in_flight_ = false;
      conn_.server()->active_requests_--;
    }
    if (st->exchange != nullptr) conn_.server()->handler()->on_disconnect(*st);
    drop(st);
  }
}

void H2Session::notify_file_sent(H2Stream* st) {
  if (st->app_request_) conn_.server()->handler()->on_file_sent(*st);  // native file routes are done already
}

void H2Session::release_native_body(H2Stream* st) {
  st->native_.end();  // no longer an upload the budget waits for (oldest_native_upload())
  native_body_bytes_ -= st->native_.body.size();
  std::string().swap(st->native_.body);
  if (st->window_held_) {
    st->window_held_ = false;
    st->unconsumed_ = 0;  // no more of this body is wanted: nghttp2 keeps no window for a closed stream either
  }
  if (session_ == nullptr) return;
  H2Stream* oldest = native_body_bytes_ <= kNativeBodyBudget ? nullptr : oldest_native_upload();
  for (H2Stream* held = streams_; held != nullptr; held = held->next_) {
    if (!held->window_held_ || (oldest != nullptr && held != oldest)) continue;
    held->window_held_ = false;
    if (!held->closed_) nghttp2_session_consume_stream(session_, held->id_, held->unconsumed_);
    held->unconsumed_ = 0;
    watch_body(held);  // its bound starts again with the window open
    want_write();
  }
}

H2Stream* H2Session::oldest_native_upload() const {
  H2Stream* oldest = nullptr;
  for (H2Stream* st = streams_; st != nullptr; st = st->next_)
    if (st->native_.route != nullptr && !st->body_complete_ && !st->reset_ && !st->closed_ &&
        (oldest == nullptr || st->id_ < oldest->id_))
      oldest = st;
  return oldest;
}

void H2Session::drop(H2Stream* st) {
  release_native_body(st);
  const auto pending = std::find(file_sent_.begin(), file_sent_.end(), st);
  if (pending != file_sent_.end()) {
    file_sent_.erase(pending);
    notify_file_sent(st);  // its file went out completely: the response is complete
  }
  if (st->prev_ != nullptr) st->prev_->next_ = st->next_;
  else streams_ = st->next_;
  if (st->next_ != nullptr) st->next_->prev_ = st->prev_;
  --stream_count_;
  drain_waiters_.erase(std::remove(drain_waiters_.begin(), drain_waiters_.end(), st), drain_waiters_.end());
  if (session_ != nullptr) nghttp2_session_set_stream_user_data(session_, st->id_, nullptr);
  delete st;
  if (streams_ == nullptr) became_idle();
  else request_done();
}

// ---------------------------------------------------------------------------------------------------------------
// nghttp2 callbacks (inside take_input() or produce(); none of them may throw)
// ---------------------------------------------------------------------------------------------------------------

int H2Session::on_begin_headers(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  // nghttp2 refuses streams beyond SETTINGS_MAX_CONCURRENT_STREAMS before this is called; streams reset while
  // their app runs are bounded by too_many_cancels().
  H2Stream* st;
  try {
    st = new H2Stream(self, frame->hd.stream_id);
  } catch (...) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  st->next_ = self->streams_;
  if (self->streams_ != nullptr) self->streams_->prev_ = st;
  self->streams_ = st;
  ++self->stream_count_;
  nghttp2_session_set_stream_user_data(s, frame->hd.stream_id, st);
  return 0;
}

int H2Session::on_header(nghttp2_session* s, const nghttp2_frame* frame, const std::uint8_t* name,
                         std::size_t namelen, const std::uint8_t* value, std::size_t valuelen, std::uint8_t,
                         void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers
  H2Stream* st = stream_of(s, frame->hd.stream_id);
  if (st == nullptr) return 0;
  // This turn's batch of requests is full: this field is taken (below), then nghttp2 stops until resume_input().
  const bool first_field = st->header_block_.empty();
  const int done = first_field && ++self->requests_this_turn_ > kRequestsPerTurn ? NGHTTP2_ERR_PAUSE : 0;
  const ServerConfig& cfg = self->conn_.server()->config();
  try {
    st->header_block_.take(std::string_view(reinterpret_cast<const char*>(name), namelen),
                           std::string_view(reinterpret_cast<const char*>(value), valuelen), st->request_,
                           cfg.http2.max_header_list_size, cfg.limits.max_headers);
  } catch (...) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return done;
}

int H2Session::on_frame_recv(nghttp2_session* s, const nghttp2_frame* frame, void* user) {
  auto* self = static_cast<H2Session*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) return 0;
  H2Stream* st = stream_of(s, frame->hd.stream_id);
  if (st == nullptr) return 0;
  const bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  try {
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
      st->request_.has_body = !end;
      self->request_ready(st);
    }
    // The request's last frame: END_STREAM on its HEADERS, on a DATA frame or on trailers (which are dropped, as
    // uvicorn drops HTTP/1.1 trailers).
    if (end && stream_of(s, frame->hd.stream_id) == st) self->request_complete(st);
  } catch (...) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

void H2Session::request_ready(H2Stream* st) {
  Server& server = *conn_.server();
  RequestHead& h = st->request_;
  h.http_major = 2;
  h.http_minor = 0;
  h.keep_alive = true;
  st->header_block_.finish(h);
  h.expect_continue = h.has_body && ascii_iequals(h.header("expect"), "100-continue");
  if (h.has_body) watch_body(st);
  st->head_request_ = h.method == HTTP_HEAD;
  st->request_start_ns_ = monotonic_ns();
  keep_alive_idle_ = false;
  AppHandler* handler = server.handler();
  if (st->header_block_.bad() || st->header_block_.too_large() || h.method == HTTP_CONNECT) {
    const int status = st->header_block_.too_large() ? 431 : h.method == HTTP_CONNECT ? 405 : 400;
    const char* reason = status == 431 ? "header list too large" : status == 405 ? "CONNECT is not served"
                                                                                 : "unknown method";
    server.counters().bad_requests++;
    handler->on_bad_request(*st, status, reason);
    st->answer_error(status, status == 431   ? "Request header fields too large."
                             : status == 405 ? "Method Not Allowed"
                                             : "Invalid HTTP request received.");
    return;
  }
  switch (dispatch_request(server, *st, h, st->native_)) {
    case Dispatch::kOverLimit:  // answered 503 on this stream; the connection goes on
      return;
    case Dispatch::kNative:
      st->in_flight_ = true;
      server.active_requests_++;
      if (h.expect_continue) {
        st->continue_pending_ = true;
        st->send_continue();
      }
      return;  // answered when the request is complete
    case Dispatch::kApp:
      break;
  }
  st->app_request_ = true;
  st->in_flight_ = true;
  server.active_requests_++;
  st->continue_pending_ = h.expect_continue;
  handler->on_request(*st, h);
}

void H2Session::request_complete(H2Stream* st) {
  st->body_complete_ = true;
  if (st->native_.active()) {
    answer_native(st);
    return;
  }
  if (st->app_request_ && st->in_flight_ && st->exchange != nullptr)
    conn_.server()->handler()->on_body_complete(*st);
}

void H2Session::answer_native(H2Stream* st) {
  Server& server = *conn_.server();
  const NativeRoute* route = st->native_.route;
  const int status = run_native_request(*st, st->native_);
  release_native_body(st);
  count_native_response(server, *st, route, status, st->request_start_ns_);
  if (st->in_flight_) {
    st->in_flight_ = false;
    server.active_requests_--;
  }
  request_done();
}

void H2Session::stream_finished(H2Stream* st) {
  Server& server = *conn_.server();
  if (!st->in_flight_) return;
  st->in_flight_ = false;
  server.active_requests_--;
  server.counters().requests++;
  if (st->status_ >= 500) server.counters().responses_5xx++;
  request_done();
}

int H2Session::on_data_chunk(nghttp2_session* s, std::uint8_t, std::int32_t stream_id, const std::uint8_t* data,
                             std::size_t len, void* user) {
  auto* self = static_cast<H2Session*>(user);
  // The connection window reopens at once: what bounds buffered bodies is each stream's window.
  nghttp2_session_consume_connection(s, len);
  H2Stream* st = stream_of(s, stream_id);
  if (st == nullptr) {
    nghttp2_session_consume_stream(s, stream_id, len);
    return 0;
  }
  const char* bytes = reinterpret_cast<const char*>(data);
  st->last_body_ms_ = uv.uv_now(self->conn_.server()->loop());
  try {
    if (st->native_.active()) {
      if (!take_native_body(st->native_, bytes, len)) {
        nghttp2_session_consume_stream(s, stream_id, len);
        self->conn_.server()->counters().bad_requests++;
        self->conn_.server()->handler()->on_bad_request(*st, 413, "request body too large for a native route");
        if (st->in_flight_) {
          st->in_flight_ = false;
          self->conn_.server()->active_requests_--;
        }
        self->release_native_body(st);
        st->answer_error(413, "Request body too large.");
        return 0;
      }
      if (st->native_.method_not_allowed) {  // answered 405 when the request is complete: read and dropped
        nghttp2_session_consume_stream(s, stream_id, len);
        return 0;
      }
      self->native_body_bytes_ += len;
      // Over the budget only the oldest body still arriving goes on (so some request always completes and frees
      // its share); the others' windows stay shut until release_native_body().
      if (self->native_body_bytes_ <= kNativeBodyBudget || self->oldest_native_upload() == st) {
        nghttp2_session_consume_stream(s, stream_id, len);
      } else {
        st->unconsumed_ += len;
        st->window_held_ = true;
      }
      return 0;
    }
    if (st->app_request_ && st->in_flight_ && st->exchange != nullptr) {
      if (self->conn_.server()->handler()->on_body(*st, bytes, len)) {
        st->unconsumed_ += len;  // acknowledged by resume()
        st->body_paused_ = true;
      } else {
        nghttp2_session_consume_stream(s, stream_id, len);
      }
      return 0;
    }
  } catch (...) {
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  nghttp2_session_consume_stream(s, stream_id, len);  // the app answered already: read and dropped
  return 0;
}

int H2Session::on_stream_close(nghttp2_session* s, std::int32_t stream_id, std::uint32_t, void* user) {
  auto* self = static_cast<H2Session*>(user);
  H2Stream* st = stream_of(s, stream_id);
  if (st == nullptr) return 0;
  st->closed_ = true;
  Server& server = *self->conn_.server();
  if (st->in_flight_) {
    st->in_flight_ = false;
    server.active_requests_--;
  }
  // The client reset the stream (or the response could not complete): the app sees http.disconnect.
  const bool app_running = st->exchange != nullptr;
  // Only the client's resets of requests whose app still runs count towards the rapid-reset bound: a stream this
  // server reset itself (its response could not complete) says nothing about the client.
  const bool cancelled_by_client = app_running && !st->reset_;
  if (app_running) server.handler()->on_disconnect(*st);
  self->drop(st);
  if (cancelled_by_client && self->too_many_cancels()) {
    server.handler()->on_timeout(self->conn_, "HTTP/2: requests reset faster than their apps finish (rapid reset)");
    nghttp2_session_terminate_session(s, NGHTTP2_ENHANCE_YOUR_CALM);
  }
  return 0;
}

void H2Session::watch_body(H2Stream* st) {
  const ServerConfig& cfg = conn_.server()->config();
  st->last_body_ms_ = uv.uv_now(conn_.server()->loop());
  if (cfg.body_timeout_ms > 0) transport_.arm_timer(st->last_body_ms_ + cfg.body_timeout_ms);
}

std::uint64_t H2Session::expire_stalled_bodies(std::uint64_t now, std::uint64_t limit_ms) {
  std::uint64_t next_due = UINT64_MAX;
  bool expired = false;
  for (H2Stream* st = streams_; st != nullptr; st = st->next_) {
    if (!st->awaiting_body()) continue;
    if (now - st->last_body_ms_ < limit_ms) {
      next_due = std::min(next_due, st->last_body_ms_ + limit_ms);
      continue;
    }
    expired = true;
    st->reset(NGHTTP2_CANCEL);  // deleted when nghttp2 closes it; an attached app gets on_disconnect then
  }
  if (expired)
    conn_.server()->handler()->on_timeout(conn_, "HTTP/2 body timeout: a request body stopped arriving");
  return next_due;
}

bool H2Session::too_many_cancels() {
  const double per_second = conn_.server()->config().http2.max_concurrent_streams;
  const double capacity = 2 * per_second;
  const std::uint64_t now = uv.uv_now(conn_.server()->loop());
  if (cancel_tokens_ < 0) {
    cancel_tokens_ = capacity;
    cancel_refill_ms_ = now;
  }
  const double refill = static_cast<double>(now - cancel_refill_ms_) * per_second / 1000;
  cancel_tokens_ = std::min(capacity, cancel_tokens_ + refill);
  cancel_refill_ms_ = now;
  if (cancel_tokens_ < 1) return true;
  cancel_tokens_ -= 1;
  return false;
}

}  // namespace fa
