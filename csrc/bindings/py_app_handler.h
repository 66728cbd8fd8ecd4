// PyAppHandler: the AppHandler that hands requests to the ASGI app. It builds the scope, creates the request's
// Exchange (send) and Receive, starts the app as a Task running a Runner, and routes core events (body bytes,
// disconnects, drains, WebSocket messages) to the Exchange of the connection.
//
// Lifetime: counted (retain/release). Holders: the PyServer object, every Exchange, and an orphaned core Server
// (one whose PyServer is gone while connections are still closing), so a request Task that outlives the server
// still finds the handler when it completes. release() deletes it at zero; call it with the GIL held.
//
// GIL: core callbacks may arrive without it (uvloop runs uv_run with it released). Every entry point calls gil()
// first, which takes it at most once per libuv callback; on_callback_end() (run by the core's CallbackScope at
// the end of every callback) gives it back. Calls from Python (send/receive) already hold it. No Python exception
// propagates into the core: errors are logged through error_log or PyErr_WriteUnraisable.
#pragma once

#include <Python.h>

#include <cstdint>

#include <cstddef>
#include <string>
#include <string_view>

#include "server/app_handler.h"

namespace fa {

class Server;

class PyAppHandler final : public AppHandler {
 public:
  // A handler with one reference (the caller's), or nullptr with a Python error set (e.g. a loop without
  // create_task). `access_log` (an object with core(client, method, target, version, status) and app(scope,
  // status)) and `state` may be None.
  static PyAppHandler* create(PyObject* loop, PyObject* app, PyObject* error_log, PyObject* access_log,
                              PyObject* state, PyObject* root_path, const char* asgi_version);
  PyAppHandler(const PyAppHandler&) = delete;
  PyAppHandler& operator=(const PyAppHandler&) = delete;

  void retain() { ++refs_; }
  void release();
  // Take over `server`, whose Python owner is gone but whose connections are still closing: it is deleted (and
  // this handler released) at the end of the libuv callback in which its last connection closed.
  void adopt_orphan(Server* server);
  // Handlers alive in the process (tests assert it returns to zero).
  static std::size_t live_count();

  // AppHandler
  void on_request(HttpStream& c, const RequestHead& head) override { dispatch(c, head, false); }
  void on_websocket(HttpStream& c, const RequestHead& head) override;
  bool on_body(HttpStream& c, const char* data, std::size_t len) override;
  void on_body_complete(HttpStream& c) override;
  void on_disconnect(HttpStream& c) override;
  void on_drain(HttpStream& c) override;
  void on_file_sent(HttpStream& c) override;
  void on_closed(Connection& c) override;
  void on_callback_end() override;
  void on_bad_request(HttpStream& c, int status, const char* reason) override;
  void on_timeout(Connection& c, const char* what) override;
  void on_tls_error(Connection& c, const char* reason) override;
  void on_ws_refused(HttpStream& c, int status) override;
  bool on_ws_message(HttpStream& c, bool text, const char* data, std::size_t len) override;
  void on_ws_close(HttpStream& c, int code, std::string_view reason) override;
  void on_over_limit(HttpStream& c) override;
  void on_native_response(HttpStream& c, int status) override;

