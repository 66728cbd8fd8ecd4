#include "bindings/asgi.h"

#include <llhttp.h>

#include <cstring>
#include <vector>

#include "core/uv_api.h"

namespace fa {

PyObject* make_scope_template(PyObject* root_path, const char* asgi_version);
void release_conn_cache(Connection& c);

namespace {

// ---------------------------------------------------------------------------------------------------------------
// Interned strings for messages
// ---------------------------------------------------------------------------------------------------------------
struct Msg {
  PyObject *type, *body, *more_body, *status, *headers;
  PyObject *http_request, *http_disconnect, *http_response_start, *http_response_body;
  PyObject* disconnect_msg;  // {"type": "http.disconnect"} template (copied per use)
  PyObject* empty_bytes;
  PyObject *app_failed_name, *app_returned_name;
};
Msg m;

bool msg_init() {
  m.type = PyUnicode_InternFromString("type");
  m.body = PyUnicode_InternFromString("body");
  m.more_body = PyUnicode_InternFromString("more_body");
  m.status = PyUnicode_InternFromString("status");
  m.headers = PyUnicode_InternFromString("headers");
  m.http_request = PyUnicode_InternFromString("http.request");
  m.http_disconnect = PyUnicode_InternFromString("http.disconnect");
  m.http_response_start = PyUnicode_InternFromString("http.response.start");
  m.http_response_body = PyUnicode_InternFromString("http.response.body");
  m.empty_bytes = PyBytes_FromStringAndSize("", 0);
  m.disconnect_msg = PyDict_New();
  if (m.disconnect_msg == nullptr || PyDict_SetItem(m.disconnect_msg, m.type, m.http_disconnect) < 0) return false;
  return !PyErr_Occurred();
}

// ---------------------------------------------------------------------------------------------------------------
// Ready: an awaitable whose result is already known. `await` on it completes without a Future and without an
// exception object (am_send returns PYGEN_RETURN).
// ---------------------------------------------------------------------------------------------------------------
struct Ready {
  PyObject_HEAD
  PyObject* value;
};

PyTypeObject ReadyType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* ready_new(PyObject* value) {
  Ready* r = PyObject_New(Ready, &ReadyType);
  if (r == nullptr) return nullptr;
  r->value = Py_NewRef(value);
  return reinterpret_cast<PyObject*>(r);
}
// One shared Ready(None): send() completes with it without allocating. Stateless, so sharing is safe.
PyObject* g_ready_none = nullptr;
PyObject* ready_none() { return Py_NewRef(g_ready_none); }

PyObject* ready_steal(PyObject* value) {
  if (value == nullptr) return nullptr;
  PyObject* r = ready_new(value);
  Py_DECREF(value);
  return r;
}
void ready_dealloc(PyObject* self) {
  Py_XDECREF(reinterpret_cast<Ready*>(self)->value);
  PyObject_Free(self);
}
PyObject* ready_await(PyObject* self) { return Py_NewRef(self); }
PySendResult ready_am_send(PyObject* self, PyObject*, PyObject** result) {
  Ready* r = reinterpret_cast<Ready*>(self);
  *result = Py_NewRef(r->value != nullptr ? r->value : Py_None);
  return PYGEN_RETURN;
}
PyObject* ready_iternext(PyObject* self) {
  Ready* r = reinterpret_cast<Ready*>(self);
  if (r->value == nullptr || r->value == Py_None) return nullptr;  // StopIteration with value None
  // StopIteration(value): wrap in a tuple so a tuple value is not unpacked as args.
  PyObject* exc = PyObject_CallOneArg(PyExc_StopIteration, r->value);
  if (exc != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
  }
  return nullptr;
}
PyObject* ready_send(PyObject* self, PyObject*) { return ready_iternext(self); }
PyObject* ready_throw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
    return nullptr;
  }
  PyObject* typ = args[0];
  if (PyExceptionInstance_Check(typ)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(typ)), typ);
  } else {
    PyErr_SetObject(typ, nargs > 1 ? args[1] : nullptr);
  }
  return nullptr;
}
PyObject* ready_close(PyObject*, PyObject*) { Py_RETURN_NONE; }
PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, nullptr},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(ready_throw)), METH_FASTCALL, nullptr},
    {"close", ready_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};
PyAsyncMethods ready_async = {ready_await, nullptr, nullptr, ready_am_send};

