// H2HeaderBlock: one HTTP/2 request's header block as nghttp2 hands it over, field by field, turned into the same
// RequestHead an HTTP/1.1 request has: pseudo-headers into method and target, :authority into the first header
// `host` (as ASGI servers do), cookie fields joined with "; " (RFC 9113 8.2.3), the size and count limits applied.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "http/request.h"

namespace fa {

class H2HeaderBlock {
 public:
  // No field taken yet.
  bool empty() const { return bytes_ == 0; }
  // One field into `head` (may throw std::bad_alloc). Past `max_list_bytes` (RFC 9113 6.5.2: name + value + 32 per
  // field) or `max_fields`, fields are dropped and too_large() is set.
  void take(std::string_view name, std::string_view value, RequestHead& head, std::size_t max_list_bytes,
            std::size_t max_fields);
  // The block is complete: the host header and the joined cookies go into `head`.
  void finish(RequestHead& head) const;
  // The request cannot be served: 431.
  bool too_large() const { return too_large_; }
  // A method this server does not know: 400.
  bool bad() const { return bad_; }

 private:
  std::string authority_;
  std::string cookies_;
  std::size_t bytes_ = 0;
  bool too_large_ = false;
  bool bad_ = false;
};

}  // namespace fa
