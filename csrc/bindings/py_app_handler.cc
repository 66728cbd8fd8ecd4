#include "bindings/py_app_handler.h"

#include <llhttp.h>

#include <cstdlib>
#include <new>
#include <string_view>

#include "bindings/exchange.h"
#include "bindings/http_cycle.h"
#include "bindings/py_names.h"
#include "bindings/runner.h"
#include "bindings/scope.h"
#include "bindings/websocket_cycle.h"
#include "http/response.h"
#include "http/websocket.h"
#include "server/connection.h"
#include "server/server.h"
#include "server/stage_clock.h"

namespace fa {

namespace {
std::size_t g_live_handlers = 0;  // changed with the GIL held only
}

PyAppHandler* PyAppHandler::create(PyObject* loop, PyObject* app, PyObject* error_log, PyObject* access_log,
                                   PyObject* state, PyObject* root_path, const char* asgi_version) {
  auto* h = new (std::nothrow) PyAppHandler();
  if (h == nullptr) {
    PyErr_NoMemory();
    return nullptr;
  }
  ++g_live_handlers;
  h->loop_ = Py_NewRef(loop);
  h->app_ = Py_NewRef(app);
  h->error_log_ = Py_NewRef(error_log);
  if (access_log != Py_None) {
    h->access_log_ = PyObject_GetAttrString(access_log, "core");
    h->access_app_ = h->access_log_ != nullptr ? PyObject_GetAttrString(access_log, "app") : nullptr;
    if (h->access_app_ == nullptr) {
      h->release();
      return nullptr;
    }
  }
  h->state_ = state == Py_None ? nullptr : Py_NewRef(state);
  h->root_path_ = Py_NewRef(root_path);
  h->create_task_ = PyObject_GetAttrString(loop, "create_task");
  h->create_future_ = h->create_task_ != nullptr ? PyObject_GetAttrString(loop, "create_future") : nullptr;
  if (h->create_future_ != nullptr && !h->init_eager_start()) {
    h->release();
    return nullptr;
  }
  h->root_path_bytes_ = h->create_future_ != nullptr ? PyUnicode_AsUTF8String(root_path) : nullptr;
  h->scope_template_ = h->root_path_bytes_ != nullptr ? make_scope_template(root_path, asgi_version) : nullptr;
  h->scope_asgi_ = h->scope_template_ != nullptr ? PyDict_GetItemWithError(h->scope_template_, names.asgi) : nullptr;
  h->scope_extensions_ =
      h->scope_asgi_ != nullptr ? PyDict_GetItemWithError(h->scope_template_, names.extensions) : nullptr;
  if (h->scope_extensions_ == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "scope template without 'asgi' or 'extensions'");
    h->release();
    return nullptr;
  }
  return h;
}

// Python 3.12+: requests start as eager Tasks (asyncio.Task(..., eager_start=True)), so the app's first step runs
// at once, inside dispatch, instead of one loop iteration later through call_soon; an app that answers without
// suspending never schedules anything. Only when the loop has no task factory: a factory the user installed
// is always used through loop.create_task. FASTERAPI_ASGI_TASK_START=scheduled turns eager starts off (the Task's
// first step then waits for the loop, as under uvicorn).
bool PyAppHandler::init_eager_start() {
#if PY_VERSION_HEX >= 0x030C0000
  const char* mode = std::getenv("FASTERAPI_ASGI_TASK_START");
  if (mode != nullptr && std::string_view(mode) == "scheduled") return true;
  PyObject* factory = PyObject_CallMethod(loop_, "get_task_factory", nullptr);
  if (factory == nullptr) return false;
  const bool none = factory == Py_None;
  Py_DECREF(factory);
  if (!none) return true;
  PyObject* asyncio = PyImport_ImportModule("asyncio");
  if (asyncio == nullptr) return false;
  eager_task_type_ = PyObject_GetAttrString(asyncio, "Task");
  Py_DECREF(asyncio);
  eager_kwnames_ = eager_task_type_ != nullptr ? Py_BuildValue("(ss)", "loop", "eager_start") : nullptr;
  return eager_kwnames_ != nullptr;
#else
  return true;
#endif
}

