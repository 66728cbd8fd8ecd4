#include "bindings/asgi.h"

#include <llhttp.h>

#include <cstring>
#include <deque>
#include <new>
#include <utility>
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
  // WebSocket
  PyObject *ws_connect, *ws_receive, *ws_disconnect, *ws_accept, *ws_send, *ws_close;
  PyObject *text, *bytes, *code, *reason, *subprotocol;
  PyObject* client_disconnected;  // exception type (OSError subclass)
  PyObject *sha1, *b64encode;     // hashlib.sha1, base64.b64encode (imported on first handshake)
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
  m.ws_connect = PyUnicode_InternFromString("websocket.connect");
  m.ws_receive = PyUnicode_InternFromString("websocket.receive");
  m.ws_disconnect = PyUnicode_InternFromString("websocket.disconnect");
  m.ws_accept = PyUnicode_InternFromString("websocket.accept");
  m.ws_send = PyUnicode_InternFromString("websocket.send");
  m.ws_close = PyUnicode_InternFromString("websocket.close");
  m.text = PyUnicode_InternFromString("text");
  m.bytes = PyUnicode_InternFromString("bytes");
  m.code = PyUnicode_InternFromString("code");
  m.reason = PyUnicode_InternFromString("reason");
  m.subprotocol = PyUnicode_InternFromString("subprotocol");
  m.client_disconnected = PyErr_NewExceptionWithDoc(
      "fasterapi_asgi._core.ClientDisconnected", "send() on a WebSocket whose client is gone.", PyExc_OSError, nullptr);
  if (m.client_disconnected == nullptr) return false;
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
// WebSocket session state of an Exchange (nullptr for HTTP requests).
struct WsState {
  std::deque<std::pair<PyObject*, std::size_t>> queue;  // websocket.receive messages not yet taken, with sizes
  std::size_t queued_bytes = 0;
  PyObject* disconnect = nullptr;  // the websocket.disconnect message, once the session is over
  bool connect_delivered = false;
  bool handshake_done = false;  // 101, 403 or 500 sent
  bool accepted = false;
  bool close_sent = false;  // websocket.close sent by the app (or the handshake rejected)
  bool paused = false;      // reading paused until the app takes queued messages
  ~WsState() {
    for (auto& e : queue) Py_DECREF(e.first);
    Py_XDECREF(disconnect);
  }
};
constexpr std::size_t kWsMaxQueued = 64;  // messages queued before reading pauses (also: body_high_water bytes)

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
  WsState* ws;           // WebSocket session, or nullptr
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
    PyObject* msg = ex->ws != nullptr && ex->ws->disconnect != nullptr ? PyDict_Copy(ex->ws->disconnect)
                                                                      : disconnect_message();
    resolve(&ex->receive_waiter, msg != nullptr ? msg : Py_None);
    Py_XDECREF(msg);
  }
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
}



PyObject* new_future(PyAppHandler* h) { return PyObject_CallNoArgs(h->create_future_); }

PyObject* ws_receive_call(Exchange* ex);

// ---- receive() ----
PyObject* receive_call(PyObject* self, PyObject* const*, size_t nargsf, PyObject*) {
  if (PyVectorcall_NARGS(nargsf) != 0) {
    PyErr_SetString(PyExc_TypeError, "receive() takes no arguments");
    return nullptr;
  }
  Exchange* ex = reinterpret_cast<Receive*>(self)->ex;
  if (ex->ws != nullptr) return ws_receive_call(ex);
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

// What send() returns after queueing output: a Future resolved when the write queue drains below the low-water
// mark (backpressure), or an already-completed awaitable.
PyObject* drain_or_ready(Exchange* ex) {
  if (ex->conn != nullptr && !ex->conn->closing() && ex->conn->want_drain()) {
    PyObject* fut = new_future(ex->handler);
    if (fut == nullptr) return nullptr;
    Py_XSETREF(ex->drain_waiter, Py_NewRef(fut));
    return fut;
  }
  return ready_none();
}

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
  // NOTE: corked to the end of the loop turn: a 16-chunk 64 KB StreamingResponse leaves in one write instead of
  // sixteen (uvloop corks its own transports the same way).
  c->cork();
  ex->handler->wake();
  return drain_or_ready(ex);
}

