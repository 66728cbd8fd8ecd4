// Response serialisation: status lines, header validation, framing decisions and their enforcement, error responses.
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "catch_compat.h"
#include "http/response.h"

namespace {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Written {
  const char* error = nullptr;
  std::string out;
};

Written write_head(fa::ResponseState& rs, int status, const Headers& hs, const fa::ResponseDefaults& d,
                   fa::DateCache& date, std::string prefix = {}) {
  std::vector<std::string_view> names, values;
  for (const auto& h : hs) {
    names.emplace_back(h.first);
    values.emplace_back(h.second);
  }
  Written w;
  w.out = std::move(prefix);
  w.error = rs.write_head(w.out, status, names.data(), values.data(), hs.size(), d, date);
  return w;
}

fa::ResponseDefaults no_defaults() {
  fa::ResponseDefaults d;
  d.date_header = false;
  return d;
}

// Frames `body` and returns the exact wire bytes (prefix + body if emitted + suffix).
std::string frame(fa::ResponseState& rs, std::string_view body, bool more, const char** error = nullptr) {
  std::string out;
  bool emit = true;
  std::string_view suffix = "garbage";
  const char* err = rs.frame_body(out, body.size(), more, &emit, &suffix);
  if (error != nullptr) *error = err;
  if (err != nullptr) return out;
  if (emit) out.append(body);
  out.append(suffix);
  return out;
}

bool is_imf_fixdate(std::string_view s) {
  // "Sun, 06 Nov 1994 08:49:37 GMT"
  if (s.size() != 29) return false;
  static const char* const kDays[] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
  bool day = false;
  for (const char* d : kDays) day |= s.substr(0, 3) == d;
  auto digits = [&](std::size_t at, std::size_t n) {
    for (std::size_t i = at; i < at + n; ++i)
      if (s[i] < '0' || s[i] > '9') return false;
    return true;
  };
  return day && s.substr(3, 2) == ", " && digits(5, 2) && s[7] == ' ' && s[11] == ' ' && digits(12, 4) &&
         s[16] == ' ' && digits(17, 2) && s[19] == ':' && digits(20, 2) && s[22] == ':' && digits(23, 2) &&
         s.substr(25) == " GMT";
}

}  // namespace

TEST_CASE("response: status lines for common, unknown and invalid codes", "[response]") {
  char scratch[64];
  CHECK(fa::status_line(200, scratch) == "HTTP/1.1 200 OK\r\n");
  CHECK(fa::status_line(204, scratch) == "HTTP/1.1 204 No Content\r\n");
  CHECK(fa::status_line(304, scratch) == "HTTP/1.1 304 Not Modified\r\n");
  CHECK(fa::status_line(404, scratch) == "HTTP/1.1 404 Not Found\r\n");
  CHECK(fa::status_line(418, scratch) == "HTTP/1.1 418 I'm a teapot\r\n");
  CHECK(fa::status_line(431, scratch) == "HTTP/1.1 431 Request Header Fields Too Large\r\n");
  CHECK(fa::status_line(500, scratch) == "HTTP/1.1 500 Internal Server Error\r\n");
  CHECK(fa::status_line(100, scratch) == "HTTP/1.1 100 Continue\r\n");
  // Unknown codes keep the (empty) reason phrase and its separating space, as RFC 9112 allows.
  CHECK(fa::status_line(299, scratch) == "HTTP/1.1 299 \r\n");
  CHECK(fa::status_line(599, scratch) == "HTTP/1.1 599 \r\n");
  CHECK(fa::status_line(999, scratch) == "HTTP/1.1 999 \r\n");
  // Invalid codes: not three digits.
  CHECK(fa::status_line(99, scratch).empty());
  CHECK(fa::status_line(0, scratch).empty());
  CHECK(fa::status_line(-200, scratch).empty());
  CHECK(fa::status_line(1000, scratch).empty());
  CHECK(fa::status_line(2147483647, scratch).empty());
  CHECK(fa::reason_phrase(503) == "Service Unavailable");
  CHECK(fa::reason_phrase(299).empty());
}