// ---------------------------------------------------------------------------------------------------------------
// Exchange: one request/response cycle. It is the `send` callable; Receive wraps it.
// ---------------------------------------------------------------------------------------------------------------
struct Exchange {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyAppHandler* handler;
  Connection* conn;  // nullptr once detached: response complete and connection moved on, or connection closed
  std::vector<PyObject*>* chunks;
  PyObject* receive_waiter;  // Future awaited by receive(), or nullptr
  PyObject* drain_waiter;    // Future awaited by send() under write backpressure, or nullptr
  PyObject* task;            // the app's Task, kept alive until the app is done
  std::size_t buffered;
  int status;
  bool body_complete;
  bool disconnected;
  bool response_started;
  bool response_complete;
  bool body_paused;
  bool app_done;
  bool final_delivered;  // the http.request message with more_body=False was handed to the app
};

struct Receive {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  Exchange* ex;
};

PyTypeObject ExchangeType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyTypeObject ReceiveType = {PyVarObject_HEAD_INIT(nullptr, 0)};

void resolve(PyObject** waiter, PyObject* value) {
  PyObject* fut = *waiter;
  if (fut == nullptr) return;
  *waiter = nullptr;
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

PyObject* disconnect_message() { return PyDict_Copy(m.disconnect_msg); }

void clear_chunks(Exchange* ex) {
  if (ex->chunks == nullptr) return;
  for (PyObject* o : *ex->chunks) Py_DECREF(o);
  ex->chunks->clear();
  ex->buffered = 0;
}

// Build {"type": "http.request", "body": ..., "more_body": ...} from what is buffered.
PyObject* take_body_message(Exchange* ex) {
  PyObject* body;
  std::vector<PyObject*>& ch = *ex->chunks;
  if (ch.empty()) {
    body = Py_NewRef(m.empty_bytes);
  } else if (ch.size() == 1) {
    body = ch[0];
    ch.clear();
  } else {
    body = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(ex->buffered));
    if (body == nullptr) return nullptr;
    char* p = PyBytes_AS_STRING(body);
    for (PyObject* o : ch) {
      std::memcpy(p, PyBytes_AS_STRING(o), static_cast<std::size_t>(PyBytes_GET_SIZE(o)));
      p += PyBytes_GET_SIZE(o);
      Py_DECREF(o);
    }
    ch.clear();
  }
  ex->buffered = 0;
  PyObject* msg = PyDict_New();
  if (msg == nullptr) {
    Py_DECREF(body);
    return nullptr;
  }
  PyDict_SetItem(msg, m.type, m.http_request);
  PyDict_SetItem(msg, m.body, body);
  PyDict_SetItem(msg, m.more_body, ex->body_complete ? Py_False : Py_True);
  Py_DECREF(body);
  if (ex->body_paused && ex->conn != nullptr) {
    ex->body_paused = false;
    ex->conn->resume();
  }
  return msg;
}

// Detach the exchange from its connection (the connection keeps no reference afterwards).
void detach(Exchange* ex) {
  Connection* c = ex->conn;
  if (c == nullptr) return;
  ex->conn = nullptr;
  if (c->exchange == ex) {
    c->exchange = nullptr;
    Py_DECREF(reinterpret_cast<PyObject*>(ex));  // the connection's reference; the caller still holds one
  }
}

// The response is complete: log it, release the connection (it goes on with the next request), wake waiters.
void complete_response(Exchange* ex) {
  ex->response_complete = true;
  Connection* c = ex->conn;
  Py_INCREF(reinterpret_cast<PyObject*>(ex));
  if (c != nullptr) {
    ex->handler->log_access(*c, ex->status);
    detach(ex);
    c->finish_response();
  }
  clear_chunks(ex);
  if (ex->receive_waiter != nullptr) {
    PyObject* msg = disconnect_message();
    resolve(&ex->receive_waiter, msg != nullptr ? msg : Py_None);
    Py_XDECREF(msg);
  }
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}

PyObject* new_future(PyAppHandler* h) { return PyObject_CallNoArgs(h->create_future_); }

// ---- receive() ----
PyObject* receive_call(PyObject* self, PyObject* const*, size_t nargsf, PyObject*) {
  if (PyVectorcall_NARGS(nargsf) != 0) {
    PyErr_SetString(PyExc_TypeError, "receive() takes no arguments");
    return nullptr;
  }
  Exchange* ex = reinterpret_cast<Receive*>(self)->ex;
  if (ex->disconnected || ex->response_complete || ex->conn == nullptr) return ready_steal(disconnect_message());
  // Once the whole body was handed over, a further receive() waits for the disconnect / response end.
  if (!ex->final_delivered && (!ex->chunks->empty() || ex->body_complete)) {
    if (ex->body_complete) ex->final_delivered = true;
    return ready_steal(take_body_message(ex));
  }
  if (ex->receive_waiter != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() is pending");
    return nullptr;
  }
  ex->conn->send_continue();
  if (ex->body_paused) {
    ex->body_paused = false;
    ex->conn->resume();
  }
  PyObject* fut = new_future(ex->handler);
  if (fut == nullptr) return nullptr;
  ex->receive_waiter = Py_NewRef(fut);
  ex->handler->wake();
  return fut;
}