// ---------------------------------------------------------------------------------------------------------------
// WebSocket messages
// ---------------------------------------------------------------------------------------------------------------

// Record how the session ended (first call wins) and hand it to a pending receive().
void ws_set_disconnect(Exchange* ex, int code, const char* reason, Py_ssize_t reason_len, bool with_reason) {
  WsState* w = ex->ws;
  if (w->disconnect == nullptr) {
    PyObject* msg = PyDict_New();
    PyObject* c = PyLong_FromLong(code);
    PyObject* r = with_reason ? PyUnicode_DecodeUTF8(reason, reason_len, "replace") : nullptr;
    if (msg == nullptr || c == nullptr || (with_reason && r == nullptr) ||
        PyDict_SetItem(msg, m.type, m.ws_disconnect) < 0 || PyDict_SetItem(msg, m.code, c) < 0 ||
        (r != nullptr && PyDict_SetItem(msg, m.reason, r) < 0)) {
      Py_XDECREF(msg);
      msg = nullptr;
      PyErr_WriteUnraisable(nullptr);
    }
    Py_XDECREF(c);
    Py_XDECREF(r);
    if (msg == nullptr) return;
    w->disconnect = msg;
  }
  if (ex->receive_waiter != nullptr && w->queue.empty()) {
    PyObject* copy = PyDict_Copy(w->disconnect);
    resolve(&ex->receive_waiter, copy != nullptr ? copy : Py_None);
    Py_XDECREF(copy);
  }
}

PyObject* type_message(PyObject* type) {
  PyObject* d = PyDict_New();
  if (d != nullptr && PyDict_SetItem(d, m.type, type) < 0) Py_CLEAR(d);
  return d;
}

PyObject* client_disconnected() {
  PyErr_SetNone(m.client_disconnected);
  return nullptr;
}

bool type_is(PyObject* type, PyObject* interned) {
  return type == interned || (PyUnicode_Check(type) && PyUnicode_Compare(type, interned) == 0);
}

// Optional str value of a message key; *out = nullptr when absent or None. False with an error set otherwise.
bool opt_str(PyObject* message, PyObject* key, PyObject** out) {
  PyObject* v = PyDict_GetItemWithError(message, key);
  if (v == nullptr && PyErr_Occurred()) return false;
  *out = v == Py_None ? nullptr : v;
  if (*out != nullptr && !PyUnicode_Check(*out)) {
    PyErr_Format(PyExc_TypeError, "'%U' must be a str", key);
    return false;
  }
  return true;
}

PyObject* ws_receive_call(Exchange* ex) {
  WsState* w = ex->ws;
  if (!w->connect_delivered) {
    w->connect_delivered = true;
    return ready_steal(type_message(m.ws_connect));
  }
  if (!w->queue.empty()) {
    auto [msg, size] = w->queue.front();
    w->queue.pop_front();
    w->queued_bytes -= size;
    if (w->paused && ex->conn != nullptr && w->queue.size() < kWsMaxQueued / 2 &&
        w->queued_bytes <= ex->conn->server()->config().write_low_water) {
      w->paused = false;
      ex->conn->resume();
    }
    return ready_steal(msg);
  }
  if (w->disconnect != nullptr) return ready_steal(PyDict_Copy(w->disconnect));
  if (ex->conn == nullptr || ex->disconnected) {
    ws_set_disconnect(ex, w->accepted ? ws::kCloseNoStatus : ws::kCloseAbnormal, "", 0, false);
    return ready_steal(PyDict_Copy(w->disconnect));
  }
  if (ex->receive_waiter != nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "receive() called while another receive() is pending");
    return nullptr;
  }
  PyObject* fut = new_future(ex->handler);
  if (fut == nullptr) return nullptr;
  ex->receive_waiter = Py_NewRef(fut);
  ex->handler->wake();
  return fut;
}

// Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), with Python's hashlib and base64 (once per connection).
bool ws_accept_key(std::string_view key, std::string* out) {
  if (m.sha1 == nullptr) {
    PyObject* hashlib = PyImport_ImportModule("hashlib");
    PyObject* base64 = PyImport_ImportModule("base64");
    if (hashlib != nullptr && base64 != nullptr) {
      m.sha1 = PyObject_GetAttrString(hashlib, "sha1");
      m.b64encode = PyObject_GetAttrString(base64, "b64encode");
    }
    Py_XDECREF(hashlib);
    Py_XDECREF(base64);
    if (m.sha1 == nullptr || m.b64encode == nullptr) {
      Py_CLEAR(m.sha1);
      Py_CLEAR(m.b64encode);
      return false;
    }
  }
  std::string input(key);
  input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  PyObject* data = PyBytes_FromStringAndSize(input.data(), static_cast<Py_ssize_t>(input.size()));
  PyObject* h = data != nullptr ? PyObject_CallOneArg(m.sha1, data) : nullptr;
  PyObject* digest = h != nullptr ? PyObject_CallMethod(h, "digest", nullptr) : nullptr;
  PyObject* b64 = digest != nullptr ? PyObject_CallOneArg(m.b64encode, digest) : nullptr;
  const bool ok = b64 != nullptr && PyBytes_Check(b64);
  if (ok) out->assign(PyBytes_AS_STRING(b64), static_cast<std::size_t>(PyBytes_GET_SIZE(b64)));
  Py_XDECREF(data);
  Py_XDECREF(h);
  Py_XDECREF(digest);
  Py_XDECREF(b64);
  return ok;
}

PyObject* ws_send_accept(Exchange* ex, PyObject* message) {
  Connection* c = ex->conn;
  PyObject* subprotocol = nullptr;
  if (!opt_str(message, m.subprotocol, &subprotocol)) return nullptr;
  PyObject* headers = PyDict_GetItemWithError(message, m.headers);
  if (headers == nullptr && PyErr_Occurred()) return nullptr;
  std::string accept;
  if (!ws_accept_key(c->head().header("sec-websocket-key"), &accept)) return nullptr;
  std::string head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: ";
  head += accept;
  head += "\r\n";
  append_default_headers(head, c->server()->config().defaults, c->server()->date());
  if (headers != nullptr && headers != Py_None) {
    PyObject* seq = PySequence_Fast(headers, "websocket.accept headers must be an iterable of [name, value] pairs");
    if (seq == nullptr) return nullptr;
    const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* pair = PySequence_Fast_GET_ITEM(seq, i);
      PyObject* p = PySequence_Fast(pair, "header must be a [name, value] pair");
      if (p == nullptr || PySequence_Fast_GET_SIZE(p) != 2) {
        Py_XDECREF(p);
        Py_DECREF(seq);
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "header must be a [name, value] pair");
        return nullptr;
      }
      std::string_view name, value;
      const bool ok =
          get_bytes(PySequence_Fast_GET_ITEM(p, 0), &name) && get_bytes(PySequence_Fast_GET_ITEM(p, 1), &value);
      if (ok && (!is_valid_header_name(name) || !is_valid_header_value(value))) {
        Py_DECREF(p);
        Py_DECREF(seq);
        return runtime_error("Invalid HTTP header in websocket.accept", nullptr);
      }
      if (ok) {
        for (char ch : name) head += static_cast<char>(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
        head += ": ";
        head += value;
        head += "\r\n";
      }
      Py_DECREF(p);
      if (!ok) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_TypeError, "websocket.accept header names and values must be bytes");
        return nullptr;
      }
    }
    Py_DECREF(seq);
  }
  if (subprotocol != nullptr) {
    Py_ssize_t len = 0;
    const char* sp = PyUnicode_AsUTF8AndSize(subprotocol, &len);
    if (sp == nullptr) return nullptr;
    const std::string_view spv(sp, static_cast<std::size_t>(len));
    if (!spv.empty()) {
      if (!is_valid_header_value(spv)) return runtime_error("Invalid subprotocol in websocket.accept", nullptr);
      head += "Sec-WebSocket-Protocol: ";
      head += spv;
      head += "\r\n";
    }
  }
  head += "\r\n";
  ex->ws->handshake_done = ex->ws->accepted = true;
  ex->response_started = true;
  ex->status = 101;
  ex->handler->log_access(*c, 101);
  c->out().append(head);
  c->ws_accept();
  ex->handler->wake();
  return ready_none();
}