TEST_CASE("response: header name validation (RFC 9110 token)", "[response]") {
  CHECK(fa::is_valid_header_name("content-type"));
  CHECK(fa::is_valid_header_name("X-Custom_Header.1"));
  CHECK(fa::is_valid_header_name("!#$%&'*+-.^_`|~"));
  CHECK(fa::is_valid_header_name("a"));
  CHECK_FALSE(fa::is_valid_header_name(""));
  CHECK_FALSE(fa::is_valid_header_name("a b"));
  CHECK_FALSE(fa::is_valid_header_name("a:b"));
  CHECK_FALSE(fa::is_valid_header_name("a\r"));
  CHECK_FALSE(fa::is_valid_header_name("a\nb"));
  CHECK_FALSE(fa::is_valid_header_name(std::string_view("a\0b", 3)));
  CHECK_FALSE(fa::is_valid_header_name("a\tb"));
  CHECK_FALSE(fa::is_valid_header_name("a\x7f"));
  CHECK_FALSE(fa::is_valid_header_name("caf\xc3\xa9"));  // obs-text is not a token char
  for (const char c : std::string("\"(),/:;<=>?@[\\]{}")) {
    INFO("separator " << c);
    CHECK_FALSE(fa::is_valid_header_name(std::string("x") + c));
  }
}

TEST_CASE("response: header value validation", "[response]") {
  CHECK(fa::is_valid_header_value(""));
  CHECK(fa::is_valid_header_value("text/html; charset=utf-8"));
  CHECK(fa::is_valid_header_value("a\tb"));
  CHECK(fa::is_valid_header_value("caf\xc3\xa9 \x80\xff"));  // obs-text is allowed in values
  CHECK_FALSE(fa::is_valid_header_value("a\rb"));
  CHECK_FALSE(fa::is_valid_header_value("a\nb"));
  CHECK_FALSE(fa::is_valid_header_value("a\r\nSet-Cookie: evil=1"));
  CHECK_FALSE(fa::is_valid_header_value(std::string_view("a\0b", 3)));
  CHECK_FALSE(fa::is_valid_header_value("a\x7f"));
  CHECK_FALSE(fa::is_valid_header_value("a\x01"));
  CHECK_FALSE(fa::is_valid_header_value("\x1f"));
}

TEST_CASE("response: write_head rejects invalid status and headers without writing", "[response]") {
  fa::DateCache date;
  const fa::ResponseDefaults d = no_defaults();
  struct Bad {
    int status;
    Headers headers;
    const char* error;
  };
  const Bad bad[] = {
      {99, {}, "Invalid HTTP status code in response."},
      {1000, {}, "Invalid HTTP status code in response."},
      {200, {{"bad name", "v"}}, "Invalid HTTP header name."},
      {200, {{"", "v"}}, "Invalid HTTP header name."},
      {200, {{"x", "a\r\nb"}}, "Invalid HTTP header value."},
      {200, {{"x", std::string("a\0b", 3)}}, "Invalid HTTP header value."},
      {200, {{"content-length", "abc"}}, "Invalid Content-Length header in response."},
      {200, {{"content-length", "-1"}}, "Invalid Content-Length header in response."},
      {200, {{"content-length", ""}}, "Invalid Content-Length header in response."},
      {200, {{"content-length", "3"}, {"Content-Length", "4"}}, "Invalid Content-Length header in response."},
      {200, {{"x-ok", "1"}, {"content-length", "99999999999999999999"}}, "Invalid Content-Length header in response."},
  };
  for (const Bad& b : bad) {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, b.status, b.headers, d, date, "PREVIOUS");
    INFO("status " << b.status << ", first header " << (b.headers.empty() ? "-" : b.headers[0].first));
    REQUIRE(w.error != nullptr);
    CHECK(std::string(w.error) == b.error);
    CHECK(w.out == "PREVIOUS");  // nothing of the failed head reaches the output
    CHECK_FALSE(rs.started());
  }
}

