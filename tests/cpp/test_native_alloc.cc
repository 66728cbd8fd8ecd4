// Issue 3: "Steady state: no heap allocation per native request". This binary replaces the global operator
// new/delete (and, outside AddressSanitizer builds, malloc/calloc/realloc) with counting versions. Only allocations
// made on the loop thread while the measurement window is open are counted: the client runs on its own thread and
// its allocations never count. After a warm-up, 1000 native requests on one keep-alive connection (one at a time and
// pipelined) must allocate nothing. On failure the backtraces of the first allocations are printed.
#include <execinfo.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include "catch_compat.h"
#include "loop_harness.h"

#if defined(__SANITIZE_ADDRESS__)
#define FA_TEST_COUNT_MALLOC 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FA_TEST_COUNT_MALLOC 0
#endif
#endif
#ifndef FA_TEST_COUNT_MALLOC
#define FA_TEST_COUNT_MALLOC 1
#endif

namespace {

std::atomic<bool> g_window{false};      // the measurement window is open
std::atomic<long> g_count{0};           // allocations counted in the window
thread_local bool t_loop_thread = false;  // set on the thread that runs uv_run
thread_local bool t_in_hook = false;      // re-entrancy guard (backtrace() may allocate)

constexpr int kMaxTraces = 6;
constexpr int kTraceDepth = 24;
struct Trace {
  std::size_t size;
  int depth;
  void* frames[kTraceDepth];
};
Trace g_traces[kMaxTraces];
std::atomic<int> g_trace_count{0};

inline void on_alloc(std::size_t size) {
  if (!t_loop_thread || t_in_hook || !g_window.load(std::memory_order_relaxed)) return;
  t_in_hook = true;
  const long n = g_count.fetch_add(1);
  if (n < kMaxTraces) {
    Trace& t = g_traces[n];
    t.size = size;
    t.depth = backtrace(t.frames, kTraceDepth);
    g_trace_count.fetch_add(1);
  }
  t_in_hook = false;
}

void print_traces() {
  const int n = g_trace_count.load();
  for (int i = 0; i < n; ++i) {
    std::fprintf(stderr, "--- allocation %d on the loop thread: %zu bytes\n", i + 1, g_traces[i].size);
    backtrace_symbols_fd(g_traces[i].frames, g_traces[i].depth, 2);
  }
}

}  // namespace

#if FA_TEST_COUNT_MALLOC
extern "C" {
void* __libc_malloc(std::size_t);  // glibc's allocator proper: malloc below only counts and forwards
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void __libc_free(void*);

void* malloc(std::size_t n) {
  on_alloc(n);
  return __libc_malloc(n);
}
void* calloc(std::size_t a, std::size_t b) {
  on_alloc(a * b);
  return __libc_calloc(a, b);
}
void* realloc(void* p, std::size_t n) {
  on_alloc(n);
  return __libc_realloc(p, n);
}
void free(void* p) { __libc_free(p); }
}
// operator new counts once: it goes straight to glibc, not through the counting malloc.
static inline void* raw_malloc(std::size_t n) { return __libc_malloc(n); }
#else
static inline void* raw_malloc(std::size_t n) { return std::malloc(n); }
#endif

