// Small string helpers shared by every layer: offsets into an arena, ASCII case-insensitive comparison, and
// comma-separated header lists (RFC 9110 section 5.6.1). No allocation, no locale.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace fa {

// A span of an arena held as {offset, length} rather than {pointer, length}: the arena (a std::string) may grow,
// and so move, while a request head is still being parsed.
struct Span {
  std::size_t off = 0;
  std::size_t len = 0;
};

inline char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c; }

// ascii_lower() over `n` bytes in place, eight at a time (SWAR): a request's header names are lowercased as they
// are parsed, and byte by byte that was the parser's largest callback. Bytes >= 0x80 are left as they are.
inline void ascii_lower_inplace(char* p, std::size_t n) {
  constexpr std::uint64_t kOnes = 0x0101010101010101ull;
  constexpr std::uint64_t kHigh = 0x8080808080808080ull;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t x;
    std::memcpy(&x, p, 8);
    const std::uint64_t low7 = x & ~kHigh;
    // Per byte: the high bit of (b + 0x80 - 'A') is set when b >= 'A', that of (b + 0x80 - 'Z' - 1) when b > 'Z';
    // neither sum carries into the next byte (b < 0x80 here). Upper case: the first set, the second clear, and the
    // byte itself below 0x80.
    const std::uint64_t ge_a = low7 + (0x80 - 'A') * kOnes;
    const std::uint64_t gt_z = low7 + (0x80 - 'Z' - 1) * kOnes;
    const std::uint64_t upper = (ge_a & ~gt_z) & ~x & kHigh;
    x |= upper >> 2;  // 0x80 >> 2 == 0x20, the case bit
    std::memcpy(p, &x, 8);
  }
  for (; n > 0; ++p, --n) *p = ascii_lower(*p);
}

inline bool ascii_iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i)
    if (ascii_lower(a[i]) != ascii_lower(b[i])) return false;
  return true;
}

// `v` without leading and trailing optional whitespace (SP and HTAB).
inline std::string_view trim_ows(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  return v;
}

// Calls fn(item) for every element of a comma-separated list, trimmed of OWS, empty elements included (as they
// stand in the value), until fn returns true. Returns whether some call returned true.
template <class Fn>
bool for_each_list_item(std::string_view list, Fn&& fn) {
  std::size_t start = 0;
  while (start <= list.size()) {
    std::size_t end = list.find(',', start);
    if (end == std::string_view::npos) end = list.size();
    if (fn(trim_ows(list.substr(start, end - start)))) return true;
    start = end + 1;
  }
  return false;
}

// `s` as an unsigned decimal: digits only (no sign, no spaces), at most 19 of them (no overflow). False otherwise.
inline bool parse_decimal_u64(std::string_view s, std::uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  std::uint64_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<std::uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

// Whether a comma-separated list holds `token` (ASCII case-insensitive), e.g. "close" in a Connection value.
inline bool list_has_token(std::string_view list, std::string_view token) {
  return for_each_list_item(list, [token](std::string_view item) { return ascii_iequals(item, token); });
}

}  // namespace fa