// ---- send() ----
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

PyObject* send_start(Exchange* ex, PyObject* message) {
  PyObject* status_obj = PyDict_GetItemWithError(message, m.status);
  if (status_obj == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "status");
    return nullptr;
  }
  const long status = PyLong_AsLong(status_obj);
  if (status == -1 && PyErr_Occurred()) return nullptr;
  PyObject* headers = PyDict_GetItemWithError(message, m.headers);
  if (headers == nullptr && PyErr_Occurred()) return nullptr;
  PyObject* seq = nullptr;
  Py_ssize_t n = 0;
  if (headers != nullptr) {
    seq = PySequence_Fast(headers, "response headers must be an iterable of [name, value] pairs");
    if (seq == nullptr) return nullptr;
    n = PySequence_Fast_GET_SIZE(seq);
  }
  std::string_view stack_names[32], stack_values[32];
  std::vector<std::string_view> heap_names, heap_values;
  std::string_view* names = stack_names;
  std::string_view* values = stack_values;
  if (n > 32) {
    heap_names.resize(static_cast<std::size_t>(n));
    heap_values.resize(static_cast<std::size_t>(n));
    names = heap_names.data();
    values = heap_values.data();
  }
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *name, *value;
    if (PyTuple_Check(pair) && PyTuple_GET_SIZE(pair) == 2) {
      name = PyTuple_GET_ITEM(pair, 0);
      value = PyTuple_GET_ITEM(pair, 1);
    } else if (PyList_Check(pair) && PyList_GET_SIZE(pair) == 2) {
      name = PyList_GET_ITEM(pair, 0);
      value = PyList_GET_ITEM(pair, 1);
    } else {
      Py_DECREF(seq);
      return runtime_error("Invalid HTTP header: expected a (name, value) pair", nullptr);
    }
    if (!get_bytes(name, &names[i]) || !get_bytes(value, &values[i])) {
      Py_DECREF(seq);
      PyErr_SetString(PyExc_TypeError, "response header names and values must be bytes");
      return nullptr;
    }
  }
  Connection* c = ex->conn;
  const char* err = c->response().write_head(c->out(), static_cast<int>(status), names, values,
                                             static_cast<std::size_t>(n), c->server()->config().defaults,
                                             c->server()->date());
  Py_XDECREF(seq);
  if (err != nullptr) return runtime_error(err, nullptr);
  ex->response_started = true;
  ex->status = static_cast<int>(status);
  return ready_none();
}

constexpr std::size_t kZeroCopyThreshold = 16 * 1024;

PyObject* send_body(Exchange* ex, PyObject* message) {
  PyObject* body = PyDict_GetItemWithError(message, m.body);
  if (body == nullptr && PyErr_Occurred()) return nullptr;
  PyObject* more_obj = PyDict_GetItemWithError(message, m.more_body);
  if (more_obj == nullptr && PyErr_Occurred()) return nullptr;
  const int more = more_obj == nullptr ? 0 : PyObject_IsTrue(more_obj);
  if (more < 0) return nullptr;
  Py_buffer view{};
  bool have_view = false;
  std::string_view data;
  if (body != nullptr && body != Py_None) {
    if (!get_bytes(body, &data)) {
      if (PyObject_GetBuffer(body, &view, PyBUF_SIMPLE) < 0) return nullptr;
      have_view = true;
      data = std::string_view(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
    }
  }
  Connection* c = ex->conn;
  bool emit = false;
  std::string_view suffix;
  const char* err = c->response().frame_body(c->out(), data.size(), more != 0, &emit, &suffix);
  if (err != nullptr) {
    if (have_view) PyBuffer_Release(&view);
    // As uvicorn: the head already "went out"; the stream is now unusable and closes when the app's error lands.
    c->response().set_keep_alive(false);
    c->flush();
    return runtime_error(err, nullptr);
  }
  if (emit) {
    if (data.size() >= kZeroCopyThreshold && suffix.empty()) {
      c->flush(data.data(), data.size());
    } else {
      c->out().append(data);
      c->out().append(suffix);
    }
  } else {
    c->out().append(suffix);
  }
  if (have_view) PyBuffer_Release(&view);
  if (!more) {
    complete_response(ex);
    ex->handler->wake();
    return ready_none();
  }
  c->flush();
  ex->handler->wake();
  if (ex->conn != nullptr && !ex->conn->closing() && ex->conn->want_drain()) {
    PyObject* fut = new_future(ex->handler);
    if (fut == nullptr) return nullptr;
    Py_XSETREF(ex->drain_waiter, Py_NewRef(fut));
    return fut;
  }
  return ready_none();
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
  PyObject* type = PyDict_GetItemWithError(message, m.type);
  if (type == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "type");
    return nullptr;
  }
  if (ex->disconnected) return ready_none();  // as uvicorn: sending after a disconnect is a no-op
  const bool is_start = type == m.http_response_start ||
                        (PyUnicode_Check(type) && PyUnicode_Compare(type, m.http_response_start) == 0);
  const bool is_body = !is_start && (type == m.http_response_body ||
                                     (PyUnicode_Check(type) && PyUnicode_Compare(type, m.http_response_body) == 0));
  if (ex->response_complete || ex->conn == nullptr)
    return runtime_error("Unexpected ASGI message '%S' sent, after response already completed.", type);
  if (!ex->response_started) {
    if (!is_start) return runtime_error("Expected ASGI message 'http.response.start', but got '%S'.", type);
    return send_start(ex, message);
  }
  if (!is_body) return runtime_error("Expected ASGI message 'http.response.body', but got '%S'.", type);
  return send_body(ex, message);
}

