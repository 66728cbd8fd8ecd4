// Micro-benchmark: nanoseconds per parse + route of a ~100-byte HTTP/1.1 GET, using the server's own
// fa::RequestParser (llhttp + limits) and fa::Router (20 native routes, static and parameterised).
//
// Three cases, each timed with std::chrono::steady_clock over N requests, repeated R times; the median is reported:
//   parse          one request per execute() call, parse only (the listener does nothing but count)
//   parse+route    one request per execute() call, then Router::match on method + path (with parameters)
//   pipelined16    16 requests back to back in one buffer, one execute() per buffer, parse + route each
//   route          Router::match alone on the request's method and path (no parsing)
//
//   fa_bench_parse_route [--iterations N] [--runs R] [--json]
//
// The parser is reused across requests, as on a keep-alive connection. Every run checks its own result (requests
// completed, route found, parameter value) and the program exits 1 on a mismatch, so a broken build cannot report
// a fast but meaningless number.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "http/parser.h"
#include "http/router.h"

namespace {

constexpr std::string_view kRequest =
    "GET /api/v1/items/12345?x=1 HTTP/1.1\r\n"
    "Host: localhost:8000\r\n"
    "User-Agent: bench/1.0\r\n"
    "Accept: */*\r\n"
    "\r\n";
constexpr std::string_view kExpectedPattern = "/api/v1/items/{item_id:int}";
constexpr std::string_view kExpectedParam = "12345";
constexpr int kPipelineDepth = 16;

// Registration order matters for the parameterised routes (tried in order): the hit is the 7th of 10 dynamic
// routes, so the match pays for six misses first, as in a real table.
constexpr const char* kRoutes[][2] = {
    {"GET", "/"},
    {"GET", "/health"},
    {"GET", "/metrics"},
    {"GET", "/api/v1/status"},
    {"GET", "/api/v1/users"},
    {"POST", "/api/v1/users"},
    {"GET", "/api/v1/items"},
    {"POST", "/api/v1/items"},
    {"GET", "/api/v1/orders"},
    {"GET", "/plaintext"},
    {"GET", "/api/v1/users/{user_id:int}"},
    {"GET", "/api/v1/users/{user_id:int}/posts"},
    {"GET", "/api/v1/users/{user_id:int}/posts/{post_id:int}"},
    {"GET", "/api/v1/orders/{order_id}"},
    {"DELETE", "/api/v1/orders/{order_id}"},
    {"GET", "/api/v1/items/{item_id:int}/reviews"},
    {"GET", "/api/v1/items/{item_id:int}"},
    {"PUT", "/api/v1/items/{item_id:int}"},
    {"GET", "/api/v2/items/{item_id}"},
    {"GET", "/static/{file:path}"},
};

class Listener final : public fa::ParserListener {
 public:
  explicit Listener(const fa::Router* router) : router_(router) {}
  void on_request_begin() override {}
  int on_request_head(fa::RequestHead& head) override {
    if (router_ != nullptr) {
      const std::string_view method = llhttp_method_name(static_cast<llhttp_method_t>(head.method));
      const fa::NativeRoute* route = nullptr;
      fa::RouteParams params;
      if (router_->match(method, head.path_view(), &route, &params, nullptr) == fa::Router::Match::kFound &&
          route->pattern == kExpectedPattern && params.count == 1 &&
          params.values[0] == kExpectedParam)
        ++routed;
    }
    return kContinue;
  }
  int on_request_body(const char*, std::size_t) override { return kContinue; }
  int on_request_complete() override {
    ++completed;
    return kContinue;
  }
  std::uint64_t completed = 0;
  std::uint64_t routed = 0;

 private:
  const fa::Router* router_;
};

struct Case {
  const char* name;
  bool route;
  int depth;  // requests per execute() call; 0: Router::match alone
};

// Time one run of `requests` requests; returns ns per request, or a negative value on a checking failure.
double run_once(const Case& c, const fa::Router& router, const fa::ParserLimits& limits, const std::string& buffer,
                std::uint64_t requests) {
  Listener listener(c.route ? &router : nullptr);
  fa::RequestParser parser(&listener, &limits);
  const std::uint64_t calls = requests / static_cast<std::uint64_t>(c.depth);
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < calls; ++i) {
    const fa::ParseResult r = parser.execute(buffer.data(), buffer.size());
    if (r.kind != fa::ParseResult::kOk) {
      std::fprintf(stderr, "%s: parse error %d (%s)\n", c.name, r.status, r.reason);
      return -1;
    }
  }
  const auto t1 = std::chrono::steady_clock::now();
  const std::uint64_t done = calls * static_cast<std::uint64_t>(c.depth);
  if (listener.completed != done || (c.route && listener.routed != done)) {
    std::fprintf(stderr, "%s: %llu requests sent, %llu completed, %llu routed to %.*s\n", c.name,
                 static_cast<unsigned long long>(done), static_cast<unsigned long long>(listener.completed),
                 static_cast<unsigned long long>(listener.routed), static_cast<int>(kExpectedPattern.size()),
                 kExpectedPattern.data());
    return -1;
  }
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()) /
         static_cast<double>(done);
}

