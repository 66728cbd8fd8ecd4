// The head of one HTTP/1.x request as parsed: method, target, version and headers, stored in a per-connection arena.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/strings.h"

namespace fa {

struct RequestHead {
  // Bytes of the URL and of every header name (lowercased) and value. Reused across requests: capacity is kept.
  std::string arena;
  Span url;
  std::vector<std::pair<Span, Span>> headers;
  int method = 0;  // llhttp_method_t
  std::uint8_t http_major = 1;
  std::uint8_t http_minor = 1;
  bool keep_alive = true;
  bool expect_continue = false;
  bool has_body = false;     // Content-Length > 0 or chunked
  bool upgrade = false;
  bool has_transfer_encoding = false;  // the request carried a Transfer-Encoding header

  std::string_view str(Span s) const { return std::string_view(arena.data() + s.off, s.len); }
  std::string_view url_view() const { return str(url); }
  // The origin-form part of the target: for an absolute-form target ("http://host/p?q") the "/p?q" part. A
  // "#fragment" (never sent by conforming clients) is not part of it, as uvicorn drops it too.
  std::string_view target_view() const {
    std::string_view u = url_view();
    u = u.substr(0, u.find('#'));
    if (!u.empty() && u.front() != '/') {
      const auto scheme_end = u.find("://");
      if (scheme_end != std::string_view::npos) {
        const auto cut = u.find_first_of("/?", scheme_end + 3);
        u = cut == std::string_view::npos ? std::string_view() : u.substr(cut);
      }
    }
    return u;
  }
  std::string_view path_view() const {
    const std::string_view u = target_view();
    const auto q = u.find('?');
    return q == std::string_view::npos ? u : u.substr(0, q);
  }
  std::string_view query_view() const {
    const std::string_view u = target_view();
    const auto q = u.find('?');
    return q == std::string_view::npos ? std::string_view() : u.substr(q + 1);
  }
  // First header with this (lowercase) name, or an empty view.
  std::string_view header(std::string_view lower_name) const {
    for (const auto& h : headers)
      if (str(h.first) == lower_name) return str(h.second);
    return {};
  }
  void clear() {
    arena.clear();
    headers.clear();
    url = {};
    method = 0;
    http_major = http_minor = 1;
    keep_alive = true;
    expect_continue = has_body = upgrade = has_transfer_encoding = false;
  }
};

}  // namespace fa
