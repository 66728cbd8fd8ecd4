// Static files: the pure logic of the native directory and disk-file routes (csrc/server/static_route.cc):
// turning the request path into safe path components, the content type, validators (ETag, Last-Modified),
// conditional requests and single byte ranges. No I/O here except what the caller passes in.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

namespace fa {

// The part of the request path below the route's prefix (still percent-encoded, e.g. "css/app%20x.css") as the
// path components to open one by one under the root directory. Refuses (returns false: the answer is 404)
// anything that could leave the directory or name something it must not: a bad or NUL percent-escape, a
// backslash, a "." or ".." component (also when encoded as %2e), and, unless `allow_hidden`, a component
// starting with ".". Empty components ("a//b") are skipped. *trailing_slash tells whether `rel` ended with "/".
bool static_split_path(std::string_view rel, bool allow_hidden, std::vector<std::string>* components,
                       bool* trailing_slash);

// The media type for a file name by its extension, as Starlette's FileResponse sends it (Python's mimetypes
// for common web types; text types with "; charset=utf-8"; unknown: "application/octet-stream").
std::string_view static_content_type(std::string_view file_name);

// A strong validator from the file's size and modification time (nanoseconds): "\"<size hex>-<mtime hex>\"".
std::string static_etag(std::uint64_t size, std::int64_t mtime_ns);
// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT"), appended to `out`.
void static_http_date(std::time_t t, std::string* out);
// Parses an IMF-fixdate; false for anything else.
bool static_parse_http_date(std::string_view s, std::time_t* out);

// If-None-Match: true when `etag` is listed (weak comparison, W/ ignored) or the header is "*".
bool static_etag_matches(std::string_view if_none_match, std::string_view etag);
// Whether the request is answered 304: If-None-Match decides when present, else If-Modified-Since (mtime in
// whole seconds not later than the date given).
bool static_not_modified(std::string_view if_none_match, std::string_view if_modified_since,
                         std::string_view etag, std::time_t mtime);

enum class RangeKind { kNone, kSatisfiable, kUnsatisfiable };
// A Range header for a representation of `size` bytes. One range ("bytes=a-b", "bytes=a-", "bytes=-n") that
// overlaps the content: kSatisfiable with [*first, *last] (inclusive, clamped to the end). A syntactically valid
// range set that does not overlap (first >= size, or a suffix of 0): kUnsatisfiable (416). Anything else (no
// header, another unit, malformed, several ranges): kNone, the whole content with 200 (RFC 9110 14.2 allows
// ignoring Range).
RangeKind static_parse_range(std::string_view header, std::uint64_t size, std::uint64_t* first,
                             std::uint64_t* last);

// Which precompressed sibling the client accepts: "br", "gzip" or "" (Accept-Encoding tokens; q=0 refuses).
bool static_accepts_encoding(std::string_view accept_encoding, std::string_view coding);

}  // namespace fa