PyObject* PyAppHandler::start_task(PyObject* runner, bool eager) {
  if (reset_contextvars_) {
    // A Task copies the context current at its creation: entered here, a new empty one is what it copies (on every
    // Python version, with or without a task factory; an eager first step runs in the Task's copy too).
    PyObject* fresh = PyContext_New();
    if (fresh == nullptr) return nullptr;
    if (PyContext_Enter(fresh) < 0) {
      Py_DECREF(fresh);
      return nullptr;
    }
    reset_contextvars_ = false;
    PyObject* task = start_task(runner, eager);
    reset_contextvars_ = true;
    const int exited = PyContext_Exit(fresh);
    Py_DECREF(fresh);
    if (exited < 0) Py_CLEAR(task);
    return task;
  }
  if (eager && eager_task_type_ != nullptr) {
    PyObject* args[3] = {runner, loop_, Py_True};
    return PyObject_Vectorcall(eager_task_type_, args, 1, eager_kwnames_);
  }
  return PyObject_CallOneArg(create_task_, runner);
}

PyAppHandler::~PyAppHandler() {
  --g_live_handlers;
  Py_XDECREF(loop_);
  Py_XDECREF(app_);
  Py_XDECREF(create_task_);
  Py_XDECREF(eager_task_type_);
  Py_XDECREF(eager_kwnames_);
  Py_XDECREF(create_future_);
  Py_XDECREF(error_log_);
  Py_XDECREF(access_log_);
  Py_XDECREF(access_app_);
  Py_XDECREF(ws_log_);
  Py_XDECREF(state_);
  Py_XDECREF(root_path_);
  Py_XDECREF(root_path_bytes_);
  Py_XDECREF(scope_template_);
  Py_XDECREF(wakeup_);
  Py_XDECREF(proxy_fix_);
  Py_XDECREF(log_);
}

std::size_t PyAppHandler::live_count() { return g_live_handlers; }

void PyAppHandler::release() {
  if (--refs_ == 0) delete this;
}

void PyAppHandler::adopt_orphan(Server* server) {
  orphan_ = server;
  retain();  // the orphaned server still calls into this handler until its last connection has closed
}

void PyAppHandler::on_callback_end() {
  if (orphan_ != nullptr && orphan_->connection_count() == 0) {
    // The Python server object is gone and the last connection just closed: nothing can reach the core server any
    // more. Deleting it and dropping its reference may delete this handler too, so this is the last use of it.
    delete orphan_;
    orphan_ = nullptr;
    gil();
    const bool held = gil_held_;
    const PyGILState_STATE state = gil_state_;
    gil_held_ = false;
    release();
    if (held) PyGILState_Release(state);
    return;
  }
  if (gil_held_) {
    gil_held_ = false;
    PyGILState_Release(gil_state_);
  }
}

void PyAppHandler::wake() {
  if (wakeup_ == nullptr || wake_pending_) return;
  wake_pending_ = true;
  PyObject* r = PyObject_CallNoArgs(wakeup_);
  if (r == nullptr) PyErr_WriteUnraisable(wakeup_);
  Py_XDECREF(r);
}

void PyAppHandler::log_error(const std::string& message, PyObject* exc) {
  gil();
  PyObject *saved_type, *saved_value, *saved_tb;
  PyErr_Fetch(&saved_type, &saved_value, &saved_tb);
  PyObject* r = PyObject_CallFunction(error_log_, "s#O", message.data(), static_cast<Py_ssize_t>(message.size()),
                                      exc != nullptr ? exc : Py_None);
  if (r == nullptr) PyErr_WriteUnraisable(error_log_);
  Py_XDECREF(r);
  PyErr_Restore(saved_type, saved_value, saved_tb);
}

void PyAppHandler::log_access(HttpStream& s, int status) {
  if (access_log_ == nullptr) return;
  const RequestHead& h = s.head();
  const Connection& c = s.connection();
  std::string client = c.is_tcp() ? c.peer_host() + ":" + std::to_string(c.peer_port()) : std::string("-");
  const std::string_view url = h.url_view();
  PyObject* r = PyObject_CallFunction(access_log_, "s#ss#si", client.data(), static_cast<Py_ssize_t>(client.size()),
                                      llhttp_method_name(static_cast<llhttp_method_t>(h.method)), url.data(),
                                      static_cast<Py_ssize_t>(url.size()), http_version_text(h), status);
  if (r == nullptr) PyErr_WriteUnraisable(access_log_);
  Py_XDECREF(r);
}

