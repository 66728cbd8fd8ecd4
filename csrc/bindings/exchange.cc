#include "bindings/exchange.h"

#include <llhttp.h>

#include <algorithm>
#include <new>

#include "bindings/py_app_handler.h"
#include "bindings/awaitables.h"
#include "bindings/http_cycle.h"
#include "bindings/py_names.h"
#include "bindings/websocket_cycle.h"
#include "server/connection.h"
#include "server/stage_clock.h"

namespace fa {

namespace {

struct Receive {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  Exchange* ex;
};

PyTypeObject ExchangeType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject ReceiveType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// Free lists of the per-request objects (GIL held): a finished request's Send and Receive keep their memory (and the
// Send its body-chunk vector) for the next request, as CPython's own free lists do. An object taken from a list
// is re-initialised with PyObject_Init (type, reference count 1) and tracked again by the GC.
constexpr int kPoolMax = 64;
Exchange* g_exchange_pool[kPoolMax];
int g_exchange_pool_size = 0;
Receive* g_receive_pool[kPoolMax];
int g_receive_pool_size = 0;

// No C++ exception may unwind through the CPython frames that called us: an allocation failure in the core
// (std::bad_alloc from a std::string) becomes MemoryError, anything else a RuntimeError.
template <class Fn>
PyObject* guarded(Fn&& fn) {
  try {
    return fn();
  } catch (const std::bad_alloc&) {
    return PyErr_NoMemory();
  } catch (const std::exception& e) {
    PyErr_Format(PyExc_RuntimeError, "fasterapi-asgi internal error: %s", e.what());
    return nullptr;
  } catch (...) {
    PyErr_SetString(PyExc_RuntimeError, "fasterapi-asgi internal error");
    return nullptr;
  }
}

PyObject* receive_call(PyObject* self, PyObject* const*, size_t nargsf, PyObject* kwnames) {
  if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != nullptr) {
    PyErr_SetString(PyExc_TypeError, "receive() takes no arguments");
    return nullptr;
  }
  Exchange* ex = reinterpret_cast<Receive*>(self)->ex;
  StageScope receive_stage(kStageReceive);
  return guarded([ex] { return ex->ws != nullptr ? ws_receive(ex) : http_receive(ex); });
}

PyObject* send_call(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  if (PyVectorcall_NARGS(nargsf) != 1 || kwnames != nullptr) {
    PyErr_SetString(PyExc_TypeError, "send() takes exactly one argument (the message)");
    return nullptr;
  }
  PyObject* message = args[0];
  if (!PyDict_Check(message)) {
    PyErr_SetString(PyExc_TypeError, "ASGI message must be a dict");
    return nullptr;
  }
  PyObject* type = PyDict_GetItemWithError(message, names.type);
  if (type == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "type");
    return nullptr;
  }
  StageScope send_stage(kStageSend);  // the write system call inside is its own stage (kStageWrite)
  return guarded([&] { return ex->ws != nullptr ? ws_send(ex, message, type) : http_send(ex, message, type); });
}

int exchange_traverse(PyObject* self, visitproc visit, void* arg) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  Py_VISIT(ex->receive_waiter);
  if (ex->more_waiters != nullptr)
    for (PyObject* w : *ex->more_waiters) Py_VISIT(w);
  Py_VISIT(ex->drain_waiter);
  Py_VISIT(ex->task);
  Py_VISIT(ex->scope);
  return 0;
}
int exchange_clear(PyObject* self) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  Py_CLEAR(ex->receive_waiter);
  if (ex->more_waiters != nullptr)
    for (PyObject*& w : *ex->more_waiters) Py_CLEAR(w);
  Py_CLEAR(ex->drain_waiter);
  Py_CLEAR(ex->task);
  Py_CLEAR(ex->scope);
  return 0;
}
void exchange_dealloc(PyObject* self) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  PyObject_GC_UnTrack(self);
  exchange_clear(self);
  if (ex->chunks != nullptr) clear_chunks(ex);
  delete ex->more_waiters;
  ex->more_waiters = nullptr;
  delete ex->ws;
  ex->ws = nullptr;
  PyAppHandler* handler = ex->handler;
  ex->handler = nullptr;
  if (ex->chunks != nullptr && g_exchange_pool_size < kPoolMax) {
    g_exchange_pool[g_exchange_pool_size++] = ex;  // untracked, cleared; the chunk vector is kept
  } else {
    delete ex->chunks;
    PyObject_GC_Del(self);
  }
  if (handler != nullptr) handler->release();  // may delete the handler: last
}

