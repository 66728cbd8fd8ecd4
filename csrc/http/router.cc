#include "http/router.h"

#include <memory>

namespace fa {

namespace {

bool valid_method(std::string_view m) {
  if (m.empty()) return false;
  for (char c : m)
    if (c < 'A' || c > 'Z') return false;
  return true;
}

}  // namespace

const NativeRoute* Router::Methods::find(std::string_view method) const {
  for (const auto& [m, r] : by_method)
    if (m == method) return r;
  if (method == "HEAD") {
    for (const auto& [m, r] : by_method)
      if (m == "GET") return r;
  }
  return nullptr;
}

std::string Router::add(std::string_view method, std::string_view pattern, NativeRoute route) {
  if (!valid_method(method)) return "invalid method: " + std::string(method);
  if (pattern.empty() || pattern.front() != '/') return "a route path must start with '/': " + std::string(pattern);
  std::vector<Segment> segments;
  bool dynamic = false;
  std::size_t pos = 1;
  while (pos <= pattern.size()) {
    std::size_t end = pattern.find('/', pos);
    if (end == std::string_view::npos) end = pattern.size();
    std::string_view seg = pattern.substr(pos, end - pos);
    if (!seg.empty() && seg.front() == '{') {
      if (seg.back() != '}' || seg.size() < 3) return "malformed parameter in " + std::string(pattern);
      std::string_view inner = seg.substr(1, seg.size() - 2);
      Segment s{Segment::kStr, {}};
      const auto colon = inner.find(':');
      if (colon != std::string_view::npos) {
        const std::string_view type = inner.substr(colon + 1);
        inner = inner.substr(0, colon);
        if (type == "int") s.kind = Segment::kInt;
        else if (type == "str") s.kind = Segment::kStr;
        else if (type == "path") s.kind = Segment::kPath;
        else return "unknown parameter type '" + std::string(type) + "' in " + std::string(pattern);
      }
      if (inner.empty()) return "unnamed parameter in " + std::string(pattern);
      if (s.kind == Segment::kPath && end != pattern.size())
        return "a {name:path} parameter must be the last segment: " + std::string(pattern);
      s.text = std::string(inner);
      segments.push_back(std::move(s));
      dynamic = true;
    } else {
      if (seg.find_first_of("{}") != std::string_view::npos) return "malformed segment in " + std::string(pattern);
      segments.push_back(Segment{Segment::kLiteral, std::string(seg)});
    }
    pos = end + 1;
  }
  if (segments.size() > static_cast<std::size_t>(RouteParams::kMax) && dynamic)
    return "too many segments in " + std::string(pattern);
  route.pattern = std::string(pattern);
  route.method = std::string(method);
  Methods* methods = nullptr;
  if (!dynamic) {
    auto it = static_.find(pattern);
    if (it == static_.end()) {
      static_keys_.push_back(std::make_unique<std::string>(pattern));
      it = static_.emplace(std::string_view(*static_keys_.back()), Methods{}).first;
    }
    methods = &it->second;
  } else {
    for (auto& d : dynamic_)
      if (d.pattern == pattern) methods = &d.methods;
    if (methods == nullptr) {
      dynamic_.push_back(Dynamic{std::string(pattern), std::move(segments), {}});
      methods = &dynamic_.back().methods;
    }
  }
  for (const auto& [m, r] : methods->by_method)
    if (m == method) return "duplicate native route: " + std::string(method) + " " + std::string(pattern);
  // Stored only once accepted: routes() feeds the metrics, a rejected registration must leave no trace.
  route.id = storage_.size();
  storage_.push_back(std::make_unique<NativeRoute>(std::move(route)));
  methods->by_method.emplace_back(std::string(method), storage_.back().get());
  return {};
}

bool Router::match_dynamic(const Dynamic& d, std::string_view path, RouteParams* params) {
  if (path.empty() || path.front() != '/') return false;
  std::size_t pos = 1;
  int count = 0;
  for (std::size_t i = 0; i < d.segments.size(); ++i) {
    const Segment& s = d.segments[i];
    if (pos > path.size()) return false;
    std::size_t end = path.find('/', pos);
    if (end == std::string_view::npos) end = path.size();
    if (s.kind == Segment::kPath) end = path.size();
    const std::string_view seg = path.substr(pos, end - pos);
    switch (s.kind) {
      case Segment::kLiteral:
        if (seg != s.text) return false;
        break;
      case Segment::kInt:
        if (seg.empty()) return false;
        for (char c : seg)
          if (c < '0' || c > '9') return false;
        [[fallthrough]];
      case Segment::kStr:
      case Segment::kPath:
        if (seg.empty()) return false;
        if (params != nullptr && count < RouteParams::kMax) {
          params->names[count] = s.text;
          params->values[count] = seg;
        }
        ++count;
        break;
    }
    pos = end + 1;
  }
  if (pos <= path.size()) return false;  // unmatched trailing segments
  if (params != nullptr) params->count = count < RouteParams::kMax ? count : RouteParams::kMax;
  return true;
}

Router::Match Router::match(std::string_view method, std::string_view path, const NativeRoute** route,
                            RouteParams* params, std::string* allow) const {
  // A route answering `method` wins wherever it is; 405 only when no route for the path accepts the method.
  const Methods* known[8];
  std::size_t n_known = 0;
  bool path_known = false;
  if (!static_.empty()) {
    const auto it = static_.find(path);
    if (it != static_.end()) {
      if (const NativeRoute* r = it->second.find(method)) {
        *route = r;
        if (params != nullptr) params->count = 0;
        return Match::kFound;
      }
      path_known = true;
      known[n_known++] = &it->second;
    }
  }
  for (const auto& d : dynamic_) {
    if (!match_dynamic(d, path, params)) continue;
    if (const NativeRoute* r = d.methods.find(method)) {
      *route = r;
      return Match::kFound;
    }
    path_known = true;
    if (n_known < 8) known[n_known++] = &d.methods;
  }
  if (!path_known) return Match::kNone;
  if (allow != nullptr) Methods::allow_of(known, n_known, allow);
  return Match::kMethodNotAllowed;
}

// Writes into the caller's string (the connection's, reused): a 405 is a native answer and allocates nothing once
// that string has grown to its steady size.
void Router::Methods::allow_of(const Methods* const* sets, std::size_t n, std::string* out) {
  out->clear();
  bool has_get = false, has_head = false;
  for (std::size_t i = 0; i < n; ++i) {
    for (const auto& [m, r] : sets[i]->by_method) {
      bool listed = false;
      for (std::size_t j = 0; j < i && !listed; ++j)
        for (const auto& [m2, r2] : sets[j]->by_method) listed |= m2 == m;
      if (listed) continue;
      if (!out->empty()) out->append(", ");
      out->append(m);
      has_get |= m == "GET";
      has_head |= m == "HEAD";
    }
  }
  if (has_get && !has_head) out->append(", HEAD");
}

std::vector<const NativeRoute*> Router::routes() const {
  std::vector<const NativeRoute*> out;
  for (auto& r : storage_) out.push_back(r.get());
  return out;
}

}  // namespace fa
