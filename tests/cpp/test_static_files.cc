// Static files' pure logic (http/static_files.h): path splitting and its refusals, content types, validators,
// conditional requests, single byte ranges, Accept-Encoding.
#include <string>
#include <vector>

#include "catch_compat.h"
#include "http/static_files.h"

namespace {

std::vector<std::string> split(std::string_view rel, bool allow_hidden = false, bool* ok = nullptr,
                               bool* slash = nullptr) {
  std::vector<std::string> parts;
  bool trailing = false;
  const bool r = fa::static_split_path(rel, allow_hidden, &parts, &trailing);
  if (ok != nullptr) *ok = r;
  if (slash != nullptr) *slash = trailing;
  return parts;
}

bool refused(std::string_view rel, bool allow_hidden = false) {
  bool ok = true;
  split(rel, allow_hidden, &ok);
  return !ok;
}

}  // namespace

TEST_CASE("static path: components, decoding, trailing slash", "[static]") {
  bool ok = false;
  bool slash = true;
  CHECK(split("/css/app.css", false, &ok, &slash) == std::vector<std::string>{"css", "app.css"});
  CHECK(ok);
  CHECK_FALSE(slash);
  CHECK(split("/a//b/", false, &ok, &slash) == std::vector<std::string>{"a", "b"});
  CHECK((ok && slash));
  CHECK(split("", false, &ok, &slash).empty());
  CHECK((ok && !slash));
  CHECK(split("/space%20name.txt") == std::vector<std::string>{"space name.txt"});
  CHECK(split("/a%2Fb") == std::vector<std::string>{"a", "b"});  // an encoded "/" separates too
  // With hidden names allowed, only whole "." / ".." components are refused.
  CHECK(split("/..a/b..", true) == std::vector<std::string>{"..a", "b.."});
  CHECK(split("/a/b..") == std::vector<std::string>{"a", "b.."});
}

TEST_CASE("static path: traversal, NUL, backslash, hidden, bad escapes are refused", "[static]") {
  for (const char* rel : {"/..", "/../x", "/a/../../x", "/%2e%2e/x", "/%2E%2E/x", "/.%2e/x", "/%2e%2e%2fx",
                          "/a%2f..%2f..%2fx", "/./x", "/%2e/x", "/..%5cx", "/a\\b", "/x%00", "/%00",
                          "/%", "/%2", "/%zz", "/%g0", "/.hidden", "/.git/config", "/a/%2ehidden"}) {
    INFO(rel);
    CHECK(refused(rel));
  }
  CHECK(refused(std::string_view("/a\0b", 4)));
  CHECK_FALSE(refused("/.hidden", true));
  CHECK(refused("/..", true));  // allow_hidden never allows "." / ".."
  CHECK(refused("/.", true));
}

TEST_CASE("static content types", "[static]") {
  CHECK(fa::static_content_type("index.html") == "text/html; charset=utf-8");
  CHECK(fa::static_content_type("APP.JS") == "text/javascript; charset=utf-8");
  CHECK(fa::static_content_type("a.b.css") == "text/css; charset=utf-8");
  CHECK(fa::static_content_type("x.wasm") == "application/wasm");
  CHECK(fa::static_content_type("noext") == "application/octet-stream");
  CHECK(fa::static_content_type("trailing.") == "application/octet-stream");
  CHECK(fa::static_content_type("x.unknownext") == "application/octet-stream");
}