void PyAppHandler::log_access(PyObject* scope, int status) {
  if (access_app_ == nullptr || scope == nullptr) return;
  PyObject* r = PyObject_CallFunction(access_app_, "Oi", scope, status);
  if (r == nullptr) PyErr_WriteUnraisable(access_app_);
  Py_XDECREF(r);
}

void PyAppHandler::log_websocket(PyObject* scope, int outcome) {
  if (ws_log_ == nullptr || scope == nullptr) return;
  PyObject* r = PyObject_CallFunction(ws_log_, "Oi", scope, outcome);
  if (r == nullptr) PyErr_WriteUnraisable(ws_log_);
  Py_XDECREF(r);
}

namespace {
constexpr int kWarning = 30;  // logging.WARNING
constexpr int kInfo = 20;     // logging.INFO
constexpr int kDebug = 10;    // logging.DEBUG
}  // namespace

void PyAppHandler::log(int level, const std::string& message) {
  if (log_ == nullptr) return;
  gil();
  PyObject *saved_type, *saved_value, *saved_tb;
  PyErr_Fetch(&saved_type, &saved_value, &saved_tb);
  PyObject* r = PyObject_CallFunction(log_, "is#", level, message.data(), static_cast<Py_ssize_t>(message.size()));
  if (r == nullptr) PyErr_WriteUnraisable(log_);
  Py_XDECREF(r);
  PyErr_Restore(saved_type, saved_value, saved_tb);
}

// As uvicorn: the line at WARNING, without the detail.
void PyAppHandler::on_over_limit(HttpStream&) { log(kWarning, "Exceeded concurrency limit."); }

// As uvicorn, whose WebSocket library logs a handshake it refuses through uvicorn's error logger at INFO.
void PyAppHandler::on_ws_refused(HttpStream&, int status) {
  log(kInfo, "connection rejected (" + std::to_string(status) + " " + std::string(reason_phrase(status)) + ")");
}

void PyAppHandler::on_native_response(HttpStream& c, int status) {
  if (access_log_ == nullptr) return;
  gil();
  log_access(c, status);
}

void PyAppHandler::dispatch(HttpStream& c, const RequestHead& head, bool websocket) {
  gil();
  Exchange* ex = nullptr;
  PyObject* receive = nullptr;
  PyObject* task = nullptr;
  if (exchange_create(this, &c, websocket, &ex, &receive)) {
    // The connection's reference, taken before the app runs: with an eager start (Python 3.12+) the app's first
    // step runs inside start_task and may complete the response before start_task returns.
    c.exchange = Py_NewRef(reinterpret_cast<PyObject*>(ex));
    bool forwarded = false;
    PyObject* scope = nullptr;
    {
      StageScope scope_stage(kStageScope);
      scope = websocket ? build_ws_scope(*this, c, head, &forwarded) : build_scope(*this, c, head, &forwarded);
    }
    if (scope != nullptr && proxy_fix_ != nullptr && forwarded) {
      PyObject* r = PyObject_CallOneArg(proxy_fix_, scope);
      if (r == nullptr) Py_CLEAR(scope);
      Py_XDECREF(r);
    }
    PyObject* runner = nullptr;
    if (scope != nullptr) ex->scope = Py_NewRef(scope);  // for the access line (after proxy headers)
    if (scope != nullptr) {
      PyObject* args[3] = {scope, receive, reinterpret_cast<PyObject*>(ex)};
      PyObject* app_coro = PyObject_Vectorcall(app_, args, 3, nullptr);
      if (app_coro != nullptr) {
        runner = runner_new(app_coro, ex);
        Py_DECREF(app_coro);
      }
    }
    if (runner != nullptr) {
      StageScope task_stage(kStageTaskStart);  // an eager first step's app time is nested (kStageApp)
      // Not for a request with a body: its first step would call receive() before the body in the same read is
      // parsed and get it in pieces (a chunk, then an empty final message); scheduled, the app finds the body
      // buffered and gets it in one message, as under uvicorn.
      task = start_task(runner, !head.has_body);
    }
    Py_XDECREF(runner);
    Py_XDECREF(scope);
  }
  Py_XDECREF(receive);
  if (task != nullptr) {
    ++tasks_started_;
    if (ex->app_done) ++tasks_done_in_first_step_;
    // Kept until the app is done, so the Task is not collected while it runs; an app that already finished
    // (eagerly, inside start_task) needs nothing kept.
    if (ex->app_done) Py_DECREF(task);
    else ex->task = task;
    Py_DECREF(reinterpret_cast<PyObject*>(ex));
    return;
  }
  PyObject *t, *v, *tb;
  PyErr_Fetch(&t, &v, &tb);
  PyErr_NormalizeException(&t, &v, &tb);
  log_error("Exception while starting the ASGI application" + request_line(&c), v);
  Py_XDECREF(t);
  Py_XDECREF(v);
  Py_XDECREF(tb);
  if (ex == nullptr) {
    c.close();
    return;
  }
  try {
    if (ex->ws != nullptr) ws_answer_500(ex);
    else http_answer_500(ex);
  } catch (...) {
    c.close();
  }
  detach(ex);
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}