  // Take the GIL for the rest of this libuv callback (no-op when held).
  void gil() {
    if (!gil_held_ && !PyGILState_Check()) {
      gil_state_ = PyGILState_Ensure();
      gil_held_ = true;
    }
  }
  // Log through the Python error_log callable; never raises (a failing logger is reported as unraisable).
  void log_error(const std::string& message, PyObject* exc);
  // The access line of a response the server answered itself (native route, 503, bad request), from the head.
  void log_access(HttpStream& c, int status);
  // The access line of an app's response, from its scope as the app left it (proxy headers applied), when the
  // response starts (as uvicorn: a stream that fails later still has its line).
  void log_access(PyObject* scope, int status);
  // uvicorn's lines for a WebSocket handshake on the error logger: outcome 101 ("[accepted]", "connection open")
  // or the HTTP status it was refused with ("connection rejected (403 Forbidden)").
  void log_websocket(PyObject* scope, int outcome);
  // Asyncio embedding: `fn` is called (at most once per tick) after Python-side calls that start libuv work.
  void set_wakeup(PyObject* fn) { Py_XSETREF(wakeup_, Py_XNewRef(fn)); }
  void wake();
  void tick_done() { wake_pending_ = false; }
  // fn(level, message) for the server's own events below ERROR (logging levels: 30 WARNING, 10 DEBUG); None: not
  // logged.
  void set_log(PyObject* fn) { Py_XSETREF(log_, fn == Py_None ? nullptr : Py_XNewRef(fn)); }
  void set_ws_log(PyObject* fn) { Py_XSETREF(ws_log_, fn == Py_None ? nullptr : Py_XNewRef(fn)); }
  void log(int level, const std::string& message);
  // Called as fn(scope) for requests carrying x-forwarded-for/-proto, when proxy headers are enabled (None: off).
  void set_proxy_fix(PyObject* fn) { Py_XSETREF(proxy_fix_, fn == Py_None ? nullptr : Py_XNewRef(fn)); }
  // --reset-contextvars: every request Task starts in a fresh, empty contextvars.Context (as uvicorn), instead
  // of a copy of the context current when the server dispatches.
  void set_reset_contextvars(bool on) { reset_contextvars_ = on; }

  // Read by the scope builder and the exchanges (owned references).
  PyObject* create_future_ = nullptr;
  PyObject* state_ = nullptr;            // lifespan state, or nullptr
  PyObject* root_path_ = nullptr;        // str
  PyObject* root_path_bytes_ = nullptr;  // bytes
  // Requests whose Task was started, and those among them whose app had finished when the Task was returned (it
  // ran eagerly, Python 3.12+, and answered without suspending).
  std::uint64_t tasks_started() const { return tasks_started_; }
  std::uint64_t tasks_done_in_first_step() const { return tasks_done_in_first_step_; }
  bool eager_start() const { return eager_task_type_ != nullptr; }

  PyObject* scope_template_ = nullptr;
  PyObject* scope_asgi_ = nullptr;  // scope_template_["asgi"] (borrowed from it): copied into every scope
  PyObject* scope_extensions_ = nullptr;  // scope_template_["extensions"] (borrowed): copied into every scope

 private:
  PyAppHandler() = default;
  ~PyAppHandler() override;
  void dispatch(HttpStream& c, const RequestHead& head, bool websocket);
  bool init_eager_start();               // false with a Python error set
  // The request's Task (new reference), or nullptr with an error set; started eagerly when `eager` and the
  // interpreter and loop allow (init_eager_start).
  PyObject* start_task(PyObject* runner, bool eager);

  PyObject* loop_ = nullptr;
  PyObject* app_ = nullptr;
  PyObject* create_task_ = nullptr;
  PyObject* eager_task_type_ = nullptr;  // asyncio.Task when requests start eagerly (3.12+, no task factory)
  PyObject* eager_kwnames_ = nullptr;    // ("loop", "eager_start")
  bool reset_contextvars_ = false;
  PyObject* error_log_ = nullptr;
  PyObject* access_log_ = nullptr;  // access_log.core (from the head), or nullptr when off
  PyObject* access_app_ = nullptr;  // access_log.app (from the scope)
  PyObject* ws_log_ = nullptr;      // fn(scope, outcome)
  PyObject* wakeup_ = nullptr;
  PyObject* proxy_fix_ = nullptr;
  PyObject* log_ = nullptr;
  Server* orphan_ = nullptr;
  std::size_t refs_ = 1;
  std::uint64_t tasks_started_ = 0;
  std::uint64_t tasks_done_in_first_step_ = 0;
  PyGILState_STATE gil_state_{};
  bool gil_held_ = false;
  bool wake_pending_ = false;
};

}  // namespace fa
