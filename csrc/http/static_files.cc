#include "http/static_files.h"

#include <cstring>

#include "core/strings.h"

namespace fa {

namespace {

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

struct TypeEntry {
  const char* ext;
  const char* type;
};
// Python's mimetypes for these extensions (what Starlette's StaticFiles sends), text/* with the charset Starlette
// adds. Looked up case-insensitively, as mimetypes does.
constexpr TypeEntry kTypes[] = {
    {"html", "text/html; charset=utf-8"},
    {"htm", "text/html; charset=utf-8"},
    {"css", "text/css; charset=utf-8"},
    {"js", "text/javascript; charset=utf-8"},
    {"mjs", "text/javascript; charset=utf-8"},
    {"json", "application/json"},
    {"txt", "text/plain; charset=utf-8"},
    {"csv", "text/csv; charset=utf-8"},
    {"xml", "text/xml; charset=utf-8"},
    {"svg", "image/svg+xml"},
    {"png", "image/png"},
    {"jpg", "image/jpeg"},
    {"jpeg", "image/jpeg"},
    {"gif", "image/gif"},
    {"webp", "image/webp"},
    {"ico", "image/vnd.microsoft.icon"},
    {"woff", "font/woff"},
    {"woff2", "font/woff2"},
    {"ttf", "font/ttf"},
    {"otf", "font/otf"},
    {"wasm", "application/wasm"},
    {"pdf", "application/pdf"},
    {"zip", "application/zip"},
    {"gz", "application/gzip"},
    {"tar", "application/x-tar"},
    {"bin", "application/octet-stream"},
    {"mp4", "video/mp4"},
    {"webm", "video/webm"},
    {"mp3", "audio/mpeg"},
};

constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

}  // namespace

bool static_split_path(std::string_view rel, bool allow_hidden, std::vector<std::string>* components,
                       bool* trailing_slash) {
  components->clear();
  *trailing_slash = !rel.empty() && rel.back() == '/';
  std::string cur;
  auto end_component = [&]() -> bool {
    if (cur.empty()) return true;  // "a//b", a leading or trailing "/"
    if (cur == "." || cur == "..") return false;
    if (cur[0] == '.' && !allow_hidden) return false;
    components->push_back(std::move(cur));
    cur.clear();
    return true;
  };
  for (std::size_t i = 0; i < rel.size(); ++i) {
    char c = rel[i];
    if (c == '%') {
      if (i + 2 >= rel.size()) return false;
      const int hi = hex_value(rel[i + 1]);
      const int lo = hex_value(rel[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
      // An encoded "/" is a separator too (Starlette decodes the path before splitting it).
    }
    if (c == '\0' || c == '\\') return false;
    if (c == '/') {
      if (!end_component()) return false;
      continue;
    }
    cur.push_back(c);
  }
  return end_component();
}

std::string_view static_content_type(std::string_view file_name) {
  const auto dot = file_name.rfind('.');
  if (dot != std::string_view::npos && dot + 1 < file_name.size()) {
    const std::string_view ext = file_name.substr(dot + 1);
    for (const TypeEntry& e : kTypes)
      if (ascii_iequals(ext, e.ext)) return e.type;
  }
  return "application/octet-stream";
}

namespace {

// Lower-case hex digits of `v` appended to `out` (no leading zeros; "0" for 0). Formatting by hand: snprintf's
// format parsing was 2% of a native static request's CPU (perf).
void append_hex(std::string* out, std::uint64_t v) {
  char buf[16];
  int i = 16;
  do {
    buf[--i] = "0123456789abcdef"[v & 15];
    v >>= 4;
  } while (v != 0);
  out->append(buf + i, static_cast<std::size_t>(16 - i));
}

void append_2digits(std::string* out, int v) {
  out->push_back(static_cast<char>('0' + v / 10 % 10));
  out->push_back(static_cast<char>('0' + v % 10));
}

}  // namespace

std::string static_etag(std::uint64_t size, std::int64_t mtime_ns) {
  std::string etag;
  etag.reserve(36);
  etag.push_back('"');
  append_hex(&etag, size);
  etag.push_back('-');
  append_hex(&etag, static_cast<std::uint64_t>(mtime_ns));
  etag.push_back('"');
  return etag;
}

void static_http_date(std::time_t t, std::string* out) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  out->append(kDays[tm.tm_wday % 7]);
  out->append(", ");
  append_2digits(out, tm.tm_mday);
  out->push_back(' ');
  out->append(kMonths[tm.tm_mon % 12]);
  out->push_back(' ');
  const int year = tm.tm_year + 1900;
  append_2digits(out, year / 100);
  append_2digits(out, year % 100);
  out->push_back(' ');
  append_2digits(out, tm.tm_hour);
  out->push_back(':');
  append_2digits(out, tm.tm_min);
  out->push_back(':');
  append_2digits(out, tm.tm_sec);
  out->append(" GMT");
}

bool static_parse_http_date(std::string_view s, std::time_t* out) {
  // "Sun, 06 Nov 1994 08:49:37 GMT": exactly 29 characters.
  s = trim_ows(s);
  if (s.size() != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' ||
      s[19] != ':' || s[22] != ':' || s.substr(25) != " GMT")
    return false;
  auto num = [&](std::size_t pos, std::size_t len, int* v) {
    std::uint64_t u = 0;
    if (!parse_decimal_u64(s.substr(pos, len), &u)) return false;
    *v = static_cast<int>(u);
    return true;
  };
  std::tm tm{};
  int mon = -1;
  for (int i = 0; i < 12; ++i)
    if (s.substr(8, 3) == kMonths[i]) mon = i;
  int year = 0;
  if (mon < 0 || !num(5, 2, &tm.tm_mday) || !num(12, 4, &year) || !num(17, 2, &tm.tm_hour) ||
      !num(20, 2, &tm.tm_min) || !num(23, 2, &tm.tm_sec))
    return false;
  if (tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60) return false;
  tm.tm_mon = mon;
  tm.tm_year = year - 1900;
  *out = timegm(&tm);
  return true;
}

bool static_etag_matches(std::string_view if_none_match, std::string_view etag) {
  return for_each_list_item(if_none_match, [etag](std::string_view tag) {
    if (tag == "*") return true;
    if (tag.size() > 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
    return tag == etag;
  });
}

bool static_not_modified(std::string_view if_none_match, std::string_view if_modified_since,
                         std::string_view etag, std::time_t mtime) {
  if (!if_none_match.empty()) return static_etag_matches(if_none_match, etag);  // RFC 9110 13.1.3
  std::time_t since = 0;
  return !if_modified_since.empty() && static_parse_http_date(if_modified_since, &since) && mtime <= since;
}

RangeKind static_parse_range(std::string_view header, std::uint64_t size, std::uint64_t* first,
                             std::uint64_t* last) {
  header = trim_ows(header);
  if (header.size() < 6 || !ascii_iequals(header.substr(0, 6), "bytes=")) return RangeKind::kNone;
  const std::string_view spec = trim_ows(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return RangeKind::kNone;  // several ranges: the whole file
  const auto dash = spec.find('-');
  if (dash == std::string_view::npos) return RangeKind::kNone;
  const std::string_view a = trim_ows(spec.substr(0, dash));
  const std::string_view b = trim_ows(spec.substr(dash + 1));
  std::uint64_t x = 0;
  std::uint64_t y = 0;
  if (a.empty()) {  // suffix: the last y bytes
    if (!parse_decimal_u64(b, &y)) return RangeKind::kNone;
    if (y == 0 || size == 0) return RangeKind::kUnsatisfiable;
    *first = y >= size ? 0 : size - y;
    *last = size - 1;
    return RangeKind::kSatisfiable;
  }
  if (!parse_decimal_u64(a, &x)) return RangeKind::kNone;
  if (b.empty()) {
    y = UINT64_MAX;
  } else if (!parse_decimal_u64(b, &y) || y < x) {
    return RangeKind::kNone;  // malformed (last < first): ignored
  }
  if (x >= size) return RangeKind::kUnsatisfiable;
  *first = x;
  *last = y >= size ? size - 1 : y;
  return RangeKind::kSatisfiable;
}

bool static_accepts_encoding(std::string_view accept_encoding, std::string_view coding) {
  bool accepted = false;
  for_each_list_item(accept_encoding, [&](std::string_view item) {
    const auto semi = item.find(';');
    if (!ascii_iequals(trim_ows(item.substr(0, semi)), coding)) return false;
    accepted = true;
    if (semi == std::string_view::npos) return true;
    std::string_view param = trim_ows(item.substr(semi + 1));
    if (param.size() >= 2 && ascii_lower(param[0]) == 'q' && param[1] == '=') {
      param = trim_ows(param.substr(2));
      // q=0, q=0.0, q=0.000: refused.
      bool zero = !param.empty() && param[0] == '0';
      for (std::size_t i = 1; zero && i < param.size(); ++i)
        if (param[i] != '.' && param[i] != '0') zero = false;
      accepted = !zero;
    }
    return true;
  });
  return accepted;
}

}  // namespace fa
