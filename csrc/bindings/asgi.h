// The bridge from the core to the ASGI app: PyAppHandler (an AppHandler), and the per-request Python objects
// (Exchange = the `send` callable, Receive = the `receive` callable, Ready = an already-completed awaitable).
//
// GIL rule: core callbacks may arrive without the GIL (uvloop runs uv_run with it released); every entry point
// here calls gil() first, and on_callback_end() releases what a libuv callback acquired. Calls that come from
// Python (send/receive) already hold it. No Python exception ever propagates into the core: errors are logged
// through error_log or returned to the Python caller.
#pragma once

#include <Python.h>

#include <string>

#include "server/connection.h"
#include "server/server.h"

namespace fa {

struct InternedStrings;

class PyAppHandler final : public AppHandler {
 public:
  PyAppHandler(PyObject* loop, PyObject* app, PyObject* error_log, PyObject* access_log,
               PyObject* state, PyObject* root_path, const char* asgi_version);
  ~PyAppHandler() override;

  void attach(Server* server) { server_ = server; }
  Server* server() const { return server_; }

  // AppHandler
  void on_request(Connection& c, const RequestHead& head) override;
  bool on_body(Connection& c, const char* data, std::size_t len) override;
  void on_body_complete(Connection& c) override;
  void on_disconnect(Connection& c) override;
  void on_drain(Connection& c) override;
  void on_closed(Connection& c) override;
  void on_callback_end() override;
  void on_bad_request(Connection& c, int status, const char* reason) override;
  void on_websocket(Connection& c, const RequestHead& head) override;
  bool on_ws_message(Connection& c, bool text, const char* data, std::size_t len) override;
  void on_ws_close(Connection& c, int code, std::string_view reason) override;
  void on_over_limit(Connection& c) override {
    (void)c;
    log_error("Exceeded concurrency limit.", nullptr);
  }
  void on_native_response(Connection& c, int status) override {
    if (access_log_ == nullptr) return;
    gil();
    log_access(c, status);
  }

  void gil() {
    if (!gil_held_ && !PyGILState_Check()) {
      gil_state_ = PyGILState_Ensure();
      gil_held_ = true;
    }
  }
  // Log through the Python error_log callable; never raises (a failing logger is reported by PyErr_WriteUnraisable).
  void log_error(const std::string& message, PyObject* exc);
  void log_access(Connection& c, int status);
  // Asyncio-embedding: a callable run (via call_soon) after Python-side calls that start libuv watchers.
  void set_wakeup(PyObject* fn) {
    Py_XSETREF(wakeup_, Py_XNewRef(fn));
  }
  void wake();
  void tick_done() { wake_pending_ = false; }
  // When the Python Server object dies with connections still open, the handler deletes itself and the server
  // once the last handle is closed.
  void orphan();
  void dispatch(Connection& c, const RequestHead& head, bool websocket);

  PyObject* loop_;
  PyObject* app_;
  PyObject* create_task_;
  PyObject* create_future_;
  PyObject* error_log_;
  PyObject* access_log_;
  PyObject* state_;
  PyObject* root_path_;         // str
  PyObject* root_path_bytes_;   // bytes
  PyObject* scope_template_;
  PyObject* wakeup_ = nullptr;
  // Called as proxy_fix(scope) for requests carrying x-forwarded-for/-proto, when proxy headers are enabled.
  PyObject* proxy_fix_ = nullptr;
  void set_proxy_fix(PyObject* fn);

 private:
  Server* server_ = nullptr;
  PyGILState_STATE gil_state_{};
  bool gil_held_ = false;
  bool wake_pending_ = false;
  bool orphaned_ = false;
};

// Module-level setup of the Python types; returns false with a Python error set.
bool asgi_types_ready();
// Build the HTTP scope for the request now parsed on `c`. New reference or nullptr with an error set.
// *forwarded is set when the request has an x-forwarded-for or x-forwarded-proto header.
PyObject* build_scope(PyAppHandler& h, Connection& c, const RequestHead& head, bool* forwarded);
// The ASGI websocket scope (uvicorn's key order). New reference or nullptr with an error set.
PyObject* build_ws_scope(PyAppHandler& h, Connection& c, const RequestHead& head, bool* forwarded);
// fasterapi_asgi._core.ClientDisconnected (borrowed).
PyObject* client_disconnected_type();
bool scope_init();

}  // namespace fa