TEST_CASE("response: framing decisions", "[response]") {
  fa::DateCache date;
  const fa::ResponseDefaults d = no_defaults();

  SECTION("Content-Length from the app: kept, body sent as is") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"content-type", "text/plain"}, {"content-length", "5"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n");
    CHECK(rs.started());
    CHECK(frame(rs, "he", true) == "he");
    CHECK_FALSE(rs.complete());
    CHECK(frame(rs, "llo", false) == "llo");
    CHECK(rs.complete());
    CHECK(rs.body_bytes() == 5);
    CHECK(rs.keep_alive());
  }
  SECTION("Content-Length with surrounding whitespace and identical duplicates is accepted") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"Content-Length", " 2 "}, {"content-length", "2"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(frame(rs, "ok", false) == "ok");
  }
  SECTION("no length: chunked by default on HTTP/1.1") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"content-type", "text/plain"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n");
    CHECK(frame(rs, "hello", true) == "5\r\nhello\r\n");
    CHECK(frame(rs, "", true).empty());  // an empty non-final chunk would end the body: nothing is written
    CHECK(frame(rs, std::string(26, 'z'), true) == "1a\r\n" + std::string(26, 'z') + "\r\n");
    CHECK(frame(rs, "", false) == "0\r\n\r\n");
    CHECK(rs.complete());
    CHECK(rs.body_bytes() == 31);
  }
  SECTION("chunked: the last chunk with data carries the terminator") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    REQUIRE(write_head(rs, 200, {}, d, date).error == nullptr);
    CHECK(frame(rs, "abc", false) == "3\r\nabc\r\n0\r\n\r\n");
    CHECK(rs.complete());
  }
  SECTION("chunked: a large chunk size in hex") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    REQUIRE(write_head(rs, 200, {}, d, date).error == nullptr);
    const std::string big(0x12345, 'q');
    CHECK(frame(rs, big, true) == "12345\r\n" + big + "\r\n");
  }
  SECTION("app-supplied Transfer-Encoding: chunked is kept once, the server frames the chunks") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"Transfer-Encoding", "chunked"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(w.out == "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    CHECK(frame(rs, "ab", false) == "2\r\nab\r\n0\r\n\r\n");
  }
  SECTION("HEAD: headers as for GET, no body bytes, no framing") {
    fa::ResponseState rs;
    rs.reset(true, true, false);
    const Written w = write_head(rs, 200, {{"content-length", "5"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n");
    CHECK(frame(rs, "hello", false).empty());
    CHECK(rs.complete());
    CHECK(rs.keep_alive());
  }
  SECTION("HEAD without a length: no transfer-encoding added") {
    fa::ResponseState rs;
    rs.reset(true, true, false);
    const Written w = write_head(rs, 200, {{"content-type", "text/plain"}}, d, date);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\n");
    CHECK(frame(rs, "ignored", false).empty());
  }
  SECTION("1xx cannot be a final status: refused, nothing written") {
    for (int status : {100, 101, 103}) {
      INFO("status " << status);
      fa::ResponseState rs;
      rs.reset(false, true, false);
      const Written w = write_head(rs, status, {{"x", "y"}}, d, date);
      CHECK(w.error != nullptr);
      CHECK(w.out.empty());
      CHECK_FALSE(rs.started());
    }
  }
  SECTION("204 and 304 carry no body and no framing headers") {
    for (int status : {204, 304}) {
      INFO("status " << status);
      fa::ResponseState rs;
      rs.reset(false, true, false);
      const Written w = write_head(rs, status, {{"x", "y"}}, d, date);
      REQUIRE(w.error == nullptr);
      char scratch[64];
      CHECK(w.out == std::string(fa::status_line(status, scratch)) + "x: y\r\n\r\n");
      CHECK(frame(rs, "body", false).empty());
      CHECK(rs.complete());
    }
  }
  SECTION("HTTP/1.0 without a length: close-delimited, connection: close") {
    fa::ResponseState rs;
    rs.reset(false, false, true);
    const Written w = write_head(rs, 200, {{"content-type", "text/plain"}}, d, date);
    REQUIRE(w.error == nullptr);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n");
    CHECK(frame(rs, "part1", true) == "part1");
    CHECK(frame(rs, "part2", false) == "part2");
    CHECK_FALSE(rs.keep_alive());
  }
  SECTION("HTTP/1.0 keep-alive request without a length: close-delimited, so keep-alive is dropped") {
    fa::ResponseState rs;
    rs.reset(false, true, true);
    const Written w = write_head(rs, 200, {}, d, date);
    CHECK(w.out == "HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n");
    CHECK_FALSE(rs.keep_alive());
  }
  SECTION("HTTP/1.0 keep-alive request with a length: connection: keep-alive") {
    fa::ResponseState rs;
    rs.reset(false, true, true);
    const Written w = write_head(rs, 200, {{"content-length", "2"}}, d, date);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\n");
    CHECK(rs.keep_alive());
    CHECK(frame(rs, "ok", false) == "ok");
  }
  SECTION("HTTP/1.1 request with Connection: close: the response says so") {
    fa::ResponseState rs;
    rs.reset(false, false, false);
    const Written w = write_head(rs, 200, {{"content-length", "0"}}, d, date);
    CHECK(w.out == "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
  }
  SECTION("the app's own Connection: close ends keep-alive and is not duplicated") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"Connection", "close"}, {"content-length", "0"}}, d, date);
    CHECK(w.out == "HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 0\r\n\r\n");
    CHECK_FALSE(rs.keep_alive());
  }
  SECTION("a keep-alive response says nothing about the connection") {
    fa::ResponseState rs;
    rs.reset(false, true, false);
    const Written w = write_head(rs, 200, {{"content-length", "0"}}, d, date);
    CHECK(w.out.find("connection") == std::string::npos);
    CHECK(rs.keep_alive());
    CHECK(frame(rs, "", false).empty());
    CHECK(rs.complete());
  }
}