void PyAppHandler::on_websocket(HttpStream& c, const RequestHead& head) { dispatch(c, head, true); }

bool PyAppHandler::on_body(HttpStream& c, const char* data, std::size_t len) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return false;
  gil();
  return http_body_arrived(ex, data, len);
}

void PyAppHandler::on_body_complete(HttpStream& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return;
  gil();
  http_body_complete(ex);
}

void PyAppHandler::on_disconnect(HttpStream& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return;
  gil();
  exchange_disconnected(ex);
}

void PyAppHandler::on_drain(HttpStream& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->drain_waiter == nullptr) return;
  gil();
  resolve(&ex->drain_waiter, Py_None);
}

void PyAppHandler::on_file_sent(HttpStream& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return;
  gil();
  http_file_sent(ex);
}

void PyAppHandler::on_closed(Connection& c) {
  HttpStream& stream = c.http1();
  if (stream.exchange == nullptr && c.app_data == nullptr) return;
  gil();
  if (stream.exchange != nullptr) on_disconnect(stream);
  release_conn_cache(c);
}

// As uvicorn: "Invalid HTTP request received." at WARNING; what was wrong and the request line at DEBUG.
void PyAppHandler::on_bad_request(HttpStream& c, int status, const char* reason) {
  log(kWarning, "Invalid HTTP request received.");
  std::string msg = "Invalid HTTP request (" + std::to_string(status) + ": " + reason + ")";
  if (c.head().url.len > 0 && c.head().url.len < 512) msg += request_line(&c);
  log(kDebug, msg);
}

void PyAppHandler::on_timeout(Connection& c, const char* what) {
  std::string msg = what;
  if (c.is_tcp()) msg += " (client " + c.peer_host() + ":" + std::to_string(c.peer_port()) + ")";
  log(kDebug, msg);
}

void PyAppHandler::on_tls_error(Connection& c, const char* reason) {
  // Debug, as uvicorn (asyncio logs a failed SSL handshake only in debug mode): a scanner or a client that does
  // not trust the certificate is not the server's error. Counted in the metrics.
  std::string msg = std::string("TLS error: ") + reason;
  if (c.is_tcp()) msg += " (client " + c.peer_host() + ":" + std::to_string(c.peer_port()) + ")";
  log(kDebug, msg);
}

bool PyAppHandler::on_ws_message(HttpStream& c, bool text, const char* data, std::size_t len) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->ws == nullptr) return false;
  gil();
  return ws_message_arrived(ex, text, data, len);
}

void PyAppHandler::on_ws_close(HttpStream& c, int code, std::string_view reason) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->ws == nullptr) return;
  gil();
  // uvicorn: the peer's close or a protocol failure carry a reason; a shutdown (1012) does not.
  const bool with_reason = !(code == ws::kCloseServiceRestart && reason.empty() && c.server()->shutting_down());
  ws_session_closing(ex, code, reason, with_reason);
}

}  // namespace fa
