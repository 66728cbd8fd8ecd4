// RequestParser, data-driven: data/parser_cases.txt lists request bytes and the requests (or the error status) they
// must produce. Every case runs in four feeding modes that must all give the same result: the whole input in one
// execute(), one byte per execute(), the whole input with the listener pausing at every callback (then resume() and
// execute() the rest, as Connection does), and one byte per execute() with pauses.
#include <llhttp.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/parser.h"

namespace {

struct Req {
  std::string method, url, target, path, query, version;
  bool keep_alive = true, expect_continue = false, has_body = false, upgrade = false, complete = true;
  std::vector<std::string> headers;  // "name: value"
  std::string body;
};

std::string describe(const Req& r) {
  std::ostringstream o;
  o << r.method << " url=[" << r.url << "] target=[" << r.target << "] path=[" << r.path << "] query=[" << r.query
    << "] HTTP/" << r.version << " keep_alive=" << r.keep_alive << " expect_continue=" << r.expect_continue
    << " has_body=" << r.has_body << " upgrade=" << r.upgrade << " complete=" << r.complete << "\n";
  for (const auto& h : r.headers) o << "  header [" << h << "]\n";
  o << "  body [" << r.body << "] (" << r.body.size() << " bytes)";
  return o.str();
}

bool same(const Req& a, const Req& b) {
  return a.method == b.method && a.url == b.url && a.target == b.target && a.path == b.path && a.query == b.query &&
         a.version == b.version && a.keep_alive == b.keep_alive && a.expect_continue == b.expect_continue &&
         a.has_body == b.has_body && a.upgrade == b.upgrade && a.complete == b.complete && a.headers == b.headers &&
         a.body == b.body;
}

struct Outcome {
  std::vector<Req> requests;
  std::string result;  // "ok", "incomplete", "upgrade", "error <status>"
};

// The data cases are about framing: the Host rule is off unless a case turns it on (`limit require_host 1`).
fa::ParserLimits framing_limits() {
  fa::ParserLimits l;
  l.require_host = false;
  return l;
}

struct Case {
  std::string name;
  int line = 0;
  fa::ParserLimits limits = framing_limits();
  std::string input;
  Outcome expected;
};

// ---- the data file -------------------------------------------------------------------------------------------

std::string unescape(const std::string& s, const std::string& where) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\') {
      out += s[i];
      continue;
    }
    if (++i >= s.size()) throw std::runtime_error(where + ": dangling backslash");
    switch (s[i]) {
      case 'r': out += '\r'; break;
      case 'n': out += '\n'; break;
      case 't': out += '\t'; break;
      case '0': out += '\0'; break;
      case 's': out += ' '; break;  // a visible space, for values ending in one
      case '\\': out += '\\'; break;
      case 'x': {
        if (i + 2 >= s.size()) throw std::runtime_error(where + ": bad \\x escape");
        out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
        i += 2;
        break;
      }
      default: throw std::runtime_error(where + ": unknown escape \\" + s[i]);
    }
  }
  return out;
}

bool parse_bool(const std::string& v, const std::string& where) {
  if (v == "1" || v == "true") return true;
  if (v == "0" || v == "false") return false;
  throw std::runtime_error(where + ": expected 0 or 1, got '" + v + "'");
}

// Fills the defaults of a request expectation: version 1.1, target = path[?query], url = target.
void finish_request(Req& r, bool target_set, bool url_set) {
  if (!target_set) r.target = r.query.empty() ? r.path : r.path + "?" + r.query;
  if (!url_set) r.url = r.target;
}