TEST_CASE("response: Content-Length enforcement", "[response]") {
  fa::DateCache date;
  const fa::ResponseDefaults d = no_defaults();
  fa::ResponseState rs;
  rs.reset(false, true, false);
  REQUIRE(write_head(rs, 200, {{"content-length", "4"}}, d, date).error == nullptr);

  SECTION("longer than Content-Length in one piece") {
    const char* err = nullptr;
    frame(rs, "12345", true, &err);
    REQUIRE(err != nullptr);
    CHECK(std::string(err) == "Response content longer than Content-Length");
  }
  SECTION("longer than Content-Length across pieces") {
    const char* err = nullptr;
    CHECK(frame(rs, "123", true, &err) == "123");
    CHECK(err == nullptr);
    frame(rs, "45", false, &err);
    REQUIRE(err != nullptr);
    CHECK(std::string(err) == "Response content longer than Content-Length");
  }
  SECTION("shorter than Content-Length at the end") {
    const char* err = nullptr;
    CHECK(frame(rs, "12", true, &err) == "12");
    frame(rs, "", false, &err);
    REQUIRE(err != nullptr);
    CHECK(std::string(err) == "Response content shorter than Content-Length");
    CHECK_FALSE(rs.complete());
  }
  SECTION("exact length in pieces, then an empty final message") {
    const char* err = nullptr;
    CHECK(frame(rs, "12", true, &err) == "12");
    CHECK(frame(rs, "34", true, &err) == "34");
    CHECK(frame(rs, "", false, &err).empty());
    CHECK(err == nullptr);
    CHECK(rs.complete());
  }
}

TEST_CASE("response: default header block and date header come right after the status line", "[response]") {
  fa::DateCache date;
  fa::ResponseDefaults d;
  d.header_block = "server: fasterapi-asgi\r\nx-default: 1\r\n";
  d.date_header = true;
  fa::ResponseState rs;
  rs.reset(false, true, false);
  const Written w = write_head(rs, 201, {{"content-length", "0"}}, d, date);
  REQUIRE(w.error == nullptr);
  const std::string prefix = "HTTP/1.1 201 Created\r\nserver: fasterapi-asgi\r\nx-default: 1\r\ndate: ";
  REQUIRE(w.out.compare(0, prefix.size(), prefix) == 0);
  const std::string rest = w.out.substr(prefix.size());
  REQUIRE(rest.size() == 29 + std::strlen("\r\ncontent-length: 0\r\n\r\n"));
  CHECK(is_imf_fixdate(rest.substr(0, 29)));
  CHECK(rest.substr(29) == "\r\ncontent-length: 0\r\n\r\n");

  SECTION("without the date header") {
    d.date_header = false;
    fa::ResponseState rs2;
    rs2.reset(false, true, false);
    const Written w2 = write_head(rs2, 200, {{"content-length", "0"}}, d, date);
    CHECK(w2.out == "HTTP/1.1 200 OK\r\nserver: fasterapi-asgi\r\nx-default: 1\r\ncontent-length: 0\r\n\r\n");
  }
}