// websocket.close before accept: HTTP 403, as uvicorn.
PyObject* ws_reject(Exchange* ex) {
  Connection* c = ex->conn;
  WsState* w = ex->ws;
  w->handshake_done = w->close_sent = true;
  ex->response_started = true;
  ex->status = 403;
  write_error_response(c->out(), 403, "", c->server()->config().defaults, c->server()->date());
  ws_set_disconnect(ex, ws::kCloseAbnormal, "", 0, false);
  ex->handler->log_access(*c, 403);
  Py_INCREF(reinterpret_cast<PyObject*>(ex));
  ex->response_complete = true;
  detach(ex);
  c->finish_response();
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
  ex->handler->wake();
  return ready_none();
}

PyObject* ws_send_data(Exchange* ex, PyObject* message) {
  PyObject* bytes = PyDict_GetItemWithError(message, m.bytes);
  if (bytes == nullptr && PyErr_Occurred()) return nullptr;
  Connection* c = ex->conn;
  if (bytes != nullptr && bytes != Py_None) {
    std::string_view data;
    if (get_bytes(bytes, &data)) {
      c->ws_send(false, data.data(), data.size());
    } else {
      Py_buffer view{};
      if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) return nullptr;
      c->ws_send(false, static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
      PyBuffer_Release(&view);
    }
  } else {
    PyObject* text = nullptr;
    if (!opt_str(message, m.text, &text)) return nullptr;
    if (text == nullptr) return ready_none();  // as uvicorn: nothing to send
    Py_ssize_t len = 0;
    const char* p = PyUnicode_AsUTF8AndSize(text, &len);
    if (p == nullptr) return nullptr;
    c->ws_send(true, p, static_cast<std::size_t>(len));
  }
  ex->handler->wake();
  return drain_or_ready(ex);
}

PyObject* ws_send_close(Exchange* ex, PyObject* message) {
  PyObject* code_obj = PyDict_GetItemWithError(message, m.code);
  if (code_obj == nullptr && PyErr_Occurred()) return nullptr;
  long code = ws::kCloseNormal;
  if (code_obj != nullptr && code_obj != Py_None) {
    code = PyLong_AsLong(code_obj);
    if (code == -1 && PyErr_Occurred()) return nullptr;
  }
  PyObject* reason = nullptr;
  if (!opt_str(message, m.reason, &reason)) return nullptr;
  Py_ssize_t len = 0;
  const char* r = "";
  if (reason != nullptr) {
    r = PyUnicode_AsUTF8AndSize(reason, &len);
    if (r == nullptr) return nullptr;
  }
  if (!ws::valid_close_code(static_cast<int>(code)) || code > 4999)
    return runtime_error("Invalid WebSocket close code", nullptr);
  if (len > static_cast<Py_ssize_t>(ws::kMaxControlPayload - 2))
    return runtime_error("WebSocket close reason too long", nullptr);
  ex->ws->close_sent = true;
  ws_set_disconnect(ex, static_cast<int>(code), r, len, true);
  ex->conn->ws_close(static_cast<int>(code), std::string_view(r, static_cast<std::size_t>(len)));
  ex->handler->wake();
  return ready_none();
}