std::vector<Case> load_cases(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + file);
  std::vector<Case> cases;
  std::string line;
  int lineno = 0;
  Req* req = nullptr;
  bool target_set = false, url_set = false;
  auto close_request = [&] {
    if (req != nullptr) finish_request(*req, target_set, url_set);
    req = nullptr;
  };
  while (std::getline(in, line)) {
    ++lineno;
    const std::string where = file + ":" + std::to_string(lineno);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("=== ", 0) == 0) {
      close_request();
      cases.push_back(Case{});
      cases.back().name = line.substr(4);
      cases.back().line = lineno;
      cases.back().expected.result = "ok";
      continue;
    }
    if (cases.empty()) throw std::runtime_error(where + ": content before the first '=== name'");
    Case& c = cases.back();
    if (line.rfind("> ", 0) == 0 || line == ">") {
      c.input += unescape(line.size() > 2 ? line.substr(2) : "", where);
      continue;
    }
    const auto sp = line.find(' ');
    const std::string key = line.substr(0, sp);
    const std::string value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (key == "*") {  // "* N text": append text N times
      const auto sp2 = value.find(' ');
      const int n = std::stoi(value.substr(0, sp2));
      const std::string text = unescape(value.substr(sp2 + 1), where);
      for (int i = 0; i < n; ++i) c.input += text;
    } else if (key == "limit") {
      std::istringstream v(value);
      std::string which;
      std::size_t n = 0;
      v >> which >> n;
      if (which == "max_header_bytes") c.limits.max_header_bytes = n;
      else if (which == "max_url_bytes") c.limits.max_url_bytes = n;
      else if (which == "max_headers") c.limits.max_headers = n;
      else if (which == "require_host") c.limits.require_host = n != 0;
      else throw std::runtime_error(where + ": unknown limit " + which);
    } else if (key == "request") {
      close_request();
      c.expected.requests.push_back(Req{});
      req = &c.expected.requests.back();
      req->version = "1.1";
      target_set = url_set = false;
    } else if (key == "result") {
      close_request();
      c.expected.result = value;
    } else {
      if (req == nullptr) throw std::runtime_error(where + ": '" + key + "' outside a request block");
      const std::string v = unescape(value, where);
      if (key == "method") req->method = v;
      else if (key == "url") { req->url = v; url_set = true; }
      else if (key == "target") { req->target = v; target_set = true; }
      else if (key == "path") req->path = v;
      else if (key == "query") req->query = v;
      else if (key == "version") req->version = v;
      else if (key == "keep_alive") req->keep_alive = parse_bool(v, where);
      else if (key == "expect_continue") req->expect_continue = parse_bool(v, where);
      else if (key == "has_body") req->has_body = parse_bool(v, where);
      else if (key == "upgrade") req->upgrade = parse_bool(v, where);
      else if (key == "complete") req->complete = parse_bool(v, where);
      else if (key == "header") req->headers.push_back(v);
      else if (key == "body") req->body += v;
      else if (key == "body*") {  // "body* N text"
        const auto sp2 = value.find(' ');
        const int n = std::stoi(value.substr(0, sp2));
        const std::string text = unescape(value.substr(sp2 + 1), where);
        for (int i = 0; i < n; ++i) req->body += text;
      } else throw std::runtime_error(where + ": unknown key '" + key + "'");
    }
  }
  close_request();
  return cases;
}

// ---- running one case ------------------------------------------------------------------------------------------

class Recorder final : public fa::ParserListener {
 public:
  explicit Recorder(bool pause) : pause_(pause) {}
  std::vector<Req> requests;
  int begins = 0;
  int pauses = 0;

  void on_request_begin() override { ++begins; }
  int on_request_head(fa::RequestHead& h) override {
    Req r;
    r.method = llhttp_method_name(static_cast<llhttp_method_t>(h.method));
    r.url = std::string(h.url_view());
    r.target = std::string(h.target_view());
    r.path = std::string(h.path_view());
    r.query = std::string(h.query_view());
    r.version = std::to_string(h.http_major) + "." + std::to_string(h.http_minor);
    r.keep_alive = h.keep_alive;
    r.expect_continue = h.expect_continue;
    r.has_body = h.has_body;
    r.upgrade = h.upgrade;
    r.complete = false;
    for (const auto& kv : h.headers) r.headers.push_back(std::string(h.str(kv.first)) + ": " + std::string(h.str(kv.second)));
    requests.push_back(std::move(r));
    return verdict();
  }
  int on_request_body(const char* data, std::size_t len) override {
    if (len == 0) {
      // Not a body byte: an empty span would wake the app for nothing (and a listener that pauses on it would
      // never make progress). Counted, reported as a failure, and not paused on.
      ++empty_bodies;
      return kContinue;
    }
    if (requests.empty()) {
      body_without_head = true;
      return kContinue;
    }
    requests.back().body.append(data, len);
    return verdict();
  }
  int on_request_complete() override {
    if (requests.empty()) {
      body_without_head = true;
      return kContinue;
    }
    requests.back().complete = true;
    return verdict();
  }
  bool body_without_head = false;
  int empty_bodies = 0;