TEST_CASE("static validators and conditional requests", "[static]") {
  const std::string etag = fa::static_etag(255, 0x10);
  CHECK(etag == "\"ff-10\"");
  std::string date;
  fa::static_http_date(784111777, &date);
  CHECK(date == "Sun, 06 Nov 1994 08:49:37 GMT");
  std::time_t t = 0;
  REQUIRE(fa::static_parse_http_date(date, &t));
  CHECK(t == 784111777);
  CHECK_FALSE(fa::static_parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT", &t));
  CHECK_FALSE(fa::static_parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC", &t));
  CHECK_FALSE(fa::static_parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT", &t));
  CHECK_FALSE(fa::static_parse_http_date("Sun, 32 Nov 1994 08:49:37 GMT", &t));

  CHECK(fa::static_etag_matches(etag, etag));
  CHECK(fa::static_etag_matches("\"a\", W/" + etag, etag));
  CHECK(fa::static_etag_matches("*", etag));
  CHECK_FALSE(fa::static_etag_matches("\"ff-11\"", etag));
  CHECK_FALSE(fa::static_etag_matches("", etag));

  CHECK(fa::static_not_modified(etag, "", etag, 100));
  CHECK(fa::static_not_modified("", "Sun, 06 Nov 1994 08:49:37 GMT", etag, 784111777));
  CHECK_FALSE(fa::static_not_modified("", "Sun, 06 Nov 1994 08:49:36 GMT", etag, 784111777));
  CHECK_FALSE(fa::static_not_modified("", "garbage", etag, 1));
  // If-None-Match decides when present (RFC 9110 13.1.3), even if If-Modified-Since would say 304.
  CHECK_FALSE(fa::static_not_modified("\"other\"", "Sun, 06 Nov 1994 08:49:37 GMT", etag, 784111777));
}

TEST_CASE("static single ranges", "[static]") {
  using fa::RangeKind;
  std::uint64_t a = 0;
  std::uint64_t b = 0;
  auto range = [&](std::string_view h, std::uint64_t size) { return fa::static_parse_range(h, size, &a, &b); };
  CHECK(range("bytes=0-0", 100) == RangeKind::kSatisfiable);
  CHECK((a == 0 && b == 0));
  CHECK(range("bytes=10-", 100) == RangeKind::kSatisfiable);
  CHECK((a == 10 && b == 99));
  CHECK(range("bytes=90-1000", 100) == RangeKind::kSatisfiable);
  CHECK((a == 90 && b == 99));
  CHECK(range("bytes=-10", 100) == RangeKind::kSatisfiable);
  CHECK((a == 90 && b == 99));
  CHECK(range("bytes=-1000", 100) == RangeKind::kSatisfiable);
  CHECK((a == 0 && b == 99));
  CHECK(range("BYTES = 99-99", 100) == RangeKind::kNone);  // "bytes=" exactly (no space before "=")
  CHECK(range("Bytes=99-99", 100) == RangeKind::kSatisfiable);
  CHECK((a == 99 && b == 99));
  CHECK(range("bytes=100-", 100) == RangeKind::kUnsatisfiable);
  CHECK(range("bytes=-0", 100) == RangeKind::kUnsatisfiable);
  CHECK(range("bytes=0-", 0) == RangeKind::kUnsatisfiable);
  CHECK(range("bytes=-5", 0) == RangeKind::kUnsatisfiable);
  for (const char* h : {"", "items=0-5", "bytes=", "bytes=5", "bytes=5-2", "bytes=a-b", "bytes=0-1,5-9",
                        "bytes=-", "bytes=99999999999999999999-", "bytes=+1-2"}) {
    INFO(h);
    CHECK(range(h, 100) == RangeKind::kNone);
  }
}

TEST_CASE("static Accept-Encoding", "[static]") {
  CHECK(fa::static_accepts_encoding("gzip, br", "br"));
  CHECK(fa::static_accepts_encoding("GZIP;q=0.5", "gzip"));
  CHECK_FALSE(fa::static_accepts_encoding("br;q=0, gzip", "br"));
  CHECK_FALSE(fa::static_accepts_encoding("br;q=0.000", "br"));
  CHECK(fa::static_accepts_encoding("br;q=0.001", "br"));
  CHECK_FALSE(fa::static_accepts_encoding("brotli, xgzip", "br"));
  CHECK_FALSE(fa::static_accepts_encoding("", "gzip"));
}
