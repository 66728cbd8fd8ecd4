// The IMF-fixdate for the `date` response header, formatted at most once per second.
#pragma once

#include <ctime>
#include <string_view>

namespace fa {

class DateCache {
 public:
  // Returns "Thu, 26 Nov 2026 06:19:50 GMT" for the current second. The view stays valid until the next call.
  std::string_view now() { return at(std::time(nullptr)); }
  // Same for a given time; exposed for tests.
  std::string_view at(std::time_t t);

 private:
  std::time_t cached_ = -1;
  char buf_[32] = {};
  std::size_t len_ = 0;
};

}  // namespace fa