void* operator new(std::size_t n) {
  on_alloc(n);
  if (void* p = raw_malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) {
  on_alloc(n);
  if (void* p = raw_malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  on_alloc(n);
  return raw_malloc(n == 0 ? 1 : n);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  on_alloc(n);
  return raw_malloc(n == 0 ? 1 : n);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace {

fa::NativeRoute static_text(const std::string& body) {
  fa::NativeRoute r;
  r.kind = fa::NativeRoute::kStatic;
  r.headers = "content-type: text/plain\r\ncontent-length: " + std::to_string(body.size()) + "\r\n";
  r.body = body;
  return r;
}

// A user handler that exercises the whole C ABI: params, query, headers, body, status, headers, body writes.
int score_handler(const fa_request* req, fa_response* res, const fa_response_api* api, void*) {
  const std::string_view id = fasterapi_asgi::param(req, "user_id");
  const std::string_view agent = fasterapi_asgi::header(req, "user-agent");
  char buf[128];
  const int n = std::snprintf(buf, sizeof buf, "{\"user\":%.*s,\"q\":\"%.*s\",\"agent\":%zu,\"body\":%zu}",
                              static_cast<int>(id.size()), id.data(), static_cast<int>(req->query.len),
                              req->query.data, agent.size(), req->body.len);
  api->set_status(res, 200);
  api->add_header(res, "content-type", 12, "application/json", 16);
  api->write(res, buf, static_cast<std::size_t>(n));
  return 0;
}

struct Req {
  std::string bytes;
  bool head;
  int status;
};

struct ClientResult {
  std::string error;
  int responses = 0;
  long allocations = -1;
  long allocations_in_client_window = 0;
};

// Sends `count` requests from `requests` (round robin), `depth` per write (1: one at a time), reading every
// response. Buffers are sized up front; the client's allocations are on its own thread and are not counted anyway.
std::string drive(int fd, std::string& pending, const std::vector<Req>& requests, int count,
                  int depth, int* responses) {
  std::string batch;
  batch.reserve(4096);
  fa_test::HttpResponse res;
  for (int sent = 0; sent < count;) {
    batch.clear();
    const int first = sent;
    for (int k = 0; k < depth && sent < count; ++k, ++sent) batch += requests[sent % requests.size()].bytes;
    if (!fa_test::send_all(fd, batch.data(), batch.size())) return "send failed";
    for (int i = first; i < sent; ++i) {
      const Req& r = requests[i % requests.size()];
      const std::string e = fa_test::read_response(fd, pending, r.head, &res);
      if (!e.empty()) return e;
      if (res.status != r.status) return "unexpected status " + std::to_string(res.status) + ": " + res.raw;
      ++*responses;
    }
  }
  return {};
}


// Serves `requests` (round robin) on one keep-alive connection: a warm-up of 120 (60 one at a time, 60 pipelined
// 16-deep) so every reused buffer reaches its steady-state size, then 1000 measured ones (400 one at a time, 600
// pipelined 16-deep), and checks that the loop thread allocated nothing while serving the measured ones.
void check_no_allocation(const std::vector<Req>& requests) {
  // Warm up backtrace() (its first call loads libgcc and allocates).
  void* warm[4];
  backtrace(warm, 4);
  INFO("malloc/calloc/realloc counted too: " << (FA_TEST_COUNT_MALLOC ? "yes" : "no (AddressSanitizer build)"));

  fa_test::LoopHarness h;
  REQUIRE(h.bind_error == "");
  fa::Server& router = *h.server;  // add_route: the server keeps the route statistics
  REQUIRE(router.add_route("GET", "/plaintext", static_text("Hello, World!")) == "");
  fa::NativeRoute health;
  health.kind = fa::NativeRoute::kHealth;
  health.body = "ok";
  REQUIRE(router.add_route("GET", "/health", health) == "");
  fa::NativeRoute score;
  score.kind = fa::NativeRoute::kUser;
  score.fn = &score_handler;
  REQUIRE(router.add_route("GET", "/score/{user_id:int}", score) == "");
  REQUIRE(router.add_route("POST", "/score/{user_id:int}", score) == "");
  REQUIRE(router.add_route("PATCH", "/score/{user_id:int}", score) == "");
  REQUIRE(h.listen() == "");

  ClientResult result;
  g_trace_count.store(0);
  t_loop_thread = true;  // this thread runs uv_run inside h.run()
  const int rc = h.run([&] {
    const int fd = fa_test::connect_loopback(h.port, 5000);
    if (fd < 0) {
      result.error = "connect failed";
      return;
    }
    std::string pending;
    pending.reserve(1 << 16);
    result.error = drive(fd, pending, requests, 60, 1, &result.responses);
    if (result.error.empty()) result.error = drive(fd, pending, requests, 60, 16, &result.responses);
    if (!result.error.empty()) return;
    g_count.store(0);
    g_window.store(true);
    result.error = drive(fd, pending, requests, 400, 1, &result.responses);
    if (result.error.empty()) result.error = drive(fd, pending, requests, 600, 16, &result.responses);
    g_window.store(false);
    result.allocations = g_count.load();
    ::close(fd);
  });
  t_loop_thread = false;

  REQUIRE(result.error == "");
  CHECK(result.responses == 120 + 1000);
  CHECK(h.server->counters().native_requests == 1120);
  if (result.allocations != 0) print_traces();
  INFO("allocations on the loop thread during 1000 native requests: " << result.allocations
                                                                      << " (backtraces on stderr)");
  CHECK(result.allocations == 0);
  CHECK(fa::live_handles() == 0);
  CHECK(rc == 0);
}

}  // namespace

TEST_CASE("native routes: no heap allocation per request in steady state", "[alloc][native]") {
  // Every kind of native answer except metrics (a diagnostics page that renders a fresh text each time) and 405.
  check_no_allocation({
      {"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n", false, 200},
      {"GET /health HTTP/1.1\r\nHost: bench\r\nUser-Agent: t\r\n\r\n", false, 200},
      {"GET /score/12345?detail=1 HTTP/1.1\r\nHost: bench\r\nUser-Agent: counting-client/1.0\r\n"
       "Accept: application/json\r\n\r\n",
       false, 200},
      {"HEAD /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n", true, 200},
      {"POST /score/7 HTTP/1.1\r\nHost: bench\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello world",
       false, 200},
      {"POST /score/8 HTTP/1.1\r\nHost: bench\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n",
       false, 200},
      {"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n", false, 200},
  });
}

TEST_CASE("native routes: no heap allocation per 405 answer in steady state", "[alloc][native]") {
  // 405 is answered natively too; the Allow lists here are short ("GET, HEAD") and long
  // ("GET, POST, PATCH, HEAD": more than std::string's inline capacity).
  check_no_allocation({
      {"DELETE /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n", false, 405},
      {"GET /plaintext HTTP/1.1\r\nHost: bench\r\n\r\n", false, 200},
      {"PUT /score/1 HTTP/1.1\r\nHost: bench\r\nContent-Length: 0\r\n\r\n", false, 405},
  });
}

TEST_CASE("the counting allocator counts (self-test)", "[alloc]") {
  // Makes sure a zero above means "no allocation", not "nothing was counted".
  t_loop_thread = true;
  g_count.store(0);
  g_window.store(true);
  {
    std::string* s = new std::string(100, 'x');
    delete s;
    std::vector<int> v(10);
    (void)v;
#if FA_TEST_COUNT_MALLOC
    void* volatile p = std::malloc(10);
    std::free(p);
#endif
  }
  g_window.store(false);
  t_loop_thread = false;
  CHECK(g_count.load() == (FA_TEST_COUNT_MALLOC ? 4 : 3));
  g_count.store(0);
  g_trace_count.store(0);
}