// Router::match alone, on the method and path of the parsed request.
double run_route_only(const fa::Router& router, std::uint64_t requests) {
  const std::string_view path = "/api/v1/items/12345";
  std::uint64_t routed = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t i = 0; i < requests; ++i) {
    // the path's data pointer is laundered so the compiler cannot hoist the match out of the loop
    const char* p = path.data();
    asm volatile("" : "+r"(p));
    const fa::NativeRoute* route = nullptr;
    fa::RouteParams params;
    if (router.match("GET", std::string_view(p, path.size()), &route, &params, nullptr) ==
            fa::Router::Match::kFound &&
        params.count == 1 && params.values[0] == kExpectedParam)
      ++routed;
  }
  const auto t1 = std::chrono::steady_clock::now();
  if (routed != requests) {
    std::fprintf(stderr, "route: %llu of %llu matched\n", static_cast<unsigned long long>(routed),
                 static_cast<unsigned long long>(requests));
    return -1;
  }
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count()) /
         static_cast<double>(requests);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

int usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s [--iterations N] [--runs R] [--json]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t iterations = 1'000'000;
  int runs = 7;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view a = argv[i];
    if (a == "--json") {
      json = true;
    } else if ((a == "--iterations" || a == "-n") && i + 1 < argc) {
      iterations = std::strtoull(argv[++i], nullptr, 10);
    } else if ((a == "--runs" || a == "-r") && i + 1 < argc) {
      runs = std::atoi(argv[++i]);
    } else {
      return usage(argv[0]);
    }
  }
  if (iterations < static_cast<std::uint64_t>(kPipelineDepth) || runs < 1) return usage(argv[0]);

  fa::Router router;
  for (const auto& r : kRoutes) {
    fa::NativeRoute route;
    route.body = "ok";
    const std::string err = router.add(r[0], r[1], std::move(route));
    if (!err.empty()) {
      std::fprintf(stderr, "route %s %s: %s\n", r[0], r[1], err.c_str());
      return 1;
    }
  }
  const fa::ParserLimits limits;
  const std::string single(kRequest);
  std::string pipelined;
  for (int i = 0; i < kPipelineDepth; ++i) pipelined += single;

  const Case cases[] = {
      {"parse", false, 1}, {"parse+route", true, 1}, {"pipelined16", true, kPipelineDepth}, {"route", true, 0}};
  struct Row {
    const char* name;
    double median_ns, min_ns, max_ns;
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
    const std::string& buf = c.depth == 1 ? single : pipelined;
    auto once = [&](std::uint64_t n) {
      return c.depth == 0 ? run_route_only(router, n) : run_once(c, router, limits, buf, n);
    };
    if (once(std::max<std::uint64_t>(iterations / 10, 1000)) < 0) return 1;  // warm-up
    std::vector<double> ns;
    for (int r = 0; r < runs; ++r) {
      const double v = once(iterations);
      if (v < 0) return 1;
      ns.push_back(v);
    }
    rows.push_back({c.name, median(ns), *std::min_element(ns.begin(), ns.end()),
                    *std::max_element(ns.begin(), ns.end())});
  }

  const std::size_t nroutes = sizeof(kRoutes) / sizeof(kRoutes[0]);
  if (json) {
    std::printf("{\"request_bytes\": %zu, \"routes\": %zu, \"iterations\": %llu, \"runs\": %d, \"cases\": {",
                kRequest.size(), nroutes, static_cast<unsigned long long>(iterations), runs);
    for (std::size_t i = 0; i < rows.size(); ++i)
      std::printf("%s\"%s\": {\"median_ns\": %.2f, \"min_ns\": %.2f, \"max_ns\": %.2f}", i ? ", " : "", rows[i].name,
                  rows[i].median_ns, rows[i].min_ns, rows[i].max_ns);
    std::printf("}}\n");
  } else {
    std::printf("request: %zu bytes (GET /api/v1/items/12345?x=1, 3 headers); %zu routes; %llu requests x %d runs\n",
                kRequest.size(), nroutes, static_cast<unsigned long long>(iterations), runs);
    std::printf("%-14s %12s %10s %10s %14s\n", "case", "median ns", "min", "max", "requests/s");
    for (const Row& r : rows)
      std::printf("%-14s %12.1f %10.1f %10.1f %14.0f\n", r.name, r.median_ns, r.min_ns, r.max_ns, 1e9 / r.median_ns);
  }
  return 0;
}
