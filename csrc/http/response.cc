#include "http/response.h"

#include <cstdio>

#include "core/strings.h"

namespace fa {

namespace {

constexpr unsigned char kTokenChars[256] = {
#define T 1
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    //    !  "  #  $  %  &  '  (  )  *  +  ,  -  .  /  0  1  2  3  4  5  6  7  8  9  :  ;  <  =  >  ?
    0, T, 0, T, T, T, T, T, 0, 0, T, T, 0, T, T, 0, T, T, T, T, T, T, T, T, T, T, 0, 0, 0, 0, 0, 0,
    // @  A ... Z  [  \  ]  ^  _
    0, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, 0, 0, 0, T, T,
    // `  a ... z  {  |  }  ~  DEL
    T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, T, 0, T, 0, T, 0,
#undef T
};

bool parse_content_length(std::string_view v, std::uint64_t* out) {
  return parse_decimal_u64(trim_ows(v), out);
}

// "<len in hex>\r\n", the chunk-size line.
void append_hex_line(std::string& out, std::size_t len) {
  char buf[20];
  char* p = buf + sizeof buf;
  *--p = '\n';
  *--p = '\r';
  do {
    *--p = "0123456789abcdef"[len & 0xf];
    len >>= 4;
  } while (len != 0);
  out.append(p, static_cast<std::size_t>(buf + sizeof buf - p));
}

}  // namespace

bool is_valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (unsigned char c : name)
    if (!kTokenChars[c]) return false;
  return true;
}

bool is_valid_header_value(std::string_view value) {
  for (unsigned char c : value)
    if ((c < 0x20 && c != '\t') || c == 0x7f) return false;
  return true;
}

const char* header_error(std::string_view name, std::string_view value) {
  if (!is_valid_header_name(name)) return "Invalid HTTP header name.";
  if (!is_valid_header_value(value)) return "Invalid HTTP header value.";
  return nullptr;
}

void append_decimal(std::string& out, std::uint64_t n) {
  char digits[24];
  char* p = digits + sizeof digits;
  do {
    *--p = static_cast<char>('0' + n % 10);
    n /= 10;
  } while (n != 0);
  out.append(p, static_cast<std::size_t>(digits + sizeof digits - p));
}

std::string_view reason_phrase(int status) {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 102: return "Processing";
    case 103: return "Early Hints";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 207: return "Multi-Status";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 418: return "I'm a teapot";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 451: return "Unavailable For Legal Reasons";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
  }
}

namespace {

// Status lines for 100-599, formatted once. NOTE: snprintf per response was ~1.5% of server CPU on raw ASGI
// plain text (perf, benchmarks/apps/raw_asgi.py); a table lookup is free.
struct StatusLines {
  std::string lines[500];
  StatusLines() {
    for (int s = 100; s < 600; ++s) {
      std::string& l = lines[s - 100];
      l = "HTTP/1.1 ";
      l += std::to_string(s);
      l += ' ';
      l += reason_phrase(s);
      l += "\r\n";
    }
  }
};

}  // namespace

std::string_view status_line(int status, char (&scratch)[64]) {
  static const StatusLines table;
  if (status >= 100 && status < 600) return table.lines[status - 100];
  if (status < 100 || status > 999) return {};
  const std::string_view reason = reason_phrase(status);
  const int n = std::snprintf(scratch, sizeof scratch, "HTTP/1.1 %d %.*s\r\n", status, static_cast<int>(reason.size()),
                              reason.data());
  // Reasons longer than the scratch space do not exist in the table above; snprintf truncation is impossible.
  return std::string_view(scratch, static_cast<std::size_t>(n));
}