// ---- app completion, called by the runner coroutine ----
void answer_500(Exchange* ex) {
  Connection* c = ex->conn;
  if (c == nullptr) return;
  c->response().set_keep_alive(false);
  static const std::string_view names[] = {"content-type", "content-length", "connection"};
  static const std::string_view values[] = {"text/plain; charset=utf-8", "21", "close"};
  if (c->response().write_head(c->out(), 500, names, values, 3, c->server()->config().defaults,
                               c->server()->date()) == nullptr) {
    bool emit;
    std::string_view suffix;
    c->response().frame_body(c->out(), 21, false, &emit, &suffix);
    c->out().append("Internal Server Error");
    ex->response_started = true;
    ex->status = 500;
    complete_response(ex);
  } else {
    c->close();
  }
}

void close_connection(Exchange* ex) {
  Connection* c = ex->conn;
  if (c == nullptr) return;
  detach(ex);
  c->close();
}

std::string request_line(Connection* c) {
  if (c == nullptr) return {};
  const RequestHead& h = c->head();
  std::string s = " (\"";
  s += llhttp_method_name(static_cast<llhttp_method_t>(h.method));
  s += ' ';
  s += h.url_view();
  s += h.http_minor == 0 ? " HTTP/1.0\")" : " HTTP/1.1\")";
  return s;
}

void app_finished(Exchange* ex) {
  ex->app_done = true;
  Py_CLEAR(ex->task);
  if (ex->drain_waiter != nullptr) Py_CLEAR(ex->drain_waiter);
}

PyObject* exchange_app_failed(PyObject* self, PyObject* exc) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  ex->handler->log_error("Exception in ASGI application" + request_line(ex->conn) + "\n", exc);
  if (!ex->response_started) answer_500(ex);
  else if (!ex->response_complete) close_connection(ex);
  app_finished(ex);
  ex->handler->wake();
  Py_RETURN_NONE;
}

PyObject* exchange_app_returned(PyObject* self, PyObject* result) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  if (result != Py_None) {
    PyObject* r = PyObject_Repr(result);
    ex->handler->log_error(std::string("ASGI callable should return None, but returned '") +
                               (r != nullptr ? PyUnicode_AsUTF8(r) : "?") + "'.",
                           nullptr);
    Py_XDECREF(r);
    PyErr_Clear();
    close_connection(ex);
  } else if (!ex->response_started && !ex->disconnected && ex->conn != nullptr) {
    ex->handler->log_error("ASGI callable returned without starting response." + request_line(ex->conn), nullptr);
    answer_500(ex);
  } else if (!ex->response_complete && !ex->disconnected && ex->conn != nullptr) {
    ex->handler->log_error("ASGI callable returned without completing response." + request_line(ex->conn), nullptr);
    close_connection(ex);
  }
  app_finished(ex);
  ex->handler->wake();
  Py_RETURN_NONE;
}

// ---------------------------------------------------------------------------------------------------------------
// Runner: the coroutine the request's Task runs. It forwards every step to the app's coroutine and, when that
// finishes, reports how (return value or exception) to the Exchange, exactly like
//     async def run(app, scope, receive, send):
//         try: result = await app(scope, receive, send)
//         except BaseException as exc: send._app_failed(exc)
//         else: send._app_returned(result)
// but without a Python frame per step. NOTE: measured with benchmarks/apps/raw_asgi.py (wrk -c64, pinned cores):
// 87.9k -> see docs/benchmarks.md for the before/after of this change.
// ---------------------------------------------------------------------------------------------------------------
struct Runner {
  PyObject_HEAD
  PyObject* coro;
  Exchange* ex;
};
PyTypeObject RunnerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* exchange_app_failed(PyObject* self, PyObject* exc);
PyObject* exchange_app_returned(PyObject* self, PyObject* result);

