// core/strings.h: the list and comparison helpers every layer uses for header values.
#include <string>
#include <vector>

#include "catch_compat.h"
#include "core/strings.h"

TEST_CASE("strings: ascii_iequals and trim_ows", "[strings]") {
  CHECK(fa::ascii_iequals("Content-Length", "content-length"));
  CHECK_FALSE(fa::ascii_iequals("content-length", "content-lengt"));
  CHECK_FALSE(fa::ascii_iequals("a", "b"));
  CHECK(fa::trim_ows(" \t x y\t ") == "x y");
  CHECK(fa::trim_ows("\r x") == "\r x");  // only SP and HTAB are optional whitespace
  CHECK(fa::trim_ows("").empty());
}

TEST_CASE("strings: for_each_list_item visits every trimmed item, empty ones included", "[strings]") {
  std::vector<std::string> items;
  auto collect = [&](std::string_view v) {
    items.clear();
    fa::for_each_list_item(v, [&](std::string_view item) {
      items.emplace_back(item);
      return false;
    });
    return items;
  };
  CHECK(collect("a, b ,c") == std::vector<std::string>{"a", "b", "c"});
  CHECK(collect("a,,b") == std::vector<std::string>{"a", "", "b"});
  CHECK(collect("") == std::vector<std::string>{""});
  CHECK(collect(" x ") == std::vector<std::string>{"x"});
  CHECK(collect("a,") == std::vector<std::string>{"a", ""});
}

TEST_CASE("strings: list_has_token", "[strings]") {
  CHECK(fa::list_has_token("keep-alive, Upgrade", "upgrade"));
  CHECK(fa::list_has_token("gzip, chunked", "chunked"));
  CHECK_FALSE(fa::list_has_token("chunkedx", "chunked"));
  CHECK_FALSE(fa::list_has_token("", "close"));
  CHECK(fa::list_has_token(" close ", "close"));
}

TEST_CASE("strings: ascii_lower_inplace lowercases A-Z only, at every length and offset", "[strings]") {
  // Every byte value, at every alignment and length (the SWAR body and the byte tail both).
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  for (std::size_t off = 0; off < 9; ++off) {
    for (std::size_t len = 0; off + len <= all.size(); len += (len < 20 ? 1 : 37)) {
      std::string got = all;
      fa::ascii_lower_inplace(&got[off], len);
      for (std::size_t i = 0; i < all.size(); ++i) {
        const bool inside = i >= off && i < off + len;
        const char want = inside ? fa::ascii_lower(all[i]) : all[i];
        if (got[i] != want) FAIL("byte " << i << " off " << off << " len " << len);
      }
    }
  }
  std::string name = "X-Forwarded-For: Content-TYPE@[Z`a{";
  fa::ascii_lower_inplace(name.data(), name.size());
  CHECK(name == "x-forwarded-for: content-type@[z`a{");
}
