#include "core/date_cache.h"

#include <cstdio>

namespace fa {

std::string_view DateCache::at(std::time_t t) {
  if (t != cached_) {
    static const char* const kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char* const kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                          "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    std::tm tm{};
    gmtime_r(&t, &tm);
    const int n = std::snprintf(buf_, sizeof buf_, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday],
                                tm.tm_mday, kMonths[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    len_ = n > 0 ? static_cast<std::size_t>(n) : 0;
    cached_ = t;
  }
  return std::string_view(buf_, len_);
}

}  // namespace fa
