// libFuzzer target: the response writer with headers from outside (what an app passes to send()). Invariants: a
// head is either refused with nothing written, or it is one well-formed HTTP/1.1 head: a status line, lines of
// "name: value" without stray CR/LF/NUL, one empty line at the end; framing bytes never exceed what was declared.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "http/response.h"

namespace {

void check_head(std::string_view head) {
  const std::size_t end = head.find("\r\n\r\n");
  if (end == std::string_view::npos || end + 4 != head.size()) std::abort();
  std::size_t pos = 0;
  bool first = true;
  while (pos < end + 2) {
    const std::size_t eol = head.find("\r\n", pos);
    const std::string_view line = head.substr(pos, eol - pos);
    for (char c : line)
      if (c == '\r' || c == '\n' || c == '\0') std::abort();
    if (!first && line.find(": ") == std::string_view::npos) std::abort();
    first = false;
    pos = eol + 2;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* bytes, std::size_t size) {
  if (size < 4) return 0;
  const int status = 100 + (bytes[0] | (bytes[1] << 8)) % 950;
  const bool head_request = bytes[2] & 1, keep_alive = bytes[2] & 2, http10 = bytes[2] & 4;
  // Headers: the rest split on 0xff into name, value, name, value, ...
  std::vector<std::string_view> parts;
  std::string_view rest(reinterpret_cast<const char*>(bytes + 4), size - 4);
  while (!rest.empty() && parts.size() < 32) {
    const std::size_t cut = rest.find('\xff');
    parts.push_back(rest.substr(0, cut));
    rest = cut == std::string_view::npos ? std::string_view() : rest.substr(cut + 1);
  }
  std::vector<std::string_view> names, values;
  for (std::size_t i = 0; i + 1 < parts.size(); i += 2) {
    names.push_back(parts[i]);
    values.push_back(parts[i + 1]);
  }
  fa::ResponseDefaults defaults;
  defaults.header_block = "server: fuzz\r\n";
  defaults.date_header = false;
  fa::DateCache date;
  fa::ResponseState rs;
  rs.reset(head_request, keep_alive, http10);
  std::string out = "prefix";
  const char* err = rs.write_head(out, status, names.data(), values.data(), names.size(), defaults, date);
  if (err != nullptr) {
    if (out != "prefix" || rs.started()) std::abort();  // a refused head leaves nothing behind
    std::string e;
    fa::write_error_response(e, 500, "Internal Server Error", "", head_request, defaults, date);
    return 0;
  }
  check_head(std::string_view(out).substr(6));
  // Body pieces of sizes from bytes[3]: what goes on the wire is bounded by what was given.
  std::size_t given = 0;
  for (int i = 0; i < 3; ++i) {
    const std::size_t len = static_cast<std::size_t>(bytes[3]) * (i + 1);
    bool emit = false;
    std::string_view suffix;
    std::string framing;
    if (rs.frame_body(framing, len, i < 2, &emit, &suffix) != nullptr) break;
    given += len;
    if (framing.size() > 20 || suffix.size() > 7) std::abort();
  }
  (void)given;
  return 0;
}
