// H2Stream: the response API of one HTTP/2 stream. Heads become nghttp2 header lists (lowercase names, no
// connection-specific fields), bodies are buffered here and framed by nghttp2 as the peer's flow-control window and
// the connection's output allow (read_body). Nothing here calls into nghttp2's framing: frames are made when the
// connection flushes (H2Session::produce).
#include <unistd.h>


#include "http/response.h"
#include "server/connection.h"
#include "server/h2_session.h"
#include "server/server.h"

namespace fa {

namespace {

// RFC 9113 8.2.2: fields that are HTTP/1.1 connection management have no meaning in HTTP/2 and make a response
// malformed; an app written for HTTP/1.1 may send them, so they are left out.
bool connection_specific(std::string_view lower) {
  return lower == "connection" || lower == "keep-alive" || lower == "proxy-connection" ||
         lower == "transfer-encoding" || lower == "upgrade";
}

bool parse_length(std::string_view v, std::int64_t* out) {
  if (v.empty() || v.size() > 18) return false;
  std::int64_t n = 0;
  for (const char c : v) {
    if (c < '0' || c > '9') return false;
    n = n * 10 + (c - '0');
  }
  *out = n;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

H2Stream::H2Stream(H2Session* session, std::int32_t id)
    : HttpStream(session->connection().server(), &session->connection(), nullptr), session_(session), id_(id) {
  head_ = &request_;
}

H2Stream::~H2Stream() = default;

void H2Stream::begin_head(int status, bool server_headers) {
  head_fields_.clear();
  head_fields_.emplace_back(":status");
  head_fields_.emplace_back(std::to_string(status));
  const ResponseDefaults& defaults = server_->config().defaults;
  if (server_headers) add_header_lines(defaults.header_block);
  if (defaults.date_header) {
    head_fields_.emplace_back("date");
    head_fields_.emplace_back(server_->date().now());
  }
}

void H2Stream::add_header(std::string_view name, std::string_view value) {
  std::string lower(name);
  for (char& c : lower) c = ascii_lower(c);
  if (connection_specific(lower)) return;
  head_fields_.push_back(std::move(lower));
  head_fields_.emplace_back(value);
}

void H2Stream::add_header_lines(std::string_view lines) {
  while (!lines.empty()) {
    const auto eol = lines.find("\r\n");
    const std::string_view line = lines.substr(0, eol);
    lines = eol == std::string_view::npos ? std::string_view() : lines.substr(eol + 2);
    const auto colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    add_header(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
}

void H2Stream::submit(bool with_body) {
  if (submitted_ || reset_ || closed_) return;
  submitted_ = true;
  std::vector<nghttp2_nv> nva;
  nva.reserve(head_fields_.size() / 2);
  for (std::size_t i = 0; i + 1 < head_fields_.size(); i += 2) {
    nva.push_back({reinterpret_cast<std::uint8_t*>(head_fields_[i].data()),
                   reinterpret_cast<std::uint8_t*>(head_fields_[i + 1].data()), head_fields_[i].size(),
                   head_fields_[i + 1].size(), NGHTTP2_NV_FLAG_NONE});
  }
  nghttp2_data_provider2 provider{};
  provider.source.ptr = this;
  provider.read_callback = &H2Stream::read_body;
  // nghttp2 copies the header list.
  const int rv =
      nghttp2_submit_response2(session_->raw(), id_, nva.data(), nva.size(), with_body ? &provider : nullptr);
  body_.set_framed(!with_body);
  head_fields_.clear();
  head_fields_.shrink_to_fit();
  if (rv != 0) {
    close();
    return;
  }
  session_->want_write();
}

const char* H2Stream::start_response(int status, const std::string_view* names, const std::string_view* values,
                                     std::size_t count) {
  if (started_) return "Response already started.";
  if (status < 100 || status > 999) return "Invalid HTTP status code in response.";
  if (status < 200) return "Informational status codes (1xx) cannot be the final response status.";
  std::int64_t length = -1;
  for (std::size_t i = 0; i < count; ++i) {
    if (const char* err = header_error(names[i], values[i])) return err;
    if (ascii_iequals(names[i], "content-length")) {
      std::int64_t n = 0;
      if (!parse_length(values[i], &n) || (length >= 0 && n != length))
        return "Invalid Content-Length header in response.";
      length = n;
    }
  }
  begin_head(status, true);
  for (std::size_t i = 0; i < count; ++i) add_header(names[i], values[i]);
  status_ = status;
  no_body_ = head_request_ || status == 204 || status == 304;
  content_length_ = no_body_ ? -1 : length;
  started_ = true;
  return nullptr;
}

const char* H2Stream::write_body(const char* data, std::size_t len, bool more) {
  if (!started_) return "Response not started.";
  if (body_.complete()) return "Response already completed.";
  if (!no_body_ && content_length_ >= 0) {
    if (sent_ + len > static_cast<std::uint64_t>(content_length_)) return "Response content longer than Content-Length";
    if (!more && sent_ + len < static_cast<std::uint64_t>(content_length_))
      return "Response content shorter than Content-Length";
  }
  if (!more) body_.set_complete();
  if (reset_ || closed_) return nullptr;  // the client is gone: on_disconnect tells the app
  if (!no_body_ && len > 0) {
    sent_ += len;
    body_.append(data, len);
  }
  if (!submitted_) {
    // A response complete in its first write with nothing to send ends the stream with its HEADERS frame (unless
    // trailers are to follow).
    submit(!(body_.complete() && body_.buffered() == 0) || (body_.trailers_expected() && !no_body_));
  } else {
    wake_data();
  }
  return nullptr;
}

void H2Stream::answer_error(int status, std::string_view body, std::string_view extra_headers, bool server_headers) {
  if (submitted_) {
    close();
    return;
  }
  begin_head(status, server_headers);
  add_header("content-type", "text/plain; charset=utf-8");
  add_header("content-length", std::to_string(body.size()));
  add_header_lines(extra_headers);
  status_ = status;
  started_ = true;
  body_.set_complete();
  content_length_ = -1;
  if (!head_request_) body_.assign(body);
  submit(body_.buffered() > 0);
}

void H2Stream::write_response(int status, std::string_view headers, std::string_view body, bool with_length) {
  if (submitted_) {
    close();
    return;
  }
  begin_head(status >= 100 && status <= 999 ? status : 500, true);
  add_header_lines(headers);
  if (with_length) add_header("content-length", std::to_string(body.size()));
  status_ = status;
  started_ = true;
  body_.set_complete();
  no_body_ = head_request_ || status == 204 || status == 304;
  if (!no_body_) body_.assign(body);
  submit(body_.buffered() > 0);
}

const char* H2Stream::send_file(int fd, std::uint64_t size, std::uint64_t offset) {
  if (!started_ || body_.complete()) {
    ::close(fd);
    return "Response not started.";
  }
  if (!no_body_ && content_length_ >= 0 && size != static_cast<std::uint64_t>(content_length_)) {
    ::close(fd);
    return "Response content length does not match the file.";
  }
  body_.set_complete();
  server_->counters().files_sent++;
  if (no_body_ || size == 0 || reset_ || closed_) {
    ::close(fd);
    submit(false);
    session_->file_sent_.push_back(this);
    session_->want_write();
    return nullptr;
  }
  body_.set_file(fd, offset, size);
  sent_ = size;
  if (!submitted_) submit(true);
  else wake_data();
  return nullptr;
}

void H2Stream::wake_data() {
  if (!body_.deferred() || reset_ || closed_) return;
  body_.clear_deferred();
  nghttp2_session_resume_data(session_->raw(), id_);
  session_->want_write();
}

nghttp2_ssize H2Stream::read_body(nghttp2_session*, std::int32_t, std::uint8_t* buf, std::size_t length,
                                  std::uint32_t* flags, nghttp2_data_source* source, void*) {
  auto* st = static_cast<H2Stream*>(source->ptr);
  bool end = false, file_done = false;
  const std::int64_t n = st->body_.read(buf, length, &end, &file_done);
  if (n == H2ResponseBody::kFailed) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // the file: reset the stream
  if (n == H2ResponseBody::kWaiting) return NGHTTP2_ERR_DEFERRED;                 // wake_data() resumes
  if (file_done) {
    // A file body ends the stream with its last DATA frame (trailers are not offered after a file).
    st->body_.set_framed(true);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    st->session_->file_sent_.push_back(st);
  } else if (end) {
    st->end_of_body(flags);
  }
  return static_cast<nghttp2_ssize>(n);
}

void H2Stream::end_of_body(std::uint32_t* flags) {
  body_.set_framed(true);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  if (!body_.trailers_expected()) return;
  std::vector<std::string>& fields = body_.trailer_fields();
  std::vector<nghttp2_nv> nva;
  for (std::size_t i = 0; i + 1 < fields.size(); i += 2)
    nva.push_back({reinterpret_cast<std::uint8_t*>(fields[i].data()),
                   reinterpret_cast<std::uint8_t*>(fields[i + 1].data()), fields[i].size(), fields[i + 1].size(),
                   NGHTTP2_NV_FLAG_NONE});
  // The trailer HEADERS frame ends the stream instead of this DATA frame (nghttp2 copies the fields).
  if (nghttp2_submit_trailer(session_->raw(), id_, nva.data(), nva.size()) == 0)
    *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
  fields.clear();
}

bool H2Stream::expect_trailers() {
  if (!started_ || submitted_ || no_body_) return false;
  body_.expect_trailers();
  return true;
}

const char* H2Stream::write_trailers(const std::string_view* names, const std::string_view* values,
                                     std::size_t count, bool more) {
  if (!body_.trailers_expected())
    return "http.response.trailers sent, but http.response.start did not announce trailers.";
  if (body_.trailers_ready()) return "Response trailers already completed.";
  for (std::size_t i = 0; i < count; ++i)
    if (const char* err = header_error(names[i], values[i])) return err;
  for (std::size_t i = 0; i < count; ++i) {
    std::string lower(names[i]);
    for (char& c : lower) c = ascii_lower(c);
    if (connection_specific(lower) || lower == "content-length") continue;  // not allowed in a trailer section
    body_.add_trailer(std::move(lower), values[i]);
  }
  if (!more) {
    body_.set_trailers_ready();
    if (!submitted_) submit(true);
    else wake_data();
  }
  return nullptr;
}

std::size_t H2Stream::write_queue_bytes() const { return body_.buffered(); }

bool H2Stream::want_drain() {
  if (closing() || body_.buffered() <= server_->config().write_high_water) return false;
  if (!drain_wanted_) {
    drain_wanted_ = true;
    session_->drain_waiters_.push_back(this);
  }
  return true;
}

void H2Stream::finish_response() { session_->stream_finished(this); }

void H2Stream::resume() {
  // The window reopens now: the body's bound counts from here, not from before the app held it.
  if (body_paused_ && !body_complete_) session_->watch_body(this);
  body_paused_ = false;
  if (unconsumed_ > 0 && !closed_) {
    nghttp2_session_consume_stream(session_->raw(), id_, unconsumed_);
    unconsumed_ = 0;
    session_->want_write();
  }
}

void H2Stream::send_continue() {
  if (!continue_pending_) return;
  continue_pending_ = false;
  if (submitted_ || closed_ || reset_) return;
  nghttp2_nv nv{reinterpret_cast<std::uint8_t*>(const_cast<char*>(":status")),
                reinterpret_cast<std::uint8_t*>(const_cast<char*>("100")), 7, 3, NGHTTP2_NV_FLAG_NONE};
  nghttp2_submit_headers(session_->raw(), NGHTTP2_FLAG_NONE, id_, nullptr, &nv, 1, nullptr);
  session_->want_write();
}

void H2Stream::close() { reset(NGHTTP2_INTERNAL_ERROR); }

void H2Stream::reset(std::uint32_t code) {
  if (reset_ || closed_) return;
  reset_ = true;
  nghttp2_submit_rst_stream(session_->raw(), NGHTTP2_FLAG_NONE, id_, code);
  session_->want_write();
}

void H2Stream::close_after_output() { close(); }

}  // namespace fa
