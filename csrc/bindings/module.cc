// fasterapi_asgi._core: the Server object and module functions (cold path, pybind11). The hot-path Python types
// are plain C-API types: awaitables.cc, exchange.cc, runner.cc.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <llhttp.h>
#include <nghttp2/nghttp2.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "bindings/py_app_handler.h"
#include "bindings/ssl_context.h"
#include "bindings/awaitables.h"
#include "bindings/exchange.h"
#include "bindings/py_names.h"
#include "bindings/route_index.h"
#include "bindings/runner.h"
#include "core/uv_api.h"
#include "server/metrics.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace py = pybind11;

namespace fa {
namespace {

void bind_libuv() {
  if (uv_api_bound()) return;
  py::module_ uvloop_loop = py::module_::import("uvloop.loop");
  const std::string path = py::str(uvloop_loop.attr("__file__"));
  std::string error;
  if (!uv_api_bind(path.c_str(), &error)) throw std::runtime_error(error);
}

// A duration option in seconds (uvicorn's float | None): milliseconds, or `off` for None (and for infinity).
// ValueError for negative, NaN and non-numbers.
std::uint64_t seconds_or_off(const py::object& value, const char* name, std::uint64_t off) {
  if (value.is_none()) return off;
  if (!py::isinstance<py::float_>(value) && !py::isinstance<py::int_>(value))
    throw py::type_error(std::string(name) + " must be a number of seconds or None");
  const double s = value.cast<double>();
  if (!(s >= 0.0))  // also NaN
    throw py::value_error(std::string(name) + " must be >= 0 seconds or None, got " + std::string(py::repr(value)));
  if (std::isinf(s) || s * 1000.0 >= 1e15) return off;
  const auto ms = static_cast<std::uint64_t>(s * 1000.0 + 0.5);
  return ms == 0 && s > 0.0 ? 1 : ms;  // a positive duration stays positive (0 means "off" for the interval)
}

class PyServer {
 public:
  PyServer(py::object loop, py::object app, py::object error_log, py::object access_log, std::string root_path,
           bool server_header, bool date_header, std::vector<std::pair<py::bytes, py::bytes>> default_headers,
           double timeout_keep_alive, py::object state, py::object limit_concurrency,
           py::object max_header_bytes, std::string asgi_version, bool stats, bool websocket,
           std::size_t ws_max_size, double timeout_request_header, double timeout_request_body, double timeout_send,
           py::object log, py::object ws_log, py::object ssl_context, double ssl_handshake_timeout,
           long long ws_max_queue, py::object ws_ping_interval, py::object ws_ping_timeout,
           bool ws_per_message_deflate, bool http2, std::uint32_t http2_max_concurrent_streams,
           std::uint32_t http2_initial_window_size, std::uint32_t http2_max_header_list_size) {
    // The WebSocket options first: nothing to undo yet when they are refused.
    if (ws_max_queue < 1)
      throw py::value_error("ws_max_queue must be >= 1 (messages buffered for the app), got " +
                            std::to_string(ws_max_queue));
    const std::uint64_t ping_interval_ms = seconds_or_off(ws_ping_interval, "ws_ping_interval", 0);
    const std::uint64_t ping_timeout_ms =
        seconds_or_off(ws_ping_timeout, "ws_ping_timeout", ServerConfig::kNoPingTimeout);
    bind_libuv();
    py::module_ uvloop_loop = py::module_::import("uvloop.loop");
    py::object loop_type = py::module_::import("uvloop").attr("Loop");
    uv_loop_t* uvl = nullptr;
    if (py::isinstance(loop, loop_type)) {
      py::object capsule = uvloop_loop.attr("libuv_get_loop_t_ptr")(loop);
      uvl = static_cast<uv_loop_t*>(PyCapsule_GetPointer(capsule.ptr(), nullptr));
      if (uvl == nullptr) throw py::error_already_set();
    } else {
      own_loop_ = static_cast<uv_loop_t*>(std::malloc(sizeof(uv_loop_t)));
      const int rc = own_loop_ != nullptr ? uv.uv_loop_init(own_loop_) : UV_ENOMEM;
      if (rc != 0) {
        std::free(own_loop_);
        own_loop_ = nullptr;
        throw std::runtime_error(std::string("cannot create a libuv loop: ") + uv.uv_strerror(rc));
      }
      uvl = own_loop_;
    }
    ServerConfig cfg;
    cfg.keep_alive_ms = static_cast<std::uint64_t>(timeout_keep_alive * 1000.0);
    // 0 turns a bound off; negative values are refused by the Python config before they get here.
    cfg.header_timeout_ms = static_cast<std::uint64_t>(timeout_request_header * 1000.0);
    cfg.body_timeout_ms = static_cast<std::uint64_t>(timeout_request_body * 1000.0);
    cfg.send_timeout_ms = static_cast<std::uint64_t>(timeout_send * 1000.0);
    if (!limit_concurrency.is_none()) cfg.limit_concurrency = limit_concurrency.cast<std::size_t>();
    if (!max_header_bytes.is_none()) cfg.limits.max_header_bytes = max_header_bytes.cast<std::size_t>();
    cfg.defaults.date_header = date_header;
    cfg.websocket = websocket;
    if (ws_max_size == 0) {
      free_own_loop();
      throw py::value_error("ws_max_size must be positive");
    }
    cfg.ws_max_message = ws_max_size;
    cfg.ws_max_queue = static_cast<std::size_t>(ws_max_queue);
    cfg.ws_ping_interval_ms = ping_interval_ms;
    cfg.ws_ping_timeout_ms = ping_timeout_ms;
    cfg.ws_per_message_deflate = ws_per_message_deflate;
    cfg.http2.enabled = http2;
    cfg.http2.max_concurrent_streams = http2_max_concurrent_streams;
    cfg.http2.initial_stream_window = http2_initial_window_size;
    cfg.http2.max_header_list_size = http2_max_header_list_size;
    if (http2 && (http2_max_concurrent_streams < 1 || http2_initial_window_size < 1024 ||
                  http2_initial_window_size > 0x7fffffffu || http2_max_header_list_size < 1024)) {
      free_own_loop();
      throw py::value_error("invalid HTTP/2 limits (streams >= 1, window 1024..2^31-1, header list >= 1024)");
    }
    if (!ssl_context.is_none()) {
      cfg.tls = tls_context_from_python(ssl_context.ptr(), http2);
      if (cfg.tls == nullptr) {
        free_own_loop();
        throw py::error_already_set();
      }
      if (ssl_handshake_timeout <= 0) {
        free_own_loop();
        throw py::value_error("ssl_handshake_timeout must be positive");
      }
      cfg.tls_handshake_timeout_ms = static_cast<std::uint64_t>(ssl_handshake_timeout * 1000.0);
    }
    bool has_server = false;
    std::string custom;
    for (auto& [n, v] : default_headers) {
      const std::string name = n, value = v;
      if (header_error(name, value) != nullptr) {
        free_own_loop();
        throw py::value_error("invalid default header: " + name);
      }
      if (ascii_iequals(name, "server")) has_server = true;
      custom += name + ": " + value + "\r\n";
    }
    if (server_header && !has_server) cfg.defaults.header_block = "server: fasterapi-asgi\r\n";
    cfg.defaults.header_block += custom;
    py::object root = py::str(root_path);
    if (asgi_version != "3.0" && asgi_version != "2.0") {
      free_own_loop();
      throw py::value_error("asgi_version must be '3.0' or '2.0'");
    }
    handler_ = PyAppHandler::create(loop.ptr(), app.ptr(), error_log.ptr(), access_log.ptr(), state.ptr(), root.ptr(),
                                    asgi_version.c_str());
    if (handler_ == nullptr) {
      free_own_loop();
      throw py::error_already_set();
    }
    handler_->set_log(log.ptr());
    handler_->set_ws_log(ws_log.ptr());
    server_ = new Server(uvl, handler_, std::move(cfg));
    if (stats) stage_clock().enable();
    if (own_loop_ != nullptr) {
      try {
        embed_ = py::module_::import("fasterapi_asgi._embed")
                     .attr("Embedded")(loop, py::cast(this, py::return_value_policy::reference));
      } catch (...) {
        delete server_;
        server_ = nullptr;
        handler_->release();
        handler_ = nullptr;
        free_own_loop();
        throw;
      }
    }
  }