 private:
  int verdict() {
    if (!pause_) return kContinue;
    ++pauses;
    return kPause;
  }
  bool pause_;
};

// Feeds [data, data+len) like Connection::process/resume: on a pause, resume() and execute() the rest, even when
// nothing is left (llhttp may still owe on_message_complete). Returns false once the parse ended (error/upgrade).
bool feed(fa::RequestParser& p, const char* data, std::size_t len, std::string* result) {
  for (int guard = 0; guard < 1000000; ++guard) {
    const fa::ParseResult r = p.execute(data, len);
    switch (r.kind) {
      case fa::ParseResult::kOk:
        if (r.consumed != len) {
          *result = "kOk consumed " + std::to_string(r.consumed) + " of " + std::to_string(len);
          return false;
        }
        return true;
      case fa::ParseResult::kPaused:
        if (r.consumed > len) {
          *result = "kPaused consumed more than given";
          return false;
        }
        p.resume();
        data += r.consumed;
        len -= r.consumed;
        continue;
      case fa::ParseResult::kUpgrade:
        *result = "upgrade";
        return false;
      case fa::ParseResult::kError:
        *result = "error " + std::to_string(r.status);
        if (r.reason == nullptr || *r.reason == '\0') *result += " (no reason)";
        return false;
    }
  }
  *result = "feed did not terminate";
  return false;
}

Outcome run(const Case& c, bool bytewise, bool pause, int* pauses) {
  Recorder rec(pause);
  fa::RequestParser parser(&rec, &c.limits);
  std::string result;
  bool alive = true;
  if (bytewise) {
    for (std::size_t i = 0; i < c.input.size() && alive; ++i) alive = feed(parser, c.input.data() + i, 1, &result);
  } else {
    alive = feed(parser, c.input.data(), c.input.size(), &result);
  }
  if (alive) {
    const fa::ParseResult fin = parser.finish();
    result = fin.kind == fa::ParseResult::kOk ? "ok" : fin.status == 400 ? "incomplete" : "finish " + std::to_string(fin.status);
  }
  if (rec.body_without_head) result += " (body/complete callback without a head)";
  if (rec.empty_bodies > 0) result += " (+" + std::to_string(rec.empty_bodies) + " zero-length on_request_body calls)";
  *pauses = rec.pauses;
  return Outcome{std::move(rec.requests), result};
}

std::string cases_file() { return std::string(FA_TEST_DATA_DIR) + "/parser_cases.txt"; }

}  // namespace

TEST_CASE("parser: data-driven cases, in every feeding mode", "[parser]") {
  const std::vector<Case> cases = load_cases(cases_file());
  REQUIRE(cases.size() >= 40);
  struct Mode {
    const char* name;
    bool bytewise, pause;
  };
  const Mode modes[] = {{"whole", false, false}, {"byte-by-byte", true, false}, {"whole+pause", false, true},
                        {"byte-by-byte+pause", true, true}};
  for (const Case& c : cases) {
    for (const Mode& m : modes) {
      INFO("case '" << c.name << "' (" << cases_file() << ":" << c.line << "), mode " << m.name);
      int pauses = 0;
      const Outcome got = run(c, m.bytewise, m.pause, &pauses);
      CHECK(got.result == c.expected.result);
      CHECK(got.requests.size() == c.expected.requests.size());
      const std::size_t n = std::min(got.requests.size(), c.expected.requests.size());
      for (std::size_t i = 0; i < n; ++i) {
        INFO("request #" << i << "\n expected: " << describe(c.expected.requests[i])
                         << "\n got:      " << describe(got.requests[i]));
        CHECK(same(got.requests[i], c.expected.requests[i]));
      }
      for (std::size_t i = n; i < got.requests.size(); ++i) INFO("unexpected request: " << describe(got.requests[i]));
      if (m.pause && !c.expected.requests.empty()) CHECK(pauses > 0);
    }
  }
}