const char* ResponseState::write_head(std::string& out, int status, const std::string_view* names,
                                      const std::string_view* values, std::size_t count,
                                      const ResponseDefaults& defaults, DateCache& date) {
  char scratch[64];
  const std::string_view line = status_line(status, scratch);
  if (line.empty()) return "Invalid HTTP status code in response.";
  // A 1xx is interim: a response that ends with one leaves the client waiting for the final status forever.
  if (status < 200) return "Informational status codes (1xx) cannot be the final response status.";
  for (std::size_t i = 0; i < count; ++i)
    if (const char* err = header_error(names[i], values[i])) return err;
  bool saw_length = false, saw_chunked = false, app_close = false;
  std::uint64_t length = 0;
  const std::size_t mark = out.size();
  out.append(line);
  append_default_headers(out, defaults, date);
  for (std::size_t i = 0; i < count; ++i) {
    const std::string_view name = names[i], value = values[i];
    if (ascii_iequals(name, "content-length")) {
      std::uint64_t n = 0;
      if (!parse_content_length(value, &n) || (saw_length && n != length)) {
        out.resize(mark);
        return "Invalid Content-Length header in response.";
      }
      saw_length = true;
      length = n;
    } else if (ascii_iequals(name, "transfer-encoding")) {
      if (list_has_token(value, "chunked")) saw_chunked = true;
    } else if (ascii_iequals(name, "connection")) {
      if (list_has_token(value, "close")) app_close = true;
    }
    out.append(name);
    out.append(": ");
    out.append(value);
    out.append("\r\n");
  }
  // Committed only now: a refused head leaves no trace in the state.
  status_ = status;
  no_body_ = head_request_ || status < 200 || status == 204 || status == 304;
  content_length_ = length;
  if (app_close) keep_alive_ = false;
  if (no_body_) {
    framing_ = kNone;
  } else if (saw_chunked) {
    // The app asked for chunked itself: it keeps the header it wrote; the server does the chunk framing.
    framing_ = kChunked;
  } else if (saw_length) {
    framing_ = kLength;
  } else if (http10_) {
    framing_ = kUntilClose;
    keep_alive_ = false;
  } else {
    framing_ = kChunked;
    out.append("transfer-encoding: chunked\r\n");
  }
  if (!keep_alive_ && !app_close) {
    out.append("connection: close\r\n");
  } else if (keep_alive_ && http10_) {
    out.append("connection: keep-alive\r\n");
  }
  out.append("\r\n");
  started_ = true;
  return nullptr;
}

const char* ResponseState::frame_body(std::string& out, std::size_t len, bool more_body, bool* emit,
                                      std::string_view* suffix) {
  *emit = false;
  *suffix = {};
  switch (framing_) {
    case kNone:
      break;
    case kLength:
      if (sent_ + len > content_length_) return "Response content longer than Content-Length";
      if (!more_body && sent_ + len < content_length_) return "Response content shorter than Content-Length";
      *emit = len > 0;
      break;
    case kUntilClose:
      *emit = len > 0;
      break;
    case kChunked:
      if (len > 0) {
        append_hex_line(out, len);
        *emit = true;
        *suffix = more_body ? std::string_view("\r\n") : std::string_view("\r\n0\r\n\r\n");
      } else if (!more_body) {
        out.append("0\r\n\r\n");
      }
      break;
  }
  sent_ += len;
  if (!more_body) complete_ = true;
  return nullptr;
}

void append_default_headers(std::string& out, const ResponseDefaults& defaults, DateCache& date) {
  out.append(defaults.header_block);
  if (defaults.date_header) {
    out.append("date: ");
    out.append(date.now());
    out.append("\r\n");
  }
}

void write_error_response(std::string& out, int status, std::string_view body, std::string_view extra_headers,
                          bool head_request, const ResponseDefaults& defaults, DateCache& date) {
  char scratch[64];
  std::string_view line = status_line(status, scratch);
  if (line.empty()) line = status_line(500, scratch);
  out.append(line);
  append_default_headers(out, defaults, date);
  out.append(extra_headers);
  out.append("content-type: text/plain; charset=utf-8\r\ncontent-length: ");
  append_decimal(out, body.size());
  out.append("\r\nconnection: close\r\n\r\n");
  if (!head_request) out.append(body);
}

}  // namespace fa