TEST_CASE("response: write_error_response", "[response]") {
  fa::DateCache date;
  SECTION("without defaults") {
    std::string out = "before|";
    fa::write_error_response(out, 400, "Invalid HTTP request received.", "", false, no_defaults(), date);
    CHECK(out ==
          "before|HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 30\r\n"
          "connection: close\r\n\r\nInvalid HTTP request received.");
  }
  SECTION("with a server header and the date") {
    fa::ResponseDefaults d;
    d.header_block = "server: x\r\n";
    std::string out;
    fa::write_error_response(out, 431, "Request header fields too large.", "", false, d, date);
    const std::string prefix = "HTTP/1.1 431 Request Header Fields Too Large\r\nserver: x\r\ndate: ";
    REQUIRE(out.compare(0, prefix.size(), prefix) == 0);
    CHECK(is_imf_fixdate(out.substr(prefix.size(), 29)));
    CHECK(out.substr(prefix.size() + 29) ==
          "\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 32\r\nconnection: close\r\n\r\n"
          "Request header fields too large.");
  }
}

TEST_CASE("response: write_error_response for HEAD and with extra headers", "[response]") {
  fa::DateCache date;
  SECTION("HEAD: the head as for GET, no body ever") {
    std::string out;
    fa::write_error_response(out, 500, "Internal Server Error", "", true, no_defaults(), date);
    CHECK(out ==
          "HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 21\r\n"
          "connection: close\r\n\r\n");
  }
  SECTION("extra headers go before the framing headers") {
    std::string out;
    fa::write_error_response(out, 405, "x", "allow: GET\r\n", false, no_defaults(), date);
    CHECK(out ==
          "HTTP/1.1 405 Method Not Allowed\r\nallow: GET\r\ncontent-type: text/plain; charset=utf-8\r\n"
          "content-length: 1\r\nconnection: close\r\n\r\nx");
  }
  SECTION("an unknown status falls back to 500") {
    std::string out;
    fa::write_error_response(out, 42, "", "", false, no_defaults(), date);
    CHECK(out.rfind("HTTP/1.1 500 Internal Server Error\r\n", 0) == 0);
  }
}

TEST_CASE("response: a refused head leaves no state behind", "[response]") {
  fa::DateCache date;
  fa::ResponseDefaults d = no_defaults();
  fa::ResponseState rs;
  rs.reset(false, true, false);
  std::string out = "kept|";
  const std::string_view names[] = {"content-length", "content-length"};
  const std::string_view values[] = {"5", "6"};
  CHECK(rs.write_head(out, 200, names, values, 2, d, date) != nullptr);
  CHECK(out == "kept|");
  CHECK_FALSE(rs.started());
  // The server's own answer (what the bindings send after the app's failed start) goes out whole.
  const std::string_view n2[] = {"content-length"};
  const std::string_view v2[] = {"21"};
  REQUIRE(rs.write_head(out, 500, n2, v2, 1, d, date) == nullptr);
  bool emit = false;
  std::string_view suffix;
  REQUIRE(rs.frame_body(out, 21, false, &emit, &suffix) == nullptr);
  CHECK(emit);
  CHECK(out == "kept|HTTP/1.1 500 Internal Server Error\r\ncontent-length: 21\r\n\r\n");
}

TEST_CASE("response: header_error is the one check for outside headers", "[response]") {
  CHECK(fa::header_error("x-ok", "fine") == nullptr);
  CHECK(fa::header_error("bad name", "v") != nullptr);
  CHECK(fa::header_error("x", "a\r\nb") != nullptr);
}
