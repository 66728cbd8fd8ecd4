#include "bindings/websocket_cycle.h"

#include "core/strings.h"

#include <string>
#include <vector>

#include "bindings/py_app_handler.h"
#include "bindings/awaitables.h"
#include "bindings/exchange.h"
#include "bindings/http_cycle.h"
#include "bindings/py_names.h"
#include "http/websocket.h"
#include "server/connection.h"
#include "server/server.h"

namespace fa {

namespace {

// Record how the session ended (first call wins) and hand it to a pending receive().
void set_disconnect(Exchange* ex, int code, std::string_view reason, bool with_reason) {
  WsState* w = ex->ws;
  if (w->disconnect == nullptr) {
    PyObject* msg = PyDict_New();
    PyObject* c = PyLong_FromLong(code);
    PyObject* r = with_reason
                      ? PyUnicode_DecodeUTF8(reason.data(), static_cast<Py_ssize_t>(reason.size()), "replace")
                      : nullptr;
    if (msg == nullptr || c == nullptr || (with_reason && r == nullptr) ||
        PyDict_SetItem(msg, names.type, names.ws_disconnect) < 0 || PyDict_SetItem(msg, names.code, c) < 0 ||
        (r != nullptr && PyDict_SetItem(msg, names.reason, r) < 0)) {
      Py_CLEAR(msg);
      PyErr_WriteUnraisable(nullptr);
    }
    Py_XDECREF(c);
    Py_XDECREF(r);
    if (msg == nullptr) return;
    w->disconnect = msg;
  }
  if (w->queue.empty()) resolve_all_receives(ex, w->disconnect);
}

PyObject* client_disconnected() {
  PyErr_SetNone(names.client_disconnected);
  return nullptr;
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

// Sec-WebSocket-Accept: base64(SHA-1(key + GUID)), with Python's hashlib and base64 (imported on first use).
// False with a Python error set.
bool accept_key(std::string_view key, std::string* out) {
  static PyObject* sha1 = nullptr;
  static PyObject* b64encode = nullptr;
  if (sha1 == nullptr) {
    PyObject* hashlib = PyImport_ImportModule("hashlib");
    PyObject* base64 = hashlib != nullptr ? PyImport_ImportModule("base64") : nullptr;
    PyObject* s = hashlib != nullptr ? PyObject_GetAttrString(hashlib, "sha1") : nullptr;
    PyObject* b = base64 != nullptr && s != nullptr ? PyObject_GetAttrString(base64, "b64encode") : nullptr;
    Py_XDECREF(hashlib);
    Py_XDECREF(base64);
    if (b == nullptr) {
      Py_XDECREF(s);
      return false;
    }
    sha1 = s;
    b64encode = b;
  }
  std::string input(key);
  input += "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  PyObject* data = PyBytes_FromStringAndSize(input.data(), static_cast<Py_ssize_t>(input.size()));
  PyObject* h = data != nullptr ? PyObject_CallOneArg(sha1, data) : nullptr;
  PyObject* digest = h != nullptr ? PyObject_CallMethod(h, "digest", nullptr) : nullptr;
  PyObject* b64 = digest != nullptr ? PyObject_CallOneArg(b64encode, digest) : nullptr;
  const bool ok = b64 != nullptr && PyBytes_Check(b64);
  if (ok) out->assign(PyBytes_AS_STRING(b64), static_cast<std::size_t>(PyBytes_GET_SIZE(b64)));
  else if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "cannot compute Sec-WebSocket-Accept");
  Py_XDECREF(data);
  Py_XDECREF(h);
  Py_XDECREF(digest);
  Py_XDECREF(b64);
  return ok;
}

// The [name, value] pairs of a message's "headers" as byte views. The views stay valid while *keep (a new
// reference, or nullptr) is alive. False with a Python error set.
bool header_views(PyObject* message, const char* what, PyObject** keep, std::vector<std::string_view>* hnames,
                  std::vector<std::string_view>* hvalues) {
  *keep = nullptr;
  PyObject* headers = PyDict_GetItemWithError(message, names.headers);
  if (headers == nullptr) return !PyErr_Occurred();
  if (headers == Py_None) return true;
  PyObject* seq = PySequence_Fast(headers, what);
  if (seq == nullptr) return false;
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
  for (Py_ssize_t i = 0; i < n; ++i) {
    PyObject* pair = PySequence_Fast_GET_ITEM(seq, i);
    PyObject *name = nullptr, *value = nullptr;
    if ((PyTuple_Check(pair) || PyList_Check(pair)) && PySequence_Fast_GET_SIZE(pair) == 2) {
      name = PySequence_Fast_GET_ITEM(pair, 0);
      value = PySequence_Fast_GET_ITEM(pair, 1);
    }
    std::string_view nv, vv;
    if (name == nullptr || !get_bytes(name, &nv) || !get_bytes(value, &vv)) {
      Py_DECREF(seq);
      PyErr_SetString(PyExc_TypeError, "headers must be [name, value] pairs of bytes");
      return false;
    }
    hnames->push_back(nv);
    hvalues->push_back(vv);
  }
  *keep = seq;
  return true;
}

PyObject* send_accept(Exchange* ex, PyObject* message) {
  Connection* c = &ex->conn->connection();
  PyObject* subprotocol = nullptr;
  if (!opt_str(message, names.subprotocol, &subprotocol)) return nullptr;
  std::string_view sub;
  if (subprotocol != nullptr) {
    Py_ssize_t len = 0;
    const char* sp = PyUnicode_AsUTF8AndSize(subprotocol, &len);
    if (sp == nullptr) return nullptr;
    sub = std::string_view(sp, static_cast<std::size_t>(len));
  }
  PyObject* keep = nullptr;
  std::vector<std::string_view> hnames, hvalues;
  if (!header_views(message, "websocket.accept headers must be an iterable of [name, value] pairs", &keep, &hnames,
                    &hvalues))
    return nullptr;
  std::string key;
  if (!accept_key(ex->conn->head().header("sec-websocket-key"), &key)) {
    Py_XDECREF(keep);
    return nullptr;
  }
  const char* err = nullptr;
  try {
    err = c->ws_accept(key, hnames.data(), hvalues.data(), hnames.size(), sub);
  } catch (...) {
    Py_XDECREF(keep);
    throw;
  }
  Py_XDECREF(keep);
  if (err != nullptr) return runtime_error(err);
  ex->ws->handshake_done = ex->ws->accepted = true;
  ex->response_started = true;
  ex->status = 101;
  ex->handler->log_websocket(ex->scope, 101);
  ex->handler->wake();
  return ready_none();
}

// websocket.http.response.start: a denial response instead of the handshake (the ASGI extension; uvicorn
// offers it too). Kept until the body is complete, then sent whole.
PyObject* denial_start(Exchange* ex, PyObject* message) {
  WsState* w = ex->ws;
  long status = 0;
  if (!message_status(message, &status)) return nullptr;
  if (status < 100 || status > 599)
    return PyErr_Format(PyExc_RuntimeError, "Invalid HTTP status code '%ld' in response.", status);
  PyObject* keep = nullptr;
  std::vector<std::string_view> hnames, hvalues;
  if (!header_views(message, "response headers must be an iterable of [name, value] pairs", &keep, &hnames,
                    &hvalues))
    return nullptr;
  w->denial_headers.clear();
  for (std::size_t i = 0; i < hnames.size(); ++i) w->denial_headers.emplace_back(hnames[i], hvalues[i]);
  Py_XDECREF(keep);
  w->denial = true;
  w->denial_status = static_cast<int>(status);
  return ready_none();
}

PyObject* denial_body(Exchange* ex, PyObject* message) {
  WsState* w = ex->ws;
  HttpStream* c = ex->conn;
  std::string_view data;
  Py_buffer view{};
  bool have_view = false, more = false;
  if (!message_body(message, &data, &view, &have_view, &more)) return nullptr;
  try {
    w->denial_body.append(data);
  } catch (...) {
    if (have_view) PyBuffer_Release(&view);
    throw;
  }
  if (have_view) PyBuffer_Release(&view);
  if (more) return ready_none();
  // As uvicorn: Content-Length and Content-Type filled in when the app gave none; the connection closes after.
  std::vector<std::string_view> hnames, hvalues;
  bool has_length = false, has_type = false;
  for (const auto& [name, value] : w->denial_headers) {
    has_length |= ascii_iequals(name, "content-length");
    has_type |= ascii_iequals(name, "content-type");
    hnames.push_back(name);
    hvalues.push_back(value);
  }
  const std::string length = std::to_string(w->denial_body.size());
  if (!has_length) {
    hnames.emplace_back("content-length");
    hvalues.emplace_back(length);
  }
  if (!has_type) {
    hnames.emplace_back("content-type");
    hvalues.emplace_back("text/plain; charset=utf-8");
  }
  if (const char* err = c->start_response(w->denial_status, hnames.data(), hvalues.data(), hnames.size()))
    return runtime_error(err);
  if (const char* err = c->write_body(w->denial_body.data(), w->denial_body.size(), false)) return runtime_error(err);
  w->handshake_done = w->close_sent = true;
  ex->response_started = true;
  ex->status = w->denial_status;
  ex->handler->log_websocket(ex->scope, w->denial_status);
  set_disconnect(ex, ws::kCloseAbnormal, "", false);
  complete_response(ex);
  ex->handler->wake();
  return ready_none();
}

// websocket.close before accept: HTTP 403, as uvicorn.
PyObject* reject(Exchange* ex) {
  WsState* w = ex->ws;
  w->handshake_done = w->close_sent = true;
  ex->conn->answer_error(403, "", {}, false);  // as uvicorn: no server header, no --header values
  ex->response_started = true;
  ex->status = 403;
  ex->handler->log_websocket(ex->scope, 403);
  set_disconnect(ex, ws::kCloseAbnormal, "", false);
  complete_response(ex);
  ex->handler->wake();
  return ready_none();
}

PyObject* send_data(Exchange* ex, PyObject* message) {
  PyObject* bytes = PyDict_GetItemWithError(message, names.bytes);
  if (bytes == nullptr && PyErr_Occurred()) return nullptr;
  Connection* c = &ex->conn->connection();
  if (bytes != nullptr && bytes != Py_None) {
    std::string_view data;
    if (get_bytes(bytes, &data)) {
      c->ws_send(false, data.data(), data.size());
    } else {
      Py_buffer view{};
      if (PyObject_GetBuffer(bytes, &view, PyBUF_SIMPLE) < 0) return nullptr;
      try {
        c->ws_send(false, static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
      } catch (...) {
        PyBuffer_Release(&view);
        throw;
      }
      PyBuffer_Release(&view);
    }
  } else {
    PyObject* text = nullptr;
    if (!opt_str(message, names.text, &text)) return nullptr;
    if (text == nullptr) return ready_none();  // as uvicorn: nothing to send
    Py_ssize_t len = 0;
    const char* p = PyUnicode_AsUTF8AndSize(text, &len);
    if (p == nullptr) return nullptr;
    c->ws_send(true, p, static_cast<std::size_t>(len));
  }
  ex->handler->wake();
  return drain_or_ready(ex);
}

PyObject* send_close(Exchange* ex, PyObject* message) {
  PyObject* code_obj = PyDict_GetItemWithError(message, names.code);
  if (code_obj == nullptr && PyErr_Occurred()) return nullptr;
  long code = ws::kCloseNormal;
  if (code_obj != nullptr && code_obj != Py_None) {
    code = PyLong_AsLong(code_obj);
    if (code == -1 && PyErr_Occurred()) return nullptr;
  }
  PyObject* reason = nullptr;
  if (!opt_str(message, names.reason, &reason)) return nullptr;
  Py_ssize_t len = 0;
  const char* r = "";
  if (reason != nullptr) {
    r = PyUnicode_AsUTF8AndSize(reason, &len);
    if (r == nullptr) return nullptr;
  }
  if (!ws::valid_close_code(static_cast<int>(code)) || code > 4999)
    return runtime_error("Invalid WebSocket close code");
  if (len > static_cast<Py_ssize_t>(ws::kMaxControlPayload - 2)) return runtime_error("WebSocket close reason too long");
  const std::string_view reason_view(r, static_cast<std::size_t>(len));
  ex->ws->close_sent = true;
  set_disconnect(ex, static_cast<int>(code), reason_view, true);
  ex->conn->connection().ws_close(static_cast<int>(code), reason_view);
  ex->handler->wake();
  return ready_none();
}

}  // namespace

PyObject* ws_receive(Exchange* ex) {
  WsState* w = ex->ws;
  if (!w->connect_delivered) {
    w->connect_delivered = true;
    return ready_steal(type_message(names.ws_connect));
  }
  if (!w->queue.empty()) {
    auto [msg, size] = w->queue.front();
    w->queue.pop_front();
    w->queued_bytes -= size;
    // Reading resumes once the app has drained the queue to a quarter of --ws-max-queue (websockets' low-water
    // mark) and below the byte low-water mark.
    if (w->paused && ex->conn != nullptr && w->queue.size() <= ex->conn->server()->config().ws_max_queue / 4 &&
        w->queued_bytes <= ex->conn->server()->config().write_low_water) {
      w->paused = false;
      ex->conn->resume();
    }
    return ready_steal(msg);
  }
  if (w->disconnect != nullptr) return ready_steal(PyDict_Copy(w->disconnect));
  if (ex->conn == nullptr || ex->disconnected) {
    set_disconnect(ex, w->accepted ? ws::kCloseNoStatus : ws::kCloseAbnormal, "", false);
    if (w->disconnect == nullptr) return nullptr;
    return ready_steal(PyDict_Copy(w->disconnect));
  }
  return park_receive(ex);
}

PyObject* ws_send(Exchange* ex, PyObject* message, PyObject* type) {
  WsState* w = ex->ws;
  if (ex->disconnected) return client_disconnected();
  if (w->denial && !w->handshake_done) {
    if (ex->conn == nullptr) return client_disconnected();
    if (type_is(type, names.ws_http_response_body)) return denial_body(ex, message);
    return runtime_error("Expected ASGI message 'websocket.http.response.body' but got '%S'.", type);
  }
  if (!w->handshake_done) {
    if (ex->conn == nullptr) return client_disconnected();
    if (type_is(type, names.ws_accept)) return send_accept(ex, message);
    if (type_is(type, names.ws_close)) return reject(ex);
    if (type_is(type, names.ws_http_response_start)) return denial_start(ex, message);
    return runtime_error("Expected ASGI message 'websocket.accept', 'websocket.close' or "
                         "'websocket.http.response.start' but got '%S'.",
                         type);
  }
  if (!w->close_sent && w->accepted) {
    if (ex->conn == nullptr || !ex->conn->connection().ws_open()) return client_disconnected();
    if (type_is(type, names.ws_send)) return send_data(ex, message);
    if (type_is(type, names.ws_close)) return send_close(ex, message);
    return runtime_error("Expected ASGI message 'websocket.send' or 'websocket.close', but got '%S'.", type);
  }
  if (!w->close_sent) return client_disconnected();  // handshake answered with a 500
  return runtime_error("Unexpected ASGI message '%S', after sending 'websocket.close'.", type);
}

bool ws_message_arrived(Exchange* ex, bool text, const char* data, std::size_t len) {
  WsState* w = ex->ws;
  PyObject* payload = text ? PyUnicode_DecodeUTF8(data, static_cast<Py_ssize_t>(len), nullptr)
                           : PyBytes_FromStringAndSize(data, static_cast<Py_ssize_t>(len));
  PyObject* msg = payload != nullptr ? PyDict_New() : nullptr;
  if (msg == nullptr || PyDict_SetItem(msg, names.type, names.ws_receive) < 0 ||
      PyDict_SetItem(msg, text ? names.text : names.bytes, payload) < 0) {
    PyErr_WriteUnraisable(nullptr);
    Py_XDECREF(payload);
    Py_XDECREF(msg);
    return false;
  }
  Py_DECREF(payload);
  PyObject** waiter = w->queue.empty() ? waiting_receive(ex) : nullptr;
  if (waiter != nullptr) {
    resolve(waiter, msg);
    Py_DECREF(msg);
    return false;
  }
  w->queue.emplace_back(msg, len);
  w->queued_bytes += len;
  // At most --ws-max-queue messages (and about body_high_water bytes) wait for the app: then reading pauses.
  const ServerConfig& cfg = ex->conn->server()->config();
  if (w->queue.size() >= cfg.ws_max_queue || w->queued_bytes >= cfg.body_high_water) {
    w->paused = true;
    return true;
  }
  return false;
}

void ws_session_closing(Exchange* ex, int code, std::string_view reason, bool with_reason) {
  set_disconnect(ex, code, reason, with_reason);
}

void ws_stream_lost(Exchange* ex) {
  set_disconnect(ex, ex->ws->accepted ? ws::kCloseNoStatus : ws::kCloseAbnormal, "", false);
}

void ws_answer_500(Exchange* ex) {
  ex->ws->handshake_done = true;
  set_disconnect(ex, ws::kCloseAbnormal, "", false);
  if (ex->conn != nullptr) http_answer_500(ex);
}

void ws_app_finished(Exchange* ex, PyObject* exc, PyObject* result) {
  WsState* w = ex->ws;
  if (exc != nullptr) {
    const int is_cd = PyObject_IsInstance(exc, names.client_disconnected);
    if (is_cd < 0) PyErr_Clear();
    if (is_cd != 1) ex->handler->log_error("Exception in ASGI application\n", exc);
  } else if (!w->handshake_done && ex->conn != nullptr && !ex->disconnected) {
    ex->handler->log_error("ASGI callable returned without completing handshake.", nullptr);
  } else if (result != Py_None) {
    log_non_none_result(ex, result);
  }
  // As uvicorn: no handshake answer yet -> 500; an open session is closed without a close frame; a close
  // handshake in progress completes (or times out).
  if (!w->handshake_done) ws_answer_500(ex);
  else if (ex->conn != nullptr) ex->conn->connection().ws_app_done();
}

}  // namespace fa
