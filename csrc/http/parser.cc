#include "http/parser.h"

#include <string_view>

namespace fa {

namespace {

RequestParser* self(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }

// The server decodes no transfer coding but chunked; a request using another one cannot be handed to the app
// as its body (RFC 9112 section 6.1: answer 501).
bool known_transfer_coding(std::string_view token) { return ascii_iequals(token, "chunked"); }

// True when every comma-separated coding in a Transfer-Encoding value is one the server knows.
bool transfer_codings_known(std::string_view value) {
  return !for_each_list_item(value, [](std::string_view coding) {
    coding = trim_ows(coding.substr(0, coding.find(';')));
    return !coding.empty() && !known_transfer_coding(coding);
  });
}

// RFC 9110 section 7.2: Host = uri-host [ ":" port ], uri-host an IP-literal, IPv4 address or reg-name
// (unreserved / pct-encoded / sub-delims). Empty is allowed (a target without authority).
struct HostChars {
  bool ok[256] = {};
  constexpr HostChars() {
    for (int c = 'a'; c <= 'z'; ++c) ok[c] = true;
    for (int c = 'A'; c <= 'Z'; ++c) ok[c] = true;
    for (int c = '0'; c <= '9'; ++c) ok[c] = true;
    for (const char* p = "-._~%!$&'()*+,;=:[]"; *p != 0; ++p) ok[static_cast<unsigned char>(*p)] = true;
  }
};
constexpr HostChars kHostChars;

bool valid_host(std::string_view v) {
  for (unsigned char c : v)
    if (!kHostChars.ok[c]) return false;
  return true;
}

}  // namespace

RequestParser::RequestParser(ParserListener* listener, const ParserLimits* limits)
    : listener_(listener), limits_(limits) {
  // llhttp_init copies the settings pointer; callbacks are static functions set once.
  static const llhttp_settings_t cbs = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_message_begin = &RequestParser::cb_message_begin;
    v.on_url = &RequestParser::cb_url;
    v.on_header_field = &RequestParser::cb_header_field;
    v.on_header_value = &RequestParser::cb_header_value;
    v.on_header_value_complete = &RequestParser::cb_header_value_complete;
    v.on_headers_complete = &RequestParser::cb_headers_complete;
    v.on_body = &RequestParser::cb_body;
    v.on_message_complete = &RequestParser::cb_message_complete;
    return v;
  }();
  llhttp_init(&parser_, HTTP_REQUEST, &cbs);
  parser_.data = this;
}

int RequestParser::fail(int status, const char* reason) {
  error_status_ = status;
  error_reason_ = reason;
  return HPE_USER;
}

int RequestParser::cb_message_begin(llhttp_t* p) {
  RequestParser* s = self(p);
  s->head_.clear();
  s->head_bytes_ = 0;
  s->in_value_ = false;
  s->in_message_ = true;
  s->in_trailers_ = false;
  s->error_status_ = 0;
  s->listener_->on_request_begin();
  return HPE_OK;
}

int RequestParser::cb_url(llhttp_t* p, const char* at, std::size_t len) {
  RequestParser* s = self(p);
  RequestHead& h = s->head_;
  if (h.url.len == 0) {
    h.url.off = h.arena.size();
    h.method = llhttp_get_method(p);  // known from here on: lets errors found later log the request line
  }
  h.url.len += len;
  if (h.url.len > s->limits_->max_url_bytes) return s->fail(414, "request target too long");
  s->head_bytes_ += len;
  if (s->head_bytes_ > s->limits_->max_header_bytes) return s->fail(431, "request header section too large");
  h.arena.append(at, len);
  return HPE_OK;
}

int RequestParser::cb_header_field(llhttp_t* p, const char* at, std::size_t len) {
  RequestParser* s = self(p);
  RequestHead& h = s->head_;
  s->head_bytes_ += len;
  if (s->head_bytes_ > s->limits_->max_header_bytes) return s->fail(431, "request header section too large");
  // Trailer fields (after a chunked body) count against the limit but are never merged into the headers, which
  // were already handed out (RFC 9110 6.5.1).
  if (s->in_trailers_) return HPE_OK;
  if (h.headers.empty() || s->in_value_) {
    if (h.headers.size() >= s->limits_->max_headers) return s->fail(431, "too many request headers");
    h.headers.push_back({Span{h.arena.size(), 0}, Span{h.arena.size(), 0}});
    s->in_value_ = false;
  }
  auto& name = h.headers.back().first;
  const std::size_t base = h.arena.size();
  h.arena.append(at, len);
  ascii_lower_inplace(&h.arena[base], len);
  name.len += len;
  h.headers.back().second.off = h.arena.size();
  return HPE_OK;
}

int RequestParser::cb_header_value(llhttp_t* p, const char* at, std::size_t len) {
  RequestParser* s = self(p);
  RequestHead& h = s->head_;
  s->head_bytes_ += len;
  if (s->head_bytes_ > s->limits_->max_header_bytes) return s->fail(431, "request header section too large");
  if (s->in_trailers_) return HPE_OK;
  if (!s->in_value_) {
    h.headers.back().second.off = h.arena.size();
    s->in_value_ = true;
  }
  h.arena.append(at, len);
  h.headers.back().second.len += len;
  return HPE_OK;
}