PyObject* ws_send_call(Exchange* ex, PyObject* message, PyObject* type) {
  WsState* w = ex->ws;
  if (ex->disconnected) return client_disconnected();
  if (!w->handshake_done) {
    if (ex->conn == nullptr) return client_disconnected();
    if (type_is(type, m.ws_accept)) return ws_send_accept(ex, message);
    if (type_is(type, m.ws_close)) return ws_reject(ex);
    return runtime_error("Expected ASGI message 'websocket.accept', 'websocket.close' or "
                         "'websocket.http.response.start' but got '%S'.", type);
  }
  if (!w->close_sent && w->accepted) {
    if (ex->conn == nullptr || !ex->conn->ws_open()) return client_disconnected();
    if (type_is(type, m.ws_send)) return ws_send_data(ex, message);
    if (type_is(type, m.ws_close)) return ws_send_close(ex, message);
    return runtime_error("Expected ASGI message 'websocket.send' or 'websocket.close', but got '%S'.", type);
  }
  if (!w->close_sent) return client_disconnected();  // handshake answered with a 500
  return runtime_error("Unexpected ASGI message '%S', after sending 'websocket.close'.", type);
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
  if (ex->ws != nullptr) return ws_send_call(ex, message, type);
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

// The app failed mid-response: what it already sent still goes out (as with uvicorn's transport), then the
// connection closes, so the client sees a truncated response, never a desynchronised stream.
void close_connection(Exchange* ex) {
  Connection* c = ex->conn;
  if (c == nullptr) return;
  detach(ex);
  c->close_after_output();
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
  Py_CLEAR(ex->drain_waiter);
}

// As uvicorn: an ASGI callable must return None; anything else is logged (the caller then closes).
void log_non_none_result(Exchange* ex, PyObject* result) {
  PyObject* r = PyObject_Repr(result);
  const char* text = r != nullptr ? PyUnicode_AsUTF8(r) : nullptr;
  ex->handler->log_error(std::string("ASGI callable should return None, but returned '") + (text != nullptr ? text : "?") +
                             "'.",
                         nullptr);
  Py_XDECREF(r);
  PyErr_Clear();
}

// The WebSocket app finished (exc set: it raised). As uvicorn: no handshake answer yet -> 500; an open session is
// closed without a close frame; a close handshake in progress completes (or times out).
void ws_app_finished(Exchange* ex, PyObject* exc, PyObject* result) {
  WsState* w = ex->ws;
  if (exc != nullptr) {
    const int is_cd = PyObject_IsInstance(exc, m.client_disconnected);
    if (is_cd < 0) PyErr_Clear();
    if (is_cd != 1) ex->handler->log_error("Exception in ASGI application\n", exc);
  } else if (!w->handshake_done && ex->conn != nullptr && !ex->disconnected) {
    ex->handler->log_error("ASGI callable returned without completing handshake.", nullptr);
  } else if (result != Py_None) {
    log_non_none_result(ex, result);
  }
  if (!w->handshake_done) {
    w->handshake_done = true;
    ws_set_disconnect(ex, ws::kCloseAbnormal, "", 0, false);
    if (ex->conn != nullptr) answer_500(ex);
  } else if (ex->conn != nullptr) {
    ex->conn->ws_app_done();
  }
  app_finished(ex);
  ex->handler->wake();
}

// The app's coroutine raised `exc` (called by the Runner, with the GIL).
void app_failed(Exchange* ex, PyObject* exc) {
  if (ex->ws != nullptr) {
    ws_app_finished(ex, exc, nullptr);
    return;
  }
  ex->handler->log_error("Exception in ASGI application" + request_line(ex->conn) + "\n", exc);
  if (!ex->response_started) answer_500(ex);
  else if (!ex->response_complete) close_connection(ex);
  app_finished(ex);
  ex->handler->wake();
}

// The app's coroutine returned `result` (called by the Runner, with the GIL).
void app_returned(Exchange* ex, PyObject* result) {
  if (ex->ws != nullptr) {
    ws_app_finished(ex, nullptr, result);
    return;
  }
  if (result != Py_None) {
    log_non_none_result(ex, result);
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
}

// ---------------------------------------------------------------------------------------------------------------
// Runner: the coroutine the request's Task runs. It forwards every step to the app's coroutine and, when that
// finishes, reports how (return value or exception) to the Exchange, exactly like
//     async def run(app, scope, receive, send):
//         try: result = await app(scope, receive, send)
//         except BaseException as exc: <log; 500 or close>       (app_failed)
//         else: <check the response was completed>              (app_returned)
// but without a Python frame per step. NOTE: measured with benchmarks/apps/raw_asgi.py (wrk -c64, pinned cores):
// 87.9k -> see docs/benchmarks.md for the before/after of this change.
// ---------------------------------------------------------------------------------------------------------------
struct Runner {
  PyObject_HEAD
  PyObject* coro;
  Exchange* ex;
};
PyTypeObject RunnerType = {PyVarObject_HEAD_INIT(nullptr, 0)};


// The app's coroutine ended (value on return, or an exception set). Reports it; returns true when reported.
void runner_finish(Runner* r, PyObject* value) {
  Exchange* ex = r->ex;
  r->ex = nullptr;
  if (value != nullptr) {
    app_returned(ex, value);
  } else {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != nullptr && v != nullptr) PyException_SetTraceback(v, tb);
    app_failed(ex, v != nullptr ? v : Py_None);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
  }
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
  delete ex->ws;
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
  ex->ws = nullptr;
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

void PyAppHandler::on_request(Connection& c, const RequestHead& head) { dispatch(c, head, false); }

void PyAppHandler::on_websocket(Connection& c, const RequestHead& head) { dispatch(c, head, true); }

void PyAppHandler::dispatch(Connection& c, const RequestHead& head, bool websocket) {
  gil();
  Exchange* ex = exchange_new(this, &c);
  if (ex != nullptr && websocket) ex->ws = new (std::nothrow) WsState();
  Receive* rc = ex != nullptr && (!websocket || ex->ws != nullptr) ? receive_new(ex) : nullptr;
  if (websocket && rc == nullptr && !PyErr_Occurred()) PyErr_NoMemory();
  bool forwarded = false;
  StageStats& stages = c.server()->stages();
  const std::uint64_t t0 = stages.enabled ? monotonic_ns() : 0;
  PyObject* scope = rc == nullptr ? nullptr
                    : websocket   ? build_ws_scope(*this, c, head, &forwarded)
                                  : build_scope(*this, c, head, &forwarded);
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
      if (ex->ws != nullptr) {
        ex->ws->handshake_done = true;
        ws_set_disconnect(ex, ws::kCloseAbnormal, "", 0, false);
      }
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
  if (ex->ws != nullptr) {
    // As uvicorn: a stream lost without a close frame is 1005 once accepted, 1006 before.
    ws_set_disconnect(ex, ex->ws->accepted ? ws::kCloseNoStatus : ws::kCloseAbnormal, "", 0, false);
  } else if (ex->receive_waiter != nullptr) {
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

bool PyAppHandler::on_ws_message(Connection& c, bool text, const char* data, std::size_t len) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->ws == nullptr) return false;
  gil();
  WsState* w = ex->ws;
  PyObject* payload = text ? PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), nullptr)
                           : PyBytes_FromStringAndSize(data, static_cast<Py_ssize_t>(len));
  PyObject* msg = payload != nullptr ? PyDict_New() : nullptr;
  if (msg == nullptr || PyDict_SetItem(msg, m.type, m.ws_receive) < 0 ||
      PyDict_SetItem(msg, text ? m.text : m.bytes, payload) < 0) {
    PyErr_WriteUnraisable(nullptr);
    Py_XDECREF(payload);
    Py_XDECREF(msg);
    return false;
  }
  Py_DECREF(payload);
  if (ex->receive_waiter != nullptr && w->queue.empty()) {
    resolve(&ex->receive_waiter, msg);
    Py_DECREF(msg);
    return false;
  }
  w->queue.emplace_back(msg, len);
  w->queued_bytes += len;
  if (w->queue.size() >= kWsMaxQueued || w->queued_bytes >= c.server()->config().body_high_water) {
    w->paused = true;
    return true;
  }
  return false;
}

void PyAppHandler::on_ws_close(Connection& c, int code, std::string_view reason) {
  auto* ex = static_cast<Exchange*>(c.exchange);
  if (ex == nullptr || ex->ws == nullptr) return;
  gil();
  // uvicorn: the peer's close or a protocol failure carry a reason; a shutdown (1012) does not.
  const bool with_reason = !(code == ws::kCloseServiceRestart && reason.empty() && c.server()->shutting_down());
  ws_set_disconnect(ex, code, reason.data(), static_cast<Py_ssize_t>(reason.size()), with_reason);
}

PyObject* client_disconnected_type() { return m.client_disconnected; }

}  // namespace fa