// The app's coroutine ended (value on return, or an exception set). Reports it; returns true when reported.
void runner_finish(Runner* r, PyObject* value) {
  Exchange* ex = r->ex;
  r->ex = nullptr;
  PyObject* res;
  if (value != nullptr) {
    res = exchange_app_returned(reinterpret_cast<PyObject*>(ex), value);
  } else {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != nullptr && v != nullptr) PyException_SetTraceback(v, tb);
    res = exchange_app_failed(reinterpret_cast<PyObject*>(ex), v != nullptr ? v : Py_None);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
  }
  Py_XDECREF(res);
  if (res == nullptr) PyErr_WriteUnraisable(reinterpret_cast<PyObject*>(ex));
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
  Py_CLEAR(r->coro);
}

PySendResult runner_am_send(PyObject* self, PyObject* arg, PyObject** result) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  PyObject* out = nullptr;
  const PySendResult status = PyIter_Send(r->coro, arg, &out);
  if (status == PYGEN_NEXT) {
    *result = out;
    return PYGEN_NEXT;
  }
  runner_finish(r, status == PYGEN_RETURN ? out : nullptr);
  Py_XDECREF(out);
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

// Python-level protocol (send/throw/__next__) for callers that do not use am_send.
PyObject* runner_result_to_python(PySendResult status, PyObject* value) {
  if (status == PYGEN_NEXT) return value;
  if (status == PYGEN_RETURN) {
    Py_DECREF(value);
    PyErr_SetNone(PyExc_StopIteration);
  }
  return nullptr;
}
PyObject* runner_send(PyObject* self, PyObject* arg) {
  PyObject* value = nullptr;
  const PySendResult status = runner_am_send(self, arg, &value);
  return runner_result_to_python(status, value);
}
PyObject* runner_iternext(PyObject* self) { return runner_send(self, Py_None); }
PyObject* runner_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return nullptr;
  }
  PyObject* meth = PyObject_GetAttrString(r->coro, "throw");
  if (meth == nullptr) return nullptr;
  PyObject* out = PyObject_Vectorcall(meth, args, static_cast<size_t>(nargs), nullptr);
  Py_DECREF(meth);
  if (out != nullptr) return out;  // the app's coroutine caught it and yielded again
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject* value = v != nullptr ? PyObject_GetAttrString(v, "value") : Py_NewRef(Py_None);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    if (value == nullptr) return nullptr;
    runner_finish(r, value);
    Py_DECREF(value);
  } else {
    runner_finish(r, nullptr);
  }
  PyErr_SetNone(PyExc_StopIteration);
  return nullptr;
}
PyObject* runner_close(PyObject* self, PyObject*) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) Py_RETURN_NONE;
  PyObject* res = PyObject_CallMethod(r->coro, "close", nullptr);
  if (r->ex != nullptr) {
    Exchange* ex = r->ex;
    r->ex = nullptr;
    ex->app_done = true;
    Py_CLEAR(ex->task);
    Py_DECREF(reinterpret_cast<PyObject*>(ex));
  }
  Py_CLEAR(r->coro);
  return res;
}
PyObject* runner_await(PyObject* self) { return Py_NewRef(self); }
void runner_dealloc(PyObject* self) {
  Runner* r = reinterpret_cast<Runner*>(self);
  PyObject_GC_UnTrack(self);
  Py_CLEAR(r->coro);
  Py_CLEAR(r->ex);
  PyObject_GC_Del(self);
}
int runner_traverse(PyObject* self, visitproc visit, void* arg) {
  Runner* r = reinterpret_cast<Runner*>(self);
  Py_VISIT(r->coro);
  Py_VISIT(reinterpret_cast<PyObject*>(r->ex));
  return 0;
}
int runner_clear(PyObject* self) {
  Runner* r = reinterpret_cast<Runner*>(self);
  Py_CLEAR(r->coro);
  Py_CLEAR(r->ex);
  return 0;
}
PyMethodDef runner_methods[] = {
    {"send", runner_send, METH_O, nullptr},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(runner_throw)), METH_FASTCALL, nullptr},
    {"close", runner_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};
PyAsyncMethods runner_async = {runner_await, nullptr, nullptr, runner_am_send};