TEST_CASE("parser: the data file's own syntax is understood", "[parser]") {
  // Guards the test harness itself: a broken unescape would make every case meaningless.
  REQUIRE(unescape("a\\r\\n\\t\\x41\\\\\\s", "t") == std::string("a\r\n\tA\\ "));
  REQUIRE(unescape("\\0", "t") == std::string(1, '\0'));
  REQUIRE_THROWS(unescape("\\q", "t"));
}

TEST_CASE("parser: a pause in on_request_head leaves the body for after resume()", "[parser]") {
  // The exact protocol Connection relies on: execute() stops right after the head, reports how much it consumed,
  // and the rest (body + next pipelined request) is parsed after resume().
  struct L final : fa::ParserListener {
    std::string log;
    void on_request_begin() override { log += "B"; }
    int on_request_head(fa::RequestHead& h) override {
      log += "H(" + std::string(h.path_view()) + ")";
      return kPause;
    }
    int on_request_body(const char* d, std::size_t n) override {
      log += "D(" + std::string(d, n) + ")";
      return kContinue;
    }
    int on_request_complete() override {
      log += "C";
      return kContinue;
    }
  } l;
  fa::ParserLimits limits = framing_limits();
  fa::RequestParser p(&l, &limits);
  const std::string in =
      "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\n\r\n";
  fa::ParseResult r = p.execute(in.data(), in.size());
  REQUIRE(r.kind == fa::ParseResult::kPaused);
  const std::size_t head_len = in.find("hello");
  REQUIRE(r.consumed == head_len);
  REQUIRE(l.log == "BH(/a)");
  REQUIRE(p.message_in_progress());
  p.resume();
  r = p.execute(in.data() + head_len, in.size() - head_len);
  // The second request's head pauses again.
  REQUIRE(r.kind == fa::ParseResult::kPaused);
  REQUIRE(l.log == "BH(/a)D(hello)CBH(/b)");
  REQUIRE(head_len + r.consumed == in.size());
  p.resume();
  r = p.execute(in.data() + in.size(), 0);
  REQUIRE(r.kind == fa::ParseResult::kOk);
  REQUIRE(l.log == "BH(/a)D(hello)CBH(/b)C");
  REQUIRE_FALSE(p.message_in_progress());
  REQUIRE(p.finish().kind == fa::ParseResult::kOk);
}

TEST_CASE("parser: a pause on the last body bytes still delivers on_request_complete after resume", "[parser]") {
  struct L final : fa::ParserListener {
    int completes = 0;
    std::string body;
    void on_request_begin() override {}
    int on_request_head(fa::RequestHead&) override { return kContinue; }
    int on_request_body(const char* d, std::size_t n) override {
      body.append(d, n);
      return kPause;
    }
    int on_request_complete() override {
      ++completes;
      return kContinue;
    }
  } l;
  fa::ParserLimits limits = framing_limits();
  fa::RequestParser p(&l, &limits);
  const std::string in = "POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
  fa::ParseResult r = p.execute(in.data(), in.size());
  REQUIRE(r.kind == fa::ParseResult::kPaused);
  REQUIRE(r.consumed == in.size());
  REQUIRE(l.body == "abc");
  REQUIRE(l.completes == 0);
  p.resume();
  r = p.execute(in.data() + in.size(), 0);  // what Http1Session::resume() does with an empty buffer
  REQUIRE(r.kind == fa::ParseResult::kOk);
  REQUIRE(l.completes == 1);
  REQUIRE_FALSE(p.message_in_progress());
}

