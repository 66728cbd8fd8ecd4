// Router: the native route table, matched before the ASGI app. Method + path with static segments and typed
// parameters ({name}, {name:int}, {name:str}, {name:path} as the last segment). Static paths are one hash lookup;
// parameterised routes are tried in registration order, each in one left-to-right pass (no backtracking).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fasterapi_asgi/native.h"

namespace fa {

// A directory (or one file) served from disk by a native route (csrc/server/static_route.cc). The root's
// descriptor is opened when the route is added and closed with the last route sharing it (server teardown).
struct StaticFiles {
  enum Flags : unsigned {
    kFollowSymlinks = 1,  // symlinks are followed, wherever they point
    kAllowHidden = 2,     // path components starting with "." are served
    kPrecompressed = 4,   // a ".br" / ".gz" sibling is sent when Accept-Encoding allows it
    kHtml = 8,            // a directory is answered with its index.html
  };
  int root_fd = -1;      // kDirectory: O_PATH|O_DIRECTORY descriptor of the root
  std::string file;      // kDiskFile: the file's path
  std::string prefix;    // kDirectory: the route's path prefix ("/assets"), without a trailing "/"
  std::string content_type;  // kDiskFile: fixed content type ("" = by extension)
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers (cache-control, ...), validated
  unsigned flags = 0;
  StaticFiles() = default;
  StaticFiles(const StaticFiles&) = delete;
  StaticFiles& operator=(const StaticFiles&) = delete;
  ~StaticFiles();
};

struct NativeRoute {
  enum Kind : std::uint8_t { kStatic, kHealth, kMetrics, kUser, kDirectory, kDiskFile };
  Kind kind = kStatic;
  // Answered with a file (HttpStream::send_file): the request completes when the file is out, not on return.
  bool sends_file() const { return kind == kDirectory || kind == kDiskFile; }
  int status = 200;
  std::string headers;  // pre-formatted "name: value\r\n" lines (content-type, content-length, extra)
  std::string body;
  fa_native_handler_fn fn = nullptr;
  void* user_data = nullptr;
  std::string pattern;  // as registered, for metrics labels
  std::string method;   // as registered, for metrics labels
  std::size_t id = 0;   // registration index (0, 1, ...): where the server keeps this route's statistics
  std::shared_ptr<const StaticFiles> files;  // kDirectory, kDiskFile
};

struct RouteParams {
  static constexpr int kMax = 8;
  int count = 0;
  std::string_view names[kMax];
  std::string_view values[kMax];
};

class Router {
 public:
  // Register `route` for `method` ("GET", ...; GET also answers HEAD) and `pattern`. Returns "" or an error.
  std::string add(std::string_view method, std::string_view pattern, NativeRoute route);

  enum class Match { kNone, kFound, kMethodNotAllowed };
  // `method` is the request method name. On kMethodNotAllowed, *allow lists the methods the path accepts.
  Match match(std::string_view method, std::string_view path, const NativeRoute** route, RouteParams* params,
              std::string* allow) const;

  bool empty() const { return static_.empty() && dynamic_.empty(); }
  // Every registered route, in registration order (route->id is its index).
  std::vector<const NativeRoute*> routes() const;

 private:
  struct Segment {
    enum Kind : std::uint8_t { kLiteral, kStr, kInt, kPath } kind;
    std::string text;  // literal text or parameter name
  };
  struct Methods {
    std::vector<std::pair<std::string, NativeRoute*>> by_method;
    const NativeRoute* find(std::string_view method) const;
    static void allow_of(const Methods* const* sets, std::size_t n, std::string* out);
  };
  struct Dynamic {
    std::string pattern;
    std::vector<Segment> segments;
    Methods methods;
  };
  static bool match_dynamic(const Dynamic& d, std::string_view path, RouteParams* params);

  std::vector<std::unique_ptr<NativeRoute>> storage_;
  std::vector<std::unique_ptr<std::string>> static_keys_;  // owns the keys viewed by static_
  std::unordered_map<std::string_view, Methods> static_;
  std::vector<Dynamic> dynamic_;
};

}  // namespace fa