PyObject* runner_new(PyObject* coro, Exchange* ex) {
  Runner* r = PyObject_GC_New(Runner, &RunnerType);
  if (r == nullptr) return nullptr;
  r->coro = Py_NewRef(coro);
  r->ex = reinterpret_cast<Exchange*>(Py_NewRef(reinterpret_cast<PyObject*>(ex)));
  PyObject_GC_Track(reinterpret_cast<PyObject*>(r));
  return reinterpret_cast<PyObject*>(r);
}

PyMethodDef exchange_methods[] = {{"_app_failed", exchange_app_failed, METH_O, nullptr},
                                  {"_app_returned", exchange_app_returned, METH_O, nullptr},
                                  {nullptr, nullptr, 0, nullptr}};

int exchange_traverse(PyObject* self, visitproc visit, void* arg) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  Py_VISIT(ex->receive_waiter);
  Py_VISIT(ex->drain_waiter);
  Py_VISIT(ex->task);
  return 0;
}
int exchange_clear(PyObject* self) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  Py_CLEAR(ex->receive_waiter);
  Py_CLEAR(ex->drain_waiter);
  Py_CLEAR(ex->task);
  return 0;
}
void exchange_dealloc(PyObject* self) {
  Exchange* ex = reinterpret_cast<Exchange*>(self);
  PyObject_GC_UnTrack(self);
  exchange_clear(self);
  if (ex->chunks != nullptr) {
    clear_chunks(ex);
    delete ex->chunks;
  }
  PyObject_GC_Del(self);
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
  PyObject_GC_Del(self);
}

Exchange* exchange_new(PyAppHandler* h, Connection* c) {
  Exchange* ex = PyObject_GC_New(Exchange, &ExchangeType);
  if (ex == nullptr) return nullptr;
  ex->vectorcall = send_call;
  ex->handler = h;
  ex->conn = c;
  ex->chunks = new std::vector<PyObject*>();
  ex->receive_waiter = ex->drain_waiter = ex->task = nullptr;
  ex->buffered = 0;
  ex->status = 0;
  ex->body_complete = ex->disconnected = ex->response_started = ex->response_complete = false;
  ex->body_paused = ex->app_done = ex->final_delivered = false;
  PyObject_GC_Track(reinterpret_cast<PyObject*>(ex));
  return ex;
}

Receive* receive_new(Exchange* ex) {
  Receive* r = PyObject_GC_New(Receive, &ReceiveType);
  if (r == nullptr) return nullptr;
  r->vectorcall = receive_call;
  r->ex = reinterpret_cast<Exchange*>(Py_NewRef(reinterpret_cast<PyObject*>(ex)));
  PyObject_GC_Track(reinterpret_cast<PyObject*>(r));
  return r;
}

}  // namespace

bool asgi_types_ready() {
  ReadyType.tp_name = "fasterapi_asgi._core.Ready";
  ReadyType.tp_basicsize = sizeof(Ready);
  ReadyType.tp_dealloc = ready_dealloc;
  ReadyType.tp_flags = Py_TPFLAGS_DEFAULT;
  ReadyType.tp_as_async = &ready_async;
  ReadyType.tp_iter = PyObject_SelfIter;
  ReadyType.tp_iternext = ready_iternext;
  ReadyType.tp_methods = ready_methods;

  ExchangeType.tp_name = "fasterapi_asgi._core.Send";
  ExchangeType.tp_basicsize = sizeof(Exchange);
  ExchangeType.tp_dealloc = exchange_dealloc;
  ExchangeType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  ExchangeType.tp_vectorcall_offset = offsetof(Exchange, vectorcall);
  ExchangeType.tp_call = PyVectorcall_Call;
  ExchangeType.tp_traverse = exchange_traverse;
  ExchangeType.tp_clear = exchange_clear;
  ExchangeType.tp_methods = exchange_methods;

  ReceiveType.tp_name = "fasterapi_asgi._core.Receive";
  ReceiveType.tp_basicsize = sizeof(Receive);
  ReceiveType.tp_dealloc = receive_dealloc;
  ReceiveType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  ReceiveType.tp_vectorcall_offset = offsetof(Receive, vectorcall);
  ReceiveType.tp_call = PyVectorcall_Call;
  ReceiveType.tp_traverse = receive_traverse;
  ReceiveType.tp_clear = receive_clear;

  RunnerType.tp_name = "fasterapi_asgi._core.Runner";
  RunnerType.tp_basicsize = sizeof(Runner);
  RunnerType.tp_dealloc = runner_dealloc;
  RunnerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  RunnerType.tp_as_async = &runner_async;
  RunnerType.tp_iter = PyObject_SelfIter;
  RunnerType.tp_iternext = runner_iternext;
  RunnerType.tp_methods = runner_methods;
  RunnerType.tp_traverse = runner_traverse;
  RunnerType.tp_clear = runner_clear;

  if (PyType_Ready(&ReadyType) != 0 || PyType_Ready(&ExchangeType) != 0 || PyType_Ready(&ReceiveType) != 0 ||
      PyType_Ready(&RunnerType) != 0 || !msg_init() || !scope_init())
    return false;
  g_ready_none = ready_new(Py_None);
  if (g_ready_none == nullptr) return false;
  // asyncio.Task accepts it as a coroutine: register with collections.abc.Coroutine.
  PyObject* abc = PyImport_ImportModule("collections.abc");
  if (abc == nullptr) return false;
  PyObject* coroutine = PyObject_GetAttrString(abc, "Coroutine");
  Py_DECREF(abc);
  if (coroutine == nullptr) return false;
  PyObject* reg = PyObject_CallMethod(coroutine, "register", "O", reinterpret_cast<PyObject*>(&RunnerType));
  Py_DECREF(coroutine);
  if (reg == nullptr) return false;
  Py_DECREF(reg);
  return true;
}