TEST_CASE("parser: the arena and header vector keep their capacity across requests", "[parser]") {
  // Steady-state allocation freedom of the parser: RequestHead::clear() must not release memory.
  struct L final : fa::ParserListener {
    void on_request_begin() override {}
    int on_request_head(fa::RequestHead&) override { return kContinue; }
    int on_request_body(const char*, std::size_t) override { return kContinue; }
    int on_request_complete() override { return kContinue; }
  } l;
  fa::ParserLimits limits = framing_limits();
  fa::RequestParser p(&l, &limits);
  const std::string in = "GET /some/long/path/to/grow/the/arena HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\n\r\n";
  REQUIRE(p.execute(in.data(), in.size()).kind == fa::ParseResult::kOk);
  const std::size_t arena_cap = p.head().arena.capacity();
  const std::size_t headers_cap = p.head().headers.capacity();
  const char* arena_data = p.head().arena.data();
  for (int i = 0; i < 10; ++i) REQUIRE(p.execute(in.data(), in.size()).kind == fa::ParseResult::kOk);
  CHECK(p.head().arena.capacity() == arena_cap);
  CHECK(p.head().headers.capacity() == headers_cap);
  CHECK(p.head().arena.data() == arena_data);
  CHECK(p.head().header("host") == "example.com");
}

TEST_CASE("parser: no zero-length on_request_body after a pause mid-body", "[parser]") {
  // Http1Session::resume() re-runs execute() on what is buffered, possibly nothing. llhttp then reports the still-open
  // body span as an empty on_body; the parser must not forward that: the bindings would wake the ASGI app with an
  // empty `http.request` chunk (and take the GIL) for every pause.
  struct L final : fa::ParserListener {
    std::vector<std::size_t> bodies;
    void on_request_begin() override {}
    int on_request_head(fa::RequestHead&) override { return kContinue; }
    int on_request_body(const char*, std::size_t n) override {
      bodies.push_back(n);
      return kPause;
    }
    int on_request_complete() override { return kContinue; }
  } l;
  fa::ParserLimits limits = framing_limits();
  fa::RequestParser p(&l, &limits);
  const std::string head = "POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
  REQUIRE(p.execute(head.data(), head.size()).kind == fa::ParseResult::kOk);
  const std::string body = "abcd";
  fa::ParseResult r = p.execute(body.data(), 1);  // one body byte arrives; the app pauses reading
  REQUIRE(r.kind == fa::ParseResult::kPaused);
  REQUIRE(r.consumed == 1);
  p.resume();
  r = p.execute(body.data() + 1, 0);  // resume() with nothing buffered
  CHECK(r.kind == fa::ParseResult::kOk);
  CHECK(l.bodies == std::vector<std::size_t>{1});
}

TEST_CASE("parser: chunked trailer fields are not merged into the request headers", "[parser]") {
  // RFC 9110 6.5.1: trailer fields must not be merged into the header section. Native handlers read c.head() when
  // the request is complete, so whatever the parser appended from the trailer section would show up as headers
  // (a client could add e.g. `authorization` or `content-type` after the fact) and count against the header limits.
  struct L final : fa::ParserListener {
    std::size_t at_head = 0, at_complete = 0;
    std::string content_type_at_complete;
    fa::RequestParser* parser = nullptr;
    void on_request_begin() override {}
    int on_request_head(fa::RequestHead& h) override {
      at_head = h.headers.size();
      return kContinue;
    }
    int on_request_body(const char*, std::size_t) override { return kContinue; }
    int on_request_complete() override {
      at_complete = parser->head().headers.size();
      content_type_at_complete = std::string(parser->head().header("content-type"));
      return kContinue;
    }
  } l;
  fa::ParserLimits limits = framing_limits();
  fa::RequestParser p(&l, &limits);
  l.parser = &p;
  const std::string in =
      "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nContent-Type: text/evil\r\n\r\n";
  REQUIRE(p.execute(in.data(), in.size()).kind == fa::ParseResult::kOk);
  CHECK(l.at_head == 1);
  CHECK(l.at_complete == 1);
  CHECK(l.content_type_at_complete == "");
}
