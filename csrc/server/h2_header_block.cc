#include "server/h2_header_block.h"

#include <llhttp.h>

#include <algorithm>

namespace fa {

namespace {

// llhttp's method number for a method name, -1 for one llhttp does not know.
int method_number(std::string_view m) {
  if (m == "GET") return HTTP_GET;
#define FA_METHOD(num, name, string) \
  if (m == #string) return num;
  HTTP_METHOD_MAP(FA_METHOD)
#undef FA_METHOD
  return -1;
}

Span arena_add(std::string& arena, std::string_view s) {
  const Span span{arena.size(), s.size()};
  arena.append(s);
  return span;
}

}  // namespace

void H2HeaderBlock::take(std::string_view n, std::string_view v, RequestHead& h, std::size_t max_list_bytes,
                         std::size_t max_fields) {
  bytes_ += n.size() + v.size() + 32;
  if (bytes_ > max_list_bytes) {
    too_large_ = true;
    return;
  }
  if (!n.empty() && n[0] == ':') {
    // nghttp2 (HTTP messaging on) has checked the pseudo-headers: each once, before the fields, :method, :scheme
    // and :path present (except for CONNECT), no unknown ones.
    if (n == ":method") {
      h.method = method_number(v);
      if (h.method < 0) bad_ = true;
    } else if (n == ":path") {
      h.url = arena_add(h.arena, v);
    } else if (n == ":authority") {
      authority_.assign(v);
    }
    return;
  }
  if (n == "cookie") {
    if (!cookies_.empty()) cookies_.append("; ");
    cookies_.append(v);
    return;
  }
  if (h.headers.size() >= max_fields) {
    too_large_ = true;
    return;
  }
  const Span ns = arena_add(h.arena, n);
  h.headers.emplace_back(ns, arena_add(h.arena, v));
}

void H2HeaderBlock::finish(RequestHead& h) const {
  // ASGI: the :authority pseudo-header becomes the first header, `host`, replacing one the client sent.
  if (!authority_.empty()) {
    h.headers.erase(std::remove_if(h.headers.begin(), h.headers.end(),
                                   [&h](const std::pair<Span, Span>& f) { return h.str(f.first) == "host"; }),
                    h.headers.end());
    const Span name = arena_add(h.arena, "host");
    h.headers.insert(h.headers.begin(), {name, arena_add(h.arena, authority_)});
  }
  if (!cookies_.empty()) {
    const Span name = arena_add(h.arena, "cookie");
    h.headers.emplace_back(name, arena_add(h.arena, cookies_));
  }
}

}  // namespace fa