// -------------------------------------------------------------------------------------------------------------
// PyAppHandler
// -------------------------------------------------------------------------------------------------------------

PyAppHandler::PyAppHandler(PyObject* loop, PyObject* app, PyObject* error_log,
                           PyObject* access_log, PyObject* state, PyObject* root_path, const char* asgi_version)
    : loop_(Py_NewRef(loop)), app_(Py_NewRef(app)),
      create_task_(PyObject_GetAttrString(loop, "create_task")),
      create_future_(PyObject_GetAttrString(loop, "create_future")), error_log_(Py_NewRef(error_log)),
      access_log_(access_log == Py_None ? nullptr : Py_NewRef(access_log)),
      state_(state == Py_None ? nullptr : Py_NewRef(state)), root_path_(Py_NewRef(root_path)),
      root_path_bytes_(PyUnicode_AsUTF8String(root_path)), scope_template_(make_scope_template(root_path, asgi_version)) {}

void PyAppHandler::set_proxy_fix(PyObject* fn) { Py_XSETREF(proxy_fix_, fn == Py_None ? nullptr : Py_XNewRef(fn)); }

PyAppHandler::~PyAppHandler() {
  Py_XDECREF(loop_);
  Py_XDECREF(app_);
  Py_XDECREF(create_task_);
  Py_XDECREF(create_future_);
  Py_XDECREF(error_log_);
  Py_XDECREF(access_log_);
  Py_XDECREF(state_);
  Py_XDECREF(root_path_);
  Py_XDECREF(root_path_bytes_);
  Py_XDECREF(scope_template_);
  Py_XDECREF(wakeup_);
  Py_XDECREF(proxy_fix_);
}