  // Ownership: the handler is counted (this object holds one reference, every request's Exchange one), so a
  // request Task that outlives this object still finds it. The core server is deleted here when no connection is
  // left, else handed to the handler, which deletes it once the last connection has closed.
  ~PyServer() {
    if (server_ == nullptr) return;
    server_->close_all();
    if (own_loop_ != nullptr) {
      if (!embed_.is_none()) embed_.attr("detach")();
      // Run the private loop until every close callback has fired, then free it.
      for (int i = 0; i < 100 && server_->connection_count() > 0; ++i) run_once();
      run_once();
    }
    handler_->set_wakeup(nullptr);
    if (server_->connection_count() == 0) delete server_;
    else handler_->adopt_orphan(server_);
    server_ = nullptr;
    handler_->release();
    handler_ = nullptr;
    if (own_loop_ != nullptr && uv.uv_loop_close(own_loop_) == 0) free_own_loop();  // else leaked, not freed in use
  }

  void listen(py::object sock, int backlog) {
    const int fd = sock.attr("fileno")().cast<int>();
    const std::string err = server_->listen_fd(fd, backlog);
    if (!err.empty()) throw std::runtime_error(err);
    wake();
  }
  void stop_accepting() {
    server_->stop_accepting();
    wake();
  }
  void shutdown() {
    server_->shutdown();
    wake();
  }
  void close() {
    server_->close_all();
    wake();
  }
  std::size_t connections() const { return server_->connection_count(); }
  std::size_t active_requests() const { return server_->active_requests(); }
  py::dict stats() {
    const ServerCounters& k = server_->counters();
    py::dict d;
    d["requests"] = k.requests;
    d["native_requests"] = k.native_requests;
    d["connections_total"] = k.connections_total;
    d["connections_open"] = server_->connection_count();
    d["bytes_in"] = k.bytes_in;
    d["bytes_out"] = k.bytes_out;
    d["bad_requests"] = k.bad_requests;
    d["tls_handshake_failures"] = k.tls_handshake_failures;
    d["files_sent"] = k.files_sent;
    d["sendfile_bytes"] = k.sendfile_bytes;
    d["responses_5xx"] = k.responses_5xx;
    d["app_tasks"] = handler_->tasks_started();
    d["app_done_in_first_step"] = handler_->tasks_done_in_first_step();
    d["eager_start"] = handler_->eager_start();
    const StageClock& clock = stage_clock();
    if (clock.enabled()) {
      d["cpu_ns"] = clock.thread_cpu_ns();
      for (int s = 0; s < kStageCount; ++s) {
        d[py::str(std::string("stage_") + stage_name(s) + "_ns")] = clock.ns(s);
        d[py::str(std::string("stage_") + stage_name(s) + "_count")] = clock.count(s);
      }
    }
    return d;
  }

