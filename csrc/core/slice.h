// A non-owning {base, len} view, used for every span into a read buffer or arena.
#pragma once

#include <cstddef>
#include <cstring>
#include <string_view>

namespace fa {

struct Span {
  // Offsets into an arena rather than pointers: the arena may grow (and move) while a request is parsed.
  std::size_t off = 0;
  std::size_t len = 0;
};

inline bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

}  // namespace fa