int receive_traverse(PyObject* self, visitproc visit, void* arg) {
  Py_VISIT(reinterpret_cast<PyObject*>(reinterpret_cast<Receive*>(self)->ex));
  return 0;
}
int receive_clear(PyObject* self) {
  Receive* r = reinterpret_cast<Receive*>(self);
  Py_CLEAR(r->ex);
  return 0;
}
void receive_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  receive_clear(self);
  if (g_receive_pool_size < kPoolMax) g_receive_pool[g_receive_pool_size++] = reinterpret_cast<Receive*>(self);
  else PyObject_GC_Del(self);
}

}  // namespace

PyObject* type_message(PyObject* type) {
  PyObject* d = PyDict_New();
  if (d != nullptr && PyDict_SetItem(d, names.type, type) < 0) Py_CLEAR(d);
  return d;
}

bool exchange_types_init() {
  ExchangeType.tp_name = "fasterapi_asgi._core.Send";
  ExchangeType.tp_basicsize = sizeof(Exchange);
  ExchangeType.tp_dealloc = exchange_dealloc;
  ExchangeType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  ExchangeType.tp_vectorcall_offset = offsetof(Exchange, vectorcall);
  ExchangeType.tp_call = PyVectorcall_Call;
  ExchangeType.tp_traverse = exchange_traverse;
  ExchangeType.tp_clear = exchange_clear;

  ReceiveType.tp_name = "fasterapi_asgi._core.Receive";
  ReceiveType.tp_basicsize = sizeof(Receive);
  ReceiveType.tp_dealloc = receive_dealloc;
  ReceiveType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  ReceiveType.tp_vectorcall_offset = offsetof(Receive, vectorcall);
  ReceiveType.tp_call = PyVectorcall_Call;
  ReceiveType.tp_traverse = receive_traverse;
  ReceiveType.tp_clear = receive_clear;
  return PyType_Ready(&ExchangeType) == 0 && PyType_Ready(&ReceiveType) == 0;
}

bool exchange_create(PyAppHandler* handler, HttpStream* c, bool websocket, Exchange** out_ex, PyObject** out_receive) {
  WsState* ws = websocket ? new (std::nothrow) WsState() : nullptr;
  if (websocket && ws == nullptr) {
    PyErr_NoMemory();
    return false;
  }
  Exchange* ex;
  std::vector<PyObject*>* chunks;
  if (g_exchange_pool_size > 0) {
    ex = g_exchange_pool[--g_exchange_pool_size];
    chunks = ex->chunks;  // empty (cleared in dealloc), its capacity kept
    PyObject_Init(reinterpret_cast<PyObject*>(ex), &ExchangeType);
  } else {
    chunks = new (std::nothrow) std::vector<PyObject*>();
    if (chunks == nullptr) {
      delete ws;
      PyErr_NoMemory();
      return false;
    }
    ex = PyObject_GC_New(Exchange, &ExchangeType);
    if (ex == nullptr) {
      delete chunks;
      delete ws;
      return false;
    }
  }
  ex->vectorcall = send_call;
  ex->handler = handler;
  handler->retain();
  ex->conn = c;
  ex->chunks = chunks;
  ex->receive_waiter = ex->drain_waiter = ex->task = nullptr;
  ex->more_waiters = nullptr;
  ex->scope = nullptr;
  ex->buffered = 0;
  ex->status = 0;
  ex->body_complete = ex->disconnected = ex->response_started = ex->response_complete = false;
  ex->body_paused = ex->app_done = ex->final_delivered = ex->file_pending = false;
  ex->trailers_expected = ex->awaiting_trailers = false;
  ex->ws = ws;
  PyObject_GC_Track(reinterpret_cast<PyObject*>(ex));
  Receive* r;
  if (g_receive_pool_size > 0) {
    r = g_receive_pool[--g_receive_pool_size];
    PyObject_Init(reinterpret_cast<PyObject*>(r), &ReceiveType);
  } else {
    r = PyObject_GC_New(Receive, &ReceiveType);
  }
  if (r == nullptr) {
    ex->conn = nullptr;
    Py_DECREF(reinterpret_cast<PyObject*>(ex));
    return false;
  }
  r->vectorcall = receive_call;
  r->ex = reinterpret_cast<Exchange*>(Py_NewRef(reinterpret_cast<PyObject*>(ex)));
  PyObject_GC_Track(reinterpret_cast<PyObject*>(r));
  *out_ex = ex;
  *out_receive = reinterpret_cast<PyObject*>(r);
  return true;
}

