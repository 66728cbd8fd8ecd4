// DateCache: IMF-fixdate (RFC 9110 5.6.7) for the date header, formatted at most once per second.
#include <ctime>
#include <string>

#include "catch_compat.h"
#include "core/date_cache.h"

TEST_CASE("date cache: exact IMF-fixdate for fixed timestamps", "[date]") {
  fa::DateCache dc;
  CHECK(dc.at(0) == "Thu, 01 Jan 1970 00:00:00 GMT");
  CHECK(dc.at(784111777) == "Sun, 06 Nov 1994 08:49:37 GMT");  // the example of RFC 9110
  CHECK(dc.at(951782400) == "Tue, 29 Feb 2000 00:00:00 GMT");  // leap day
  CHECK(dc.at(1234567890) == "Fri, 13 Feb 2009 23:31:30 GMT");
  CHECK(dc.at(2147483647) == "Tue, 19 Jan 2038 03:14:07 GMT");
  CHECK(dc.at(4102444799) == "Thu, 31 Dec 2099 23:59:59 GMT");
  CHECK(dc.at(1704067199) == "Sun, 31 Dec 2023 23:59:59 GMT");
  CHECK(dc.at(1704067200) == "Mon, 01 Jan 2024 00:00:00 GMT");
}

TEST_CASE("date cache: one formatting per second, a new one when the second changes", "[date]") {
  fa::DateCache dc;
  const std::string_view a = dc.at(784111777);
  const std::string copy(a);
  const std::string_view b = dc.at(784111777);
  CHECK(b.data() == a.data());
  CHECK(b == copy);
  const std::string_view c = dc.at(784111778);
  CHECK(c == "Sun, 06 Nov 1994 08:49:38 GMT");
  // Going back in time is a change too.
  CHECK(dc.at(784111777) == copy);
}

TEST_CASE("date cache: now() is the current second", "[date]") {
  fa::DateCache dc, reference;
  for (int attempt = 0; attempt < 5; ++attempt) {
    const std::time_t before = std::time(nullptr);
    const std::string got(dc.now());
    const std::time_t after = std::time(nullptr);
    if (before != after) continue;  // crossed a second boundary: try again
    CHECK(got == reference.at(before));
    return;
  }
  FAIL("could not sample now() within one second");
}