int RequestParser::cb_header_value_complete(llhttp_t* p) {
  RequestParser* s = self(p);
  // An empty value produces no on_header_value call; make the next field start a new header all the same.
  s->in_value_ = true;
  if (s->in_trailers_) return HPE_OK;
  RequestHead& h = s->head_;
  if (h.headers.empty()) return HPE_OK;
  auto& [name, value] = h.headers.back();
  // A field value excludes the whitespace around it (RFC 9110 5.5): llhttp skips the leading OWS and hands the
  // trailing one over with the value, so it is cut here (as h11, one of uvicorn's parsers: `b"padded"`).
  const char* v = h.arena.data() + value.off;
  std::size_t len = value.len;
  // SP and HTAB are the only bytes <= 0x20 llhttp lets into a value (it refuses the other controls): one compare.
  while (len > 0 && static_cast<unsigned char>(v[len - 1]) <= ' ') --len;
  value.len = len;
  // Checked here, not at headers-complete: llhttp itself rejects some codings (400) before that callback runs.
  if (name.len == 17 && h.str(name) == "transfer-encoding" && !transfer_codings_known(h.str(value)))
    return s->fail(501, "unsupported transfer-encoding");
  return HPE_OK;
}

int RequestParser::cb_headers_complete(llhttp_t* p) {
  RequestParser* s = self(p);
  RequestHead& h = s->head_;
  s->in_trailers_ = true;
  h.method = llhttp_get_method(p);
  h.http_major = llhttp_get_http_major(p);
  h.http_minor = llhttp_get_http_minor(p);
  h.keep_alive = llhttp_should_keep_alive(p) != 0;
  h.upgrade = llhttp_get_upgrade(p) != 0;
  h.has_body = (p->flags & F_CHUNKED) != 0 || ((p->flags & F_CONTENT_LENGTH) != 0 && p->content_length > 0);
  int hosts = 0;
  bool host_ok = true;
  for (const auto& hdr : h.headers) {
    const std::string_view name = h.str(hdr.first);
    if (name == "expect" && ascii_iequals(h.str(hdr.second), "100-continue")) h.expect_continue = true;
    else if (name == "transfer-encoding") h.has_transfer_encoding = true;
    else if (name == "host" && (++hosts, !valid_host(h.str(hdr.second)))) host_ok = false;
  }
  if (h.http_major != 1 || h.http_minor > 1) return s->fail(505, "unsupported HTTP version");
  if (h.http_minor == 0) {
    h.expect_continue = false;
    // RFC 9112 section 6.1: Transfer-Encoding in an HTTP/1.0 message means faulty framing: the server answers and
    // closes, whatever Connection says (otherwise the bytes after the message could be read as another request).
    if (h.has_transfer_encoding) h.keep_alive = false;
  }
  if (s->limits_->require_host && h.http_minor == 1 && hosts != 1) {
    return s->fail(400, hosts == 0 ? "missing Host header" : "more than one Host header");
  }
  if (!host_ok) return s->fail(400, "invalid Host header");
  if (s->listener_->on_request_head(h) == ParserListener::kPause) return HPE_PAUSED;
  return HPE_OK;
}

int RequestParser::cb_body(llhttp_t* p, const char* at, std::size_t len) {
  // llhttp reports the open body span as an empty on_body when execute() runs on no bytes mid-body (what
  // Http1Session::resume() does after a pause): not body data, and the listener must not be woken for it.
  if (len == 0) return HPE_OK;
  return self(p)->listener_->on_request_body(at, len) == ParserListener::kPause ? HPE_PAUSED : HPE_OK;
}

int RequestParser::cb_message_complete(llhttp_t* p) {
  RequestParser* s = self(p);
  s->in_message_ = false;
  return s->listener_->on_request_complete() == ParserListener::kPause ? HPE_PAUSED : HPE_OK;
}

ParseResult RequestParser::execute(const char* data, std::size_t len) {
  ParseResult r;
  const llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  switch (err) {
    case HPE_OK:
      r.consumed = len;
      return r;
    case HPE_PAUSED:
      r.kind = ParseResult::kPaused;
      r.consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
      return r;
    case HPE_PAUSED_UPGRADE:
      r.kind = ParseResult::kUpgrade;
      r.consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
      return r;
    case HPE_USER:
    user_error:
      r.kind = ParseResult::kError;
      r.status = error_status_;
      r.reason = error_reason_;
      return r;
    default:
      // llhttp reports an error returned by a non-span callback as HPE_CB_<name>; ours carry their own status.
      if (error_status_ != 0) goto user_error;
      r.kind = ParseResult::kError;
      r.status = 400;
      r.reason = llhttp_get_error_reason(&parser_);
      if (r.reason == nullptr) r.reason = llhttp_errno_name(err);
      // A well-formed version the server does not speak is 505 (RFC 9110 15.6.6); a malformed request line
      // (llhttp reports it with the same error code) stays 400.
      if (err == HPE_INVALID_VERSION && std::string_view(r.reason).find("Invalid") == 0) r.status = 505;
      return r;
  }
}

ParseResult RequestParser::finish() {
  ParseResult r;
  if (in_message_) {
    r.kind = ParseResult::kError;
    r.status = 400;
    r.reason = "connection closed before the request was complete";
  }
  return r;
}

}  // namespace fa