PyObject* new_future(Exchange* ex) { return PyObject_CallNoArgs(ex->handler->create_future_); }

PyObject* park_receive(Exchange* ex) {
  PyObject* fut = new_future(ex);
  if (fut == nullptr) return nullptr;
  if (!live_waiter(&ex->receive_waiter)) {
    ex->receive_waiter = Py_NewRef(fut);
  } else {
    if (ex->more_waiters == nullptr) ex->more_waiters = new std::vector<PyObject*>();
    auto& more = *ex->more_waiters;
    more.erase(std::remove_if(more.begin(), more.end(), [](PyObject*& w) { return !live_waiter(&w); }), more.end());
    more.push_back(Py_NewRef(fut));
  }
  ex->handler->wake();
  return fut;
}

PyObject** waiting_receive(Exchange* ex) {
  if (live_waiter(&ex->receive_waiter)) return &ex->receive_waiter;
  if (ex->more_waiters != nullptr)
    for (PyObject*& w : *ex->more_waiters)
      if (live_waiter(&w)) return &w;
  return nullptr;
}

void resolve_all_receives(Exchange* ex, PyObject* message) {
  while (PyObject** slot = waiting_receive(ex)) {
    PyObject* copy = message != nullptr ? PyDict_Copy(message) : nullptr;
    resolve(slot, copy != nullptr ? copy : Py_None);
    Py_XDECREF(copy);
  }
}

void resolve(PyObject** waiter, PyObject* value) {
  PyObject* fut = *waiter;
  if (fut == nullptr) return;
  *waiter = nullptr;
  // A waiter the app cancelled (receive() under a timeout, anyio cancel scopes) is done already: skip it.
  PyObject* done = PyObject_CallMethod(fut, "done", nullptr);
  if (done != nullptr && done == Py_False) {
    PyObject* r = PyObject_CallMethod(fut, "set_result", "O", value);
    if (r == nullptr) PyErr_WriteUnraisable(fut);
    Py_XDECREF(r);
  } else if (done == nullptr) {
    PyErr_WriteUnraisable(fut);
  }
  Py_XDECREF(done);
  Py_DECREF(fut);
}

bool live_waiter(PyObject** waiter) {
  if (*waiter == nullptr) return false;
  PyObject* done = PyObject_CallMethod(*waiter, "done", nullptr);
  if (done == nullptr) {
    PyErr_WriteUnraisable(*waiter);
    return true;
  }
  const bool is_done = done == Py_True;
  Py_DECREF(done);
  if (is_done) Py_CLEAR(*waiter);
  return !is_done;
}

void clear_chunks(Exchange* ex) {
  if (ex->chunks == nullptr) return;
  for (PyObject* o : *ex->chunks) Py_DECREF(o);
  ex->chunks->clear();
  ex->buffered = 0;
}

void detach(Exchange* ex) {
  HttpStream* c = ex->conn;
  if (c == nullptr) return;
  ex->conn = nullptr;
  if (c->exchange == ex) {
    c->exchange = nullptr;
    Py_DECREF(reinterpret_cast<PyObject*>(ex));  // the connection's reference; the caller still holds one
  }
}

void complete_response(Exchange* ex) {
  ex->response_complete = true;
  HttpStream* c = ex->conn;
  Py_INCREF(reinterpret_cast<PyObject*>(ex));
  if (c != nullptr) {
    detach(ex);
    c->finish_response();
  }
  clear_chunks(ex);
  if (waiting_receive(ex) != nullptr) {
    PyObject* msg = ex->ws != nullptr && ex->ws->disconnect != nullptr ? PyDict_Copy(ex->ws->disconnect)
                                                                      : type_message(names.http_disconnect);
    resolve_all_receives(ex, msg);
    Py_XDECREF(msg);
  }
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}

PyObject* drain_or_ready(Exchange* ex) {
  if (ex->conn != nullptr && !ex->conn->closing() && ex->conn->want_drain()) {
    PyObject* fut = new_future(ex);
    if (fut == nullptr) return nullptr;
    Py_XSETREF(ex->drain_waiter, Py_NewRef(fut));
    return fut;
  }
  return ready_none();
}