  // ---- native routes ----
  void add_static_route(const std::string& method, const std::string& pattern, int status,
                        const std::vector<std::pair<std::string, std::string>>& headers, py::bytes body) {
    NativeRoute r;
    r.kind = NativeRoute::kStatic;
    r.status = status;
    r.body = body;
    for (const auto& [n, v] : headers) {
      if (header_error(n, v) != nullptr) throw py::value_error("invalid header: " + n);
      r.headers += n + ": " + v + "\r\n";
    }
    const bool no_body = status < 200 || status == 204 || status == 304;
    if (!no_body) r.headers += "content-length: " + std::to_string(r.body.size()) + "\r\n";
    else r.body.clear();
    add(method, pattern, std::move(r));
  }
  void add_health_route(const std::string& method, const std::string& pattern, py::bytes body) {
    NativeRoute r;
    r.kind = NativeRoute::kHealth;
    r.body = body;
    add(method, pattern, std::move(r));
  }
  void add_metrics_route(const std::string& method, const std::string& pattern) {
    NativeRoute r;
    r.kind = NativeRoute::kMetrics;
    add(method, pattern, std::move(r));
  }
  void add_user_route(const std::string& method, const std::string& pattern, const std::string& library,
                      const std::string& symbol, std::uintptr_t user_data) {
    void* handle = dlopen(library.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle == nullptr) throw std::runtime_error("cannot load native handler library " + library + ": " + dlerror());
    auto abi = reinterpret_cast<fa_native_abi_version_fn>(dlsym(handle, "fa_native_abi_version"));
    if (abi == nullptr)
      throw std::runtime_error(library + " does not export fa_native_abi_version(); build it against "
                               "fasterapi_asgi/native.h");
    if (abi() != FA_NATIVE_ABI_VERSION)
      throw std::runtime_error(library + " was built for native ABI version " + std::to_string(abi()) +
                               ", this server speaks version " + std::to_string(FA_NATIVE_ABI_VERSION));
    auto fn = reinterpret_cast<fa_native_handler_fn>(dlsym(handle, symbol.c_str()));
    if (fn == nullptr) throw std::runtime_error(library + " has no exported symbol '" + symbol + "'");
    NativeRoute r;
    r.kind = NativeRoute::kUser;
    r.fn = fn;
    r.user_data = reinterpret_cast<void*>(user_data);
    add(method, pattern, std::move(r));
  }
  // A directory served under `prefix` (registered for `method` on `prefix`, `prefix`/ and
  // `prefix`/{path:path}). The root is opened now (the root itself may be a symlink); its descriptor lives as
  // long as the routes (StaticFiles, shared by the three).
  void add_directory_route(const std::string& method, const std::string& prefix, const std::string& directory,
                           unsigned flags, const std::vector<std::pair<std::string, std::string>>& headers) {
    auto files = std::make_shared<StaticFiles>();
    files->root_fd = ::open(directory.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (files->root_fd < 0) throw py::value_error("not a directory: " + directory);
    files->flags = flags;
    files->prefix = prefix;
    while (!files->prefix.empty() && files->prefix.back() == '/') files->prefix.pop_back();
    files->headers = checked_headers(headers);
    std::shared_ptr<const StaticFiles> shared = files;
    const std::string& base = files->prefix;
    std::vector<std::string> patterns;
    if (!base.empty()) patterns.push_back(base);
    patterns.push_back(base + "/");
    patterns.push_back(base + "/{path:path}");
    for (const std::string& pattern : patterns) {
      NativeRoute r;
      r.kind = NativeRoute::kDirectory;
      r.files = shared;
      add(method, pattern, std::move(r));
    }
  }
  // One file read from disk at each request (sent with sendfile(2)), with the same validators, ranges and
  // precompressed siblings as a directory route.
  void add_disk_file_route(const std::string& method, const std::string& pattern, const std::string& path,
                           const std::string& content_type, unsigned flags,
                           const std::vector<std::pair<std::string, std::string>>& headers) {
    auto files = std::make_shared<StaticFiles>();
    files->file = path;
    files->content_type = content_type;
    if (header_error("content-type", content_type) != nullptr) throw py::value_error("invalid content type");
    files->flags = flags & ~static_cast<unsigned>(StaticFiles::kHtml);
    files->headers = checked_headers(headers);
    NativeRoute r;
    r.kind = NativeRoute::kDiskFile;
    r.files = std::move(files);
    add(method, pattern, std::move(r));
  }
  py::object match_native(const std::string& method, const std::string& path) {
    const NativeRoute* r = nullptr;
    std::string allow;
    switch (server_->router().match(method, path, &r, nullptr, &allow)) {
      case Router::Match::kFound: return py::str(r->pattern);
      case Router::Match::kMethodNotAllowed: return py::str("405");
      default: return py::none();
    }
  }
  std::string metrics_text() const { return render_metrics(*server_); }

  // ---- asyncio embedding (private loop) ----
  int backend_fd() const { return own_loop_ != nullptr ? uv.uv_backend_fd(own_loop_) : -1; }
  int backend_timeout() const { return own_loop_ != nullptr ? uv.uv_backend_timeout(own_loop_) : -1; }
  void run_once() {
    if (own_loop_ == nullptr) return;
    handler_->tick_done();
    {
      py::gil_scoped_release release;
      uv.uv_run(own_loop_, UV_RUN_NOWAIT);
    }
  }
  void set_wakeup(py::object fn) { handler_->set_wakeup(fn.is_none() ? nullptr : fn.ptr()); }
  void set_proxy_fix(py::object fn) { handler_->set_proxy_fix(fn.ptr()); }
  void set_reset_contextvars(bool on) { handler_->set_reset_contextvars(on); }
  bool embedded() const { return own_loop_ != nullptr; }

 private:
  void add(const std::string& method, const std::string& pattern, NativeRoute r) {
    const std::string err = server_->add_route(method, pattern, std::move(r));
    if (!err.empty()) throw py::value_error(err);
  }
  static std::vector<std::pair<std::string, std::string>> checked_headers(
      const std::vector<std::pair<std::string, std::string>>& headers) {
    for (const auto& [n, v] : headers)
      if (header_error(n, v) != nullptr) throw py::value_error("invalid header: " + n);
    return headers;
  }
  void wake() { handler_->wake(); }
  // Constructor failure paths: the private loop has no handle yet.
  void free_own_loop() {
    if (own_loop_ == nullptr) return;
    uv.uv_loop_close(own_loop_);
    std::free(own_loop_);
    own_loop_ = nullptr;
  }

  PyAppHandler* handler_ = nullptr;
  Server* server_ = nullptr;
  uv_loop_t* own_loop_ = nullptr;
  py::object embed_ = py::none();
};

}  // namespace
}  // namespace fa

// The module needs the GIL: on a free-threaded Python (3.13t, 3.14t) importing it turns the GIL back on for the
// process. pybind11 3's multi-phase init then leaves out the Py_mod_gil slot, CPython's way of saying "GIL used";
// py::mod_gil_not_used() would claim the opposite, which the bindings do not yet earn (docs/architecture.md,
// "Free-threaded Python": the GIL is what serialises the loop thread with other threads' calls into a server, and
// what keeps the borrowed references and the process-wide counters safe).
PYBIND11_MODULE(_core, mod, py::mod_gil_used()) {
  using fa::PyServer;
  mod.doc() = "fasterapi-asgi native core (private; use the fasterapi_asgi package)";
  if (!fa::py_names_init() || !fa::awaitables_init() || !fa::exchange_types_init() || !fa::runner_type_init() ||
      !fa::route_index_types_init())
    throw py::error_already_set();
  // The native route index for Starlette/FastAPI routers (fasterapi_asgi/route_index.py).
  mod.attr("IndexedRouterApp") = py::reinterpret_borrow<py::object>(fa::indexed_router_app_type());
  mod.def(
      "route_index_counters",
      [] {
        unsigned long long lookups = 0, plain = 0;
        fa::route_index_counters(&lookups, &plain);
        return std::make_pair(lookups, plain);
      },
      "(requests routed through a route index, requests that took the plain scan) since start-up.");
  mod.attr("LIBUV_HEADER_VERSION") = UV_VERSION_HEX;
  // The llhttp release compiled in (its header's own version; the pinned sources or a system llhttp).
  mod.attr("LLHTTP_VERSION") = std::to_string(LLHTTP_VERSION_MAJOR) + "." + std::to_string(LLHTTP_VERSION_MINOR) +
                               "." + std::to_string(LLHTTP_VERSION_PATCH);
  // The nghttp2 release compiled in (HTTP/2 framing; CMakeLists.txt pins it).
  mod.attr("NGHTTP2_VERSION") = nghttp2_version(0)->version_str;
  mod.attr("NATIVE_ABI_VERSION") = FA_NATIVE_ABI_VERSION;
  // Raised by a WebSocket send() after the client went away (an OSError, as uvicorn's ClientDisconnected).
  mod.attr("ClientDisconnected") = py::reinterpret_borrow<py::object>(fa::names.client_disconnected);
  mod.def("libuv_bind", [](const std::string& path) {
    std::string error;
    if (!fa::uv_api_bind(path.c_str(), &error)) throw std::runtime_error(error);
    return fa::uv.uv_version();
  });
  mod.def("live_handles", &fa::live_handles);
  mod.def("live_app_handlers", &fa::PyAppHandler::live_count,
          "App handlers alive (a request Task keeps its server's alive after the Server object is gone).");
  py::class_<PyServer>(mod, "Server")
      .def(py::init<py::object, py::object, py::object, py::object, std::string, bool, bool,
                    std::vector<std::pair<py::bytes, py::bytes>>, double, py::object, py::object, py::object,
                    std::string, bool, bool, std::size_t, double, double, double, py::object, py::object,
                    py::object, double, long long, py::object, py::object, bool, bool, std::uint32_t,
                    std::uint32_t, std::uint32_t>(),
           py::arg("loop"), py::arg("app"), py::kw_only(), py::arg("error_log"), py::arg("access_log") = py::none(),
           py::arg("root_path") = "", py::arg("server_header") = true, py::arg("date_header") = true,
           py::arg("default_headers") = std::vector<std::pair<py::bytes, py::bytes>>{},
           py::arg("timeout_keep_alive") = 5.0, py::arg("state") = py::none(),
           py::arg("limit_concurrency") = py::none(), py::arg("h11_max_incomplete_event_size") = py::none(),
           py::arg("asgi_version") = "3.0", py::arg("stats") = false, py::arg("websocket") = true,
           py::arg("ws_max_size") = fa::ws::kDefaultMaxMessage, py::arg("timeout_request_header") = 30.0,
           py::arg("timeout_request_body") = 60.0, py::arg("timeout_send") = 60.0, py::arg("log") = py::none(),
           py::arg("ws_log") = py::none(), py::arg("ssl_context") = py::none(),
           py::arg("ssl_handshake_timeout") = 60.0, py::arg("ws_max_queue") = 32,
           py::arg("ws_ping_interval") = 20.0, py::arg("ws_ping_timeout") = 20.0, py::arg("ws_per_message_deflate") = true,
           py::arg("http2") = false, py::arg("http2_max_concurrent_streams") = 100,
           py::arg("http2_initial_window_size") = 65535, py::arg("http2_max_header_list_size") = 65536)
      .def("listen", &PyServer::listen, py::arg("sock"), py::arg("backlog") = 2048)
      .def("stop_accepting", &PyServer::stop_accepting)
      .def("shutdown", &PyServer::shutdown)
      .def("close", &PyServer::close)
      .def_property_readonly("connections", &PyServer::connections)
      .def_property_readonly("active_requests", &PyServer::active_requests)
      .def("stats", &PyServer::stats)
      .def("add_static_route", &PyServer::add_static_route)
      .def("add_health_route", &PyServer::add_health_route)
      .def("add_metrics_route", &PyServer::add_metrics_route)
      .def("add_user_route", &PyServer::add_user_route)
      .def("add_directory_route", &PyServer::add_directory_route)
      .def("add_disk_file_route", &PyServer::add_disk_file_route)
      .def("match_native", &PyServer::match_native)
      .def("metrics_text", &PyServer::metrics_text)
      .def("_backend_fd", &PyServer::backend_fd)
      .def("_backend_timeout", &PyServer::backend_timeout)
      .def("_run_once", &PyServer::run_once)
      .def("_set_wakeup", &PyServer::set_wakeup)
      .def("set_reset_contextvars", &PyServer::set_reset_contextvars, py::arg("on"))
      .def("set_proxy_headers", &PyServer::set_proxy_fix, py::arg("rewrite"),
           "Call rewrite(scope) for requests that carry x-forwarded-for / x-forwarded-proto (None: off).")
      .def_property_readonly("embedded", &PyServer::embedded);
}
