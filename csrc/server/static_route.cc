// Native static files. Path safety: the request path is split into components (http/static_files.h refuses "..",
// ".", encoded separators' tricks, NUL, backslashes, hidden names), then opened one component at a time with
// openat() from the root's descriptor, each with O_NOFOLLOW (unless the route follows symlinks): a symlink
// anywhere on the way is not followed, so nothing outside the root is reached, and a component swapped for a
// symlink between two requests (or during one) is refused by the kernel at open time, not by an earlier check
// (no TOCTOU window). What is served is the descriptor that was opened and fstat()ed; nothing is opened by name
// twice. Ownership: every descriptor opened here is closed here, except the one handed to send_file() (which
// takes it).
#include "server/static_route.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include "http/static_files.h"
#include "server/connection.h"
#include "server/server.h"

namespace fa {

StaticFiles::~StaticFiles() {
  if (root_fd >= 0) ::close(root_fd);
}

namespace {

constexpr std::string_view kTextPlain = "content-type: text/plain; charset=utf-8\r\n";

// Closes a descriptor it owns on every path out.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(-1); }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int get() const { return fd_; }
  int release() {
    const int fd = fd_;
    fd_ = -1;
    return fd;
  }
  bool ok() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

int open_at(int dir, const char* name, int flags, bool follow) {
  int fd;
  do {
    fd = ::openat(dir, name, flags | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW));
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// A regular file opened for reading under `dir` (O_NONBLOCK: a FIFO planted in the tree cannot block the loop).
bool open_regular(int dir, const char* name, bool follow, Fd* out, struct stat* st) {
  Fd fd(open_at(dir, name, O_RDONLY | O_NONBLOCK, follow));
  if (!fd.ok() || ::fstat(fd.get(), st) != 0 || !S_ISREG(st->st_mode)) return false;
  out->reset(fd.release());
  return true;
}

int answer_plain(HttpStream& c, int status, std::string_view headers, std::string_view body) {
  c.write_response(status, headers, body, true);
  return status;
}

int not_found(HttpStream& c) { return answer_plain(c, 404, kTextPlain, "Not Found"); }

// Starlette's redirect of a directory URL to its "/" form: 307 to the absolute URL (path + "/", query kept).
int redirect_to_slash(HttpStream& c) {
  const RequestHead& head = c.head();
  std::string h = "location: ";
  const std::string_view host = head.header("host");
  if (!host.empty() && host.find_first_of("\r\n") == std::string_view::npos) {
    h.append(c.connection().is_tls() ? "https://" : "http://");
    h.append(host);
  }
  const std::string_view path = head.path_view();
  const std::string_view query = head.query_view();
  h.append(path);
  h.push_back('/');
  if (!query.empty()) {
    h.push_back('?');
    h.append(query);
  }
  h.append("\r\n");
  return answer_plain(c, 307, h, "");
}

// The head and the file for a resolved regular file (`status` 200, or 404 for an html route's 404.html).
int send_regular(HttpStream& c, const NativeRoute& route, Fd& file, const Fd& parent, const std::string& name,
                 struct stat st, int status);

// Not found: in html mode the root's 404.html with status 404 if there is one (as Starlette), else "Not Found".
int not_found_page(HttpStream& c, const NativeRoute& route) {
  const StaticFiles& files = *route.files;
  if ((files.flags & StaticFiles::kHtml) == 0 || route.kind != NativeRoute::kDirectory) return not_found(c);
  Fd page;
  struct stat st {};
  if (!open_regular(files.root_fd, "404.html", (files.flags & StaticFiles::kFollowSymlinks) != 0, &page, &st))
    return not_found(c);
  return send_regular(c, route, page, Fd(), "404.html", st, 404);
}

int serve(HttpStream& c, const NativeRoute& route) {
  const StaticFiles& files = *route.files;
  const bool follow = (files.flags & StaticFiles::kFollowSymlinks) != 0;
  const RequestHead& head = c.head();
  Fd file;
  Fd parent;  // the directory holding `file` (for a precompressed sibling); -1: files.root_fd or none
  std::string name;
  struct stat st {};
  if (route.kind == NativeRoute::kDiskFile) {
    if (!open_regular(AT_FDCWD, files.file.c_str(), true, &file, &st)) return not_found_page(c, route);
    name = files.file;
  } else {
    std::string_view rel = head.path_view();
    rel.remove_prefix(rel.size() < files.prefix.size() ? rel.size() : files.prefix.size());
    std::vector<std::string> parts;
    bool trailing_slash = false;
    if (!static_split_path(rel, (files.flags & StaticFiles::kAllowHidden) != 0, &parts, &trailing_slash))
      return not_found_page(c, route);
    int dir = files.root_fd;
    const std::size_t n_dirs = parts.empty() ? 0 : parts.size() - 1;
    for (std::size_t i = 0; i < n_dirs; ++i) {
      const int next = open_at(dir, parts[i].c_str(), O_PATH | O_DIRECTORY, follow);
      if (next < 0) return not_found_page(c, route);
      parent.reset(next);
      dir = next;
    }
    Fd target(open_at(dir, parts.empty() ? "." : parts.back().c_str(), O_RDONLY | O_NONBLOCK, follow));
    if (!target.ok() || ::fstat(target.get(), &st) != 0) return not_found_page(c, route);
    if (S_ISDIR(st.st_mode)) {
      if ((files.flags & StaticFiles::kHtml) == 0) return not_found_page(c, route);
      struct stat ist {};
      Fd index;
      if (!open_regular(target.get(), "index.html", follow, &index, &ist)) return not_found_page(c, route);
      if (!head.path_view().empty() && head.path_view().back() != '/') return redirect_to_slash(c);
      parent.reset(target.release());
      file.reset(index.release());
      st = ist;
      name = "index.html";
    } else if (S_ISREG(st.st_mode)) {
      // "name.txt/" serves name.txt, as Starlette does.
      file.reset(target.release());
      name = parts.back();
    } else {
      return not_found_page(c, route);  // a device, socket, FIFO
    }
  }
  return send_regular(c, route, file, parent, name, st, 200);
}

int send_regular(HttpStream& c, const NativeRoute& route, Fd& file, const Fd& parent, const std::string& name,
                 struct stat st, int status) {
  const StaticFiles& files = *route.files;
  const bool follow = (files.flags & StaticFiles::kFollowSymlinks) != 0;
  const RequestHead& head = c.head();

  // The content type is the original name's, whatever representation is sent.
  std::string_view content_type = files.content_type;
  if (content_type.empty()) content_type = static_content_type(name);
  std::string_view encoding;
  // With precompressed siblings on, the representation is chosen by Accept-Encoding: every answer of the route
  // says so (Vary), whether or not this file has a sibling, so no lookup is needed to decide it.
  const bool negotiates = (files.flags & StaticFiles::kPrecompressed) != 0;
  if (negotiates && status == 200) {
    const std::string_view accept = head.header("accept-encoding");
    const int dir = route.kind == NativeRoute::kDiskFile ? AT_FDCWD
                    : parent.ok()                         ? parent.get()
                                                          : files.root_fd;
    const std::string base = route.kind == NativeRoute::kDiskFile ? files.file : name;
    static constexpr std::pair<std::string_view, std::string_view> kCodings[] = {{"br", ".br"},
                                                                                  {"gzip", ".gz"}};
    for (const auto& [coding, ext] : kCodings) {
      // Only a coding the client accepts is looked for: a client that accepts none (most API clients, load
      // generators) costs no failed openat() per request.
      if (!encoding.empty() || !static_accepts_encoding(accept, coding)) continue;
      Fd alt;
      struct stat ast {};
      if (!open_regular(dir, (base + std::string(ext)).c_str(), follow || route.kind == NativeRoute::kDiskFile,
                        &alt, &ast))
        continue;
      file.reset(alt.release());
      st = ast;
      encoding = coding;
    }
  }

  const std::uint64_t size = static_cast<std::uint64_t>(st.st_size);
  const std::int64_t mtime_ns =
      static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000 + static_cast<std::int64_t>(st.st_mtim.tv_nsec);
  const std::string etag = static_etag(size, mtime_ns);
  std::string last_modified;
  static_http_date(st.st_mtim.tv_sec, &last_modified);

  // Headers common to 200, 206 and 304.
  std::vector<std::pair<std::string_view, std::string_view>> hs;
  hs.reserve(10 + files.headers.size());
  hs.emplace_back("etag", etag);
  hs.emplace_back("last-modified", last_modified);
  for (const auto& [k, v] : files.headers) hs.emplace_back(k, v);
  if (negotiates) hs.emplace_back("vary", "accept-encoding");

  if (status == 200 && static_not_modified(head.header("if-none-match"), head.header("if-modified-since"), etag,
                          st.st_mtim.tv_sec)) {
    std::string h;
    for (const auto& [k, v] : hs) {
      h.append(k);
      h.append(": ");
      h.append(v);
      h.append("\r\n");
    }
    c.write_response(304, h, "", false);
    return 304;
  }

  hs.emplace_back("content-type", content_type);
  if (!encoding.empty()) hs.emplace_back("content-encoding", encoding);
  hs.emplace_back("accept-ranges", "bytes");

  std::uint64_t first = 0;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  std::uint64_t length = size;
  std::string content_range;
  const std::string_view range = head.header("range");
  const std::string_view if_range = head.header("if-range");
  if (status == 200 && !range.empty() && (if_range.empty() || if_range == etag || if_range == last_modified)) {
    switch (static_parse_range(range, size, &first, &last)) {
      case RangeKind::kNone:
        first = 0;
        break;
      case RangeKind::kUnsatisfiable: {
        std::string h = "content-range: bytes */" + std::to_string(size) + "\r\n";
        h.append(kTextPlain);
        return answer_plain(c, 416, h, "");
      }
      case RangeKind::kSatisfiable:
        status = 206;
        length = last - first + 1;
        content_range = "bytes " + std::to_string(first) + "-" + std::to_string(last) + "/" + std::to_string(size);
        hs.emplace_back("content-range", content_range);
        break;
    }
  }
  const std::string content_length = std::to_string(length);
  hs.emplace_back("content-length", content_length);

  std::vector<std::string_view> names;
  std::vector<std::string_view> values;
  names.reserve(hs.size());
  values.reserve(hs.size());
  for (const auto& [k, v] : hs) {
    names.push_back(k);
    values.push_back(v);
  }
  if (c.start_response(status, names.data(), values.data(), names.size()) != nullptr) {
    return answer_plain(c, 500, kTextPlain, "Internal Server Error");
  }
  // The connection takes the descriptor (and closes it, on success or failure).
  if (c.send_file(file.release(), length, first) != nullptr) c.close_after_output();
  return status;
}

}  // namespace

int run_static_route(HttpStream& c, const NativeRoute& route) noexcept {
  try {
    return serve(c, route);
  } catch (...) {
    // Memory exhausted: nothing may unwind into the read callback.
    if (c.response_started() || c.sending_file()) {
      c.close();
      return 500;
    }
    try {
      c.write_response(500, kTextPlain, "Internal Server Error", true);
    } catch (...) {
      c.close();
    }
    return 500;
  }
}

}  // namespace fa