void PyAppHandler::on_callback_end() {
  if (gil_held_) {
    gil_held_ = false;
    PyGILState_Release(gil_state_);
  }
  if (orphaned_ && server_->connection_count() == 0) {
    // The Python Server object is gone and the last connection just closed: nothing can reach us any more.
    const PyGILState_STATE st = PyGILState_Ensure();
    delete server_;
    delete this;
    PyGILState_Release(st);
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
  PyObject* saved_type, *saved_value, *saved_tb;
  PyErr_Fetch(&saved_type, &saved_value, &saved_tb);
  PyObject* r = PyObject_CallFunction(error_log_, "s#O", message.data(), static_cast<Py_ssize_t>(message.size()),
                                      exc != nullptr ? exc : Py_None);
  if (r == nullptr) PyErr_WriteUnraisable(error_log_);
  Py_XDECREF(r);
  PyErr_Restore(saved_type, saved_value, saved_tb);
}

void PyAppHandler::log_access(Connection& c, int status) {
  if (access_log_ == nullptr) return;
  const RequestHead& h = c.head();
  std::string client = c.is_tcp() ? c.peer_host() + ":" + std::to_string(c.peer_port()) : std::string("-");
  const std::string_view url = h.url_view();
  PyObject* r = PyObject_CallFunction(access_log_, "s#ss#si", client.data(), static_cast<Py_ssize_t>(client.size()),
                                      llhttp_method_name(static_cast<llhttp_method_t>(h.method)), url.data(),
                                      static_cast<Py_ssize_t>(url.size()), h.http_minor == 0 ? "1.0" : "1.1", status);
  if (r == nullptr) PyErr_WriteUnraisable(access_log_);
  Py_XDECREF(r);
}

void PyAppHandler::on_request(Connection& c, const RequestHead& head) {
  gil();
  Exchange* ex = exchange_new(this, &c);
  Receive* rc = ex != nullptr ? receive_new(ex) : nullptr;
  bool forwarded = false;
  StageStats& stages = c.server()->stages();
  const std::uint64_t t0 = stages.enabled ? monotonic_ns() : 0;
  PyObject* scope = rc != nullptr ? build_scope(*this, c, head, &forwarded) : nullptr;
  const std::uint64_t t1 = stages.enabled ? monotonic_ns() : 0;
  if (stages.enabled) stages.add(kStageScope, t1 - t0);
  PyObject* coro = nullptr;
  PyObject* task = nullptr;
  if (scope != nullptr && proxy_fix_ != nullptr && forwarded) {
    PyObject* r = PyObject_CallOneArg(proxy_fix_, scope);
    if (r == nullptr) Py_CLEAR(scope);
    Py_XDECREF(r);
  }
  if (scope != nullptr) {
    PyObject* args[3] = {scope, reinterpret_cast<PyObject*>(rc), reinterpret_cast<PyObject*>(ex)};
    PyObject* app_coro = PyObject_Vectorcall(app_, args, 3, nullptr);
    if (app_coro != nullptr) {
      coro = runner_new(app_coro, ex);
      Py_DECREF(app_coro);
    }
  }
  if (coro != nullptr) task = PyObject_CallOneArg(create_task_, coro);
  Py_XDECREF(coro);
  if (stages.enabled) stages.add(kStageDispatch, monotonic_ns() - t1);
  Py_XDECREF(scope);
  Py_XDECREF(reinterpret_cast<PyObject*>(rc));
  if (task == nullptr) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    log_error("Exception while starting the ASGI application" + request_line(&c), v);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    if (ex != nullptr) {
      c.exchange = Py_NewRef(reinterpret_cast<PyObject*>(ex));
      answer_500(ex);
      Py_DECREF(reinterpret_cast<PyObject*>(ex));
    } else {
      c.close();
    }
    return;
  }
  ex->task = task;
  c.exchange = ex;  // the connection's reference (from exchange_new)
}

bool PyAppHandler::on_body(Connection& c, const char* data, std::size_t len) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return false;
  gil();
  PyObject* chunk = PyBytes_FromStringAndSize(data, static_cast<Py_ssize_t>(len));
  if (chunk == nullptr) {
    PyErr_WriteUnraisable(nullptr);
    return false;
  }
  ex->chunks->push_back(chunk);
  ex->buffered += len;
  if (ex->receive_waiter != nullptr) {
    PyObject* msg = take_body_message(ex);
    if (msg != nullptr) {
      resolve(&ex->receive_waiter, msg);
      Py_DECREF(msg);
    } else {
      PyErr_WriteUnraisable(nullptr);
    }
    return false;
  }
  if (ex->buffered >= c.server()->config().body_high_water) {
    ex->body_paused = true;
    return true;
  }
  return false;
}

void PyAppHandler::on_body_complete(Connection& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return;
  gil();
  ex->body_complete = true;
  if (ex->receive_waiter != nullptr) {
    PyObject* msg = take_body_message(ex);
    ex->final_delivered = true;
    if (msg != nullptr) {
      resolve(&ex->receive_waiter, msg);
      Py_DECREF(msg);
    } else {
      PyErr_WriteUnraisable(nullptr);
    }
  }
}

void PyAppHandler::on_disconnect(Connection& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr) return;
  gil();
  Py_INCREF(reinterpret_cast<PyObject*>(ex));
  ex->disconnected = true;
  detach(ex);
  clear_chunks(ex);
  if (ex->receive_waiter != nullptr) {
    PyObject* msg = disconnect_message();
    resolve(&ex->receive_waiter, msg != nullptr ? msg : Py_None);
    Py_XDECREF(msg);
  }
  resolve(&ex->drain_waiter, Py_None);
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}

void PyAppHandler::on_drain(Connection& c) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->drain_waiter == nullptr) return;
  gil();
  resolve(&ex->drain_waiter, Py_None);
}

void PyAppHandler::on_closed(Connection& c) {
  if (c.exchange == nullptr && c.app_data == nullptr) return;
  gil();
  if (c.exchange != nullptr) on_disconnect(c);
  release_conn_cache(c);
}

void PyAppHandler::on_bad_request(Connection& c, int status, const char* reason) {
  std::string msg = "Invalid HTTP request received (" + std::to_string(status) + ": " + reason + ")";
  if (c.head().url.len > 0 && c.head().url.len < 512) msg += request_line(&c);
  log_error(msg, nullptr);
}

void PyAppHandler::orphan() { orphaned_ = true; }

}  // namespace fa