void exchange_disconnected(Exchange* ex) {
  Py_INCREF(reinterpret_cast<PyObject*>(ex));
  ex->disconnected = true;
  detach(ex);
  clear_chunks(ex);
  if (ex->ws != nullptr) {
    ws_stream_lost(ex);
  } else if (waiting_receive(ex) != nullptr) {
    PyObject* msg = type_message(names.http_disconnect);
    resolve_all_receives(ex, msg);
    Py_XDECREF(msg);
  }
  resolve(&ex->drain_waiter, Py_None);
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}

PyObject* runtime_error(const char* fmt, PyObject* arg) {
  if (arg != nullptr) PyErr_Format(PyExc_RuntimeError, fmt, arg);
  else PyErr_SetString(PyExc_RuntimeError, fmt);
  return nullptr;
}

bool get_bytes(PyObject* o, std::string_view* out) {
  if (PyBytes_Check(o)) {
    *out = std::string_view(PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
    return true;
  }
  if (PyByteArray_Check(o)) {
    *out = std::string_view(PyByteArray_AS_STRING(o), static_cast<std::size_t>(PyByteArray_GET_SIZE(o)));
    return true;
  }
  return false;
}

bool type_is(PyObject* type, PyObject* interned) {
  return type == interned || (PyUnicode_Check(type) && PyUnicode_Compare(type, interned) == 0);
}

const char* http_version_text(const RequestHead& head) {
  return head.http_major == 2 ? "2" : head.http_minor == 0 ? "1.0" : "1.1";
}

std::string request_line(const HttpStream* c) {
  if (c == nullptr) return {};
  const RequestHead& h = c->head();
  std::string s = " (\"";
  s += llhttp_method_name(static_cast<llhttp_method_t>(h.method));
  s += ' ';
  s += h.url_view();
  s += " HTTP/";
  s += http_version_text(h);
  s += "\")";
  return s;
}

bool message_status(PyObject* message, long* status) {
  PyObject* status_obj = PyDict_GetItemWithError(message, names.status);
  if (status_obj == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status");
    return false;
  }
  *status = PyLong_AsLong(status_obj);
  return !(*status == -1 && PyErr_Occurred());
}

bool message_body(PyObject* message, std::string_view* data, Py_buffer* view, bool* view_used, bool* more) {
  *view_used = false;
  *data = {};
  PyObject* body = PyDict_GetItemWithError(message, names.body);
  if (body == nullptr && PyErr_Occurred()) return false;
  PyObject* more_obj = PyDict_GetItemWithError(message, names.more_body);
  if (more_obj == nullptr && PyErr_Occurred()) return false;
  const int m = more_obj == nullptr ? 0 : PyObject_IsTrue(more_obj);
  if (m < 0) return false;
  *more = m != 0;
  if (body != nullptr && body != Py_None && !get_bytes(body, data)) {
    if (PyObject_GetBuffer(body, view, PyBUF_SIMPLE) < 0) return false;
    *view_used = true;
    *data = std::string_view(static_cast<const char*>(view->buf), static_cast<std::size_t>(view->len));
  }
  return true;
}

void app_finished(Exchange* ex) {
  ex->app_done = true;
  Py_CLEAR(ex->task);
  Py_CLEAR(ex->drain_waiter);
}

void log_non_none_result(Exchange* ex, PyObject* result) {
  PyObject* r = PyObject_Repr(result);
  const char* text = r != nullptr ? PyUnicode_AsUTF8(r) : nullptr;
  ex->handler->log_error(
      std::string("ASGI callable should return None, but returned '") + (text != nullptr ? text : "?") + "'.",
      nullptr);
  Py_XDECREF(r);
  PyErr_Clear();
}

void exchange_app_failed(Exchange* ex, PyObject* exc) {
  if (ex->ws != nullptr) ws_app_finished(ex, exc, nullptr);
  else http_app_failed(ex, exc);
  app_finished(ex);
  ex->handler->wake();
}

void exchange_app_returned(Exchange* ex, PyObject* result) {
  if (ex->ws != nullptr) ws_app_finished(ex, nullptr, result);
  else http_app_returned(ex, result);
  app_finished(ex);
  ex->handler->wake();
}

}  // namespace fa
