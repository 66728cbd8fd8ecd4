#include "bindings/http_cycle.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>
#include <vector>

#include "bindings/py_app_handler.h"
#include "bindings/awaitables.h"
#include "bindings/exchange.h"
#include "bindings/py_names.h"
#include "server/connection.h"
#include "server/server.h"

namespace fa {

namespace {

// {"type": "http.request", "body": ..., "more_body": ...} from what is buffered; resumes a paused body.
PyObject* take_body_message(Exchange* ex) {
  PyObject* body;
  std::vector<PyObject*>& ch = *ex->chunks;
  if (ch.empty()) {
    body = Py_NewRef(names.empty_bytes);
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
  if (msg == nullptr || PyDict_SetItem(msg, names.type, names.http_request) < 0 ||
      PyDict_SetItem(msg, names.body, body) < 0 ||
      PyDict_SetItem(msg, names.more_body, ex->body_complete ? Py_False : Py_True) < 0) {
    Py_XDECREF(msg);
    Py_DECREF(body);
    return nullptr;
  }
  Py_DECREF(body);
  if (ex->body_paused && ex->conn != nullptr) {
    ex->body_paused = false;
    ex->conn->resume();
  }
  return msg;
}

// The (name, value) pairs of a PySequence_Fast `seq` as views (valid while `seq` lives) into names/values, which
// hold PySequence_Fast_GET_SIZE(seq) entries. False with a Python error set.
bool header_views(PyObject* seq, std::string_view* names_out, std::string_view* values_out) {
  const Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
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
      runtime_error("Invalid HTTP header: expected a (name, value) pair");
      return false;
    }
    if (!get_bytes(name, &names_out[i]) || !get_bytes(value, &values_out[i])) {
      PyErr_SetString(PyExc_TypeError, "response header names and values must be bytes");
      return false;
    }
  }
  return true;
}

PyObject* send_start(Exchange* ex, PyObject* message) {
  long status = 0;
  if (!message_status(message, &status)) return nullptr;
  PyObject* headers = PyDict_GetItemWithError(message, names.headers);
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
  std::string_view* hnames = stack_names;
  std::string_view* hvalues = stack_values;
  if (n > 32) {
    heap_names.resize(static_cast<std::size_t>(n));
    heap_values.resize(static_cast<std::size_t>(n));
    hnames = heap_names.data();
    hvalues = heap_values.data();
  }
  if (seq != nullptr && !header_views(seq, hnames, hvalues)) {
    Py_DECREF(seq);
    return nullptr;
  }
  const char* err = nullptr;
  try {
    err = ex->conn->start_response(static_cast<int>(status), hnames, hvalues, static_cast<std::size_t>(n));
  } catch (...) {
    Py_XDECREF(seq);
    throw;
  }
  Py_XDECREF(seq);
  if (err != nullptr) return runtime_error(err);
  // ASGI's trailers extension: {"trailers": True} announces http.response.trailers messages after the body. Offered
  // (scope["extensions"]) on HTTP/2 only; elsewhere the key is ignored, as uvicorn ignores it.
  PyObject* trailers = ex->conn->head().http_major == 2 ? PyDict_GetItemWithError(message, names.trailers) : nullptr;
  if (trailers == nullptr && PyErr_Occurred()) return nullptr;
  if (trailers != nullptr) {
    const int on = PyObject_IsTrue(trailers);
    if (on < 0) return nullptr;
    if (on != 0) ex->trailers_expected = ex->conn->expect_trailers();
  }
  ex->response_started = true;
  ex->status = static_cast<int>(status);
  ex->handler->log_access(ex->scope, ex->status);
  return ready_none();
}

PyObject* send_body(Exchange* ex, PyObject* message) {
  std::string_view data;
  Py_buffer view{};
  bool have_view = false, more = false;
  if (!message_body(message, &data, &view, &have_view, &more)) return nullptr;
  const char* err = nullptr;
  try {
    err = ex->conn->write_body(data.data(), data.size(), more);
  } catch (...) {
    if (have_view) PyBuffer_Release(&view);
    throw;
  }
  if (have_view) PyBuffer_Release(&view);
  if (err != nullptr) return runtime_error(err);
  ex->handler->wake();
  if (!more) {
    if (ex->trailers_expected) {
      ex->awaiting_trailers = true;  // the response completes with its last trailers message
      return ready_none();
    }
    complete_response(ex);
    return ready_none();
  }
  return drain_or_ready(ex);
}

// {"type": "http.response.trailers", "headers": [...], "more_trailers": bool} (ASGI's trailers extension).
PyObject* send_trailers(Exchange* ex, PyObject* message) {
  PyObject* headers = PyDict_GetItemWithError(message, names.headers);
  if (headers == nullptr && PyErr_Occurred()) return nullptr;
  PyObject* more_obj = PyDict_GetItemWithError(message, names.more_trailers);
  if (more_obj == nullptr && PyErr_Occurred()) return nullptr;
  const int more = more_obj == nullptr ? 0 : PyObject_IsTrue(more_obj);
  if (more < 0) return nullptr;
  PyObject* seq = headers != nullptr ? PySequence_Fast(headers, "trailers must be an iterable of [name, value] pairs")
                                     : PyTuple_New(0);
  if (seq == nullptr) return nullptr;
  std::vector<std::string_view> tnames(static_cast<std::size_t>(PySequence_Fast_GET_SIZE(seq)));
  std::vector<std::string_view> tvalues(tnames.size());
  if (!header_views(seq, tnames.data(), tvalues.data())) {
    Py_DECREF(seq);
    return nullptr;
  }
  const char* err = ex->conn->write_trailers(tnames.data(), tvalues.data(), tnames.size(), more != 0);
  Py_DECREF(seq);
  if (err != nullptr) return runtime_error(err);
  if (more == 0) {
    ex->awaiting_trailers = false;
    complete_response(ex);
  }
  return ready_none();
}

// {"type": "http.response.pathsend", "path": ...}: the file at `path` is the whole body (ASGI's pathsend
// extension, advertised in scope["extensions"]). The core sends it (sendfile on plain connections); send() returns
// once every byte is out, as for a body under backpressure.
PyObject* send_pathsend(Exchange* ex, PyObject* message) {
  PyObject* path = PyDict_GetItemWithError(message, names.path);
  if (path == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "http.response.pathsend needs a 'path'");
    return nullptr;
  }
  PyObject* encoded = nullptr;
  if (!PyUnicode_FSConverter(path, &encoded)) return nullptr;  // str, bytes or os.PathLike
  const int fd = ::open(PyBytes_AS_STRING(encoded), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
    Py_DECREF(encoded);
    return nullptr;
  }
  Py_DECREF(encoded);
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const bool not_regular = errno == 0 || S_ISDIR(st.st_mode) || !S_ISREG(st.st_mode);
    ::close(fd);
    if (not_regular) return runtime_error("http.response.pathsend: not a regular file: %R", path);
    return PyErr_SetFromErrno(PyExc_OSError);
  }
  ex->file_pending = true;
  const char* err = ex->conn->send_file(fd, static_cast<std::uint64_t>(st.st_size));  // takes fd
  if (err != nullptr) {
    ex->file_pending = false;
    return runtime_error(err);
  }
  ex->handler->wake();
  if (!ex->file_pending) return ready_none();  // sent at once: on_file_sent() completed the response
  if (ex->disconnected || ex->conn == nullptr) {
    // The connection closed inside send_file() (a file shorter than its size, a socket error): the disconnect was
    // delivered before there was anything to resolve, so no future may be made to wait for it.
    ex->file_pending = false;
    return ready_none();
  }
  PyObject* fut = new_future(ex);
  if (fut == nullptr) return nullptr;
  Py_XSETREF(ex->drain_waiter, Py_NewRef(fut));
  return fut;
}

// The app failed mid-response: what it already sent still goes out (as with uvicorn's transport), then the
// connection closes, so the client sees a truncated response, never a desynchronised stream.
void close_connection(Exchange* ex) {
  HttpStream* c = ex->conn;
  if (c == nullptr) return;
  detach(ex);
  c->close_after_output();
}

}  // namespace

PyObject* http_receive(Exchange* ex) {
  if (ex->disconnected || ex->response_complete || ex->conn == nullptr)
    return ready_steal(type_message(names.http_disconnect));
  // Once the whole body was handed over, a further receive() waits for the disconnect / response end.
  if (!ex->final_delivered && (!ex->chunks->empty() || ex->body_complete)) {
    if (ex->body_complete) ex->final_delivered = true;
    return ready_steal(take_body_message(ex));
  }
  ex->conn->send_continue();
  if (ex->body_paused) {
    ex->body_paused = false;
    ex->conn->resume();
  }
  return park_receive(ex);
}

PyObject* http_send(Exchange* ex, PyObject* message, PyObject* type) {
  if (ex->disconnected) return ready_none();  // as uvicorn: sending after a disconnect is a no-op
  const bool is_start = type_is(type, names.http_response_start);
  const bool is_body = !is_start && type_is(type, names.http_response_body);
  if (ex->response_complete || ex->conn == nullptr)
    return runtime_error("Unexpected ASGI message '%S' sent, after response already completed.", type);
  if (!ex->response_started) {
    if (!is_start) return runtime_error("Expected ASGI message 'http.response.start', but got '%S'.", type);
    return send_start(ex, message);
  }
  if (ex->file_pending) return runtime_error("Unexpected ASGI message '%S' sent, after http.response.pathsend.", type);
  if (ex->awaiting_trailers) {
    if (type_is(type, names.http_response_trailers)) return send_trailers(ex, message);
    return runtime_error("Expected ASGI message 'http.response.trailers', but got '%S'.", type);
  }
  if (is_body) return send_body(ex, message);
  if (type_is(type, names.http_response_pathsend)) return send_pathsend(ex, message);
  return runtime_error("Expected ASGI message 'http.response.body', but got '%S'.", type);
}

void http_file_sent(Exchange* ex) {
  ex->file_pending = false;
  complete_response(ex);
  resolve(&ex->drain_waiter, Py_None);
}

bool http_body_arrived(Exchange* ex, const char* data, std::size_t len) {
  PyObject* chunk = PyBytes_FromStringAndSize(data, static_cast<Py_ssize_t>(len));
  if (chunk == nullptr) {
    PyErr_WriteUnraisable(nullptr);
    return false;
  }
  ex->chunks->push_back(chunk);
  ex->buffered += len;
  if (PyObject** waiter = waiting_receive(ex)) {
    PyObject* msg = take_body_message(ex);
    if (msg != nullptr) {
      resolve(waiter, msg);
      Py_DECREF(msg);
    } else {
      PyErr_WriteUnraisable(nullptr);
    }
    return false;
  }
  if (ex->buffered >= ex->conn->server()->config().body_high_water) {
    ex->body_paused = true;
    return true;
  }
  return false;
}

void http_body_complete(Exchange* ex) {
  ex->body_complete = true;
  PyObject** waiter = waiting_receive(ex);
  if (waiter == nullptr) return;
  PyObject* msg = take_body_message(ex);
  ex->final_delivered = true;
  if (msg != nullptr) {
    resolve(waiter, msg);
    Py_DECREF(msg);
  } else {
    PyErr_WriteUnraisable(nullptr);
  }
}

void http_answer_500(Exchange* ex) {
  HttpStream* c = ex->conn;
  if (c == nullptr) return;
  c->answer_error(500, "Internal Server Error");
  ex->response_started = true;
  ex->status = 500;
  if (ex->ws != nullptr) ex->handler->log_websocket(ex->scope, 500);
  else ex->handler->log_access(ex->scope, 500);
  complete_response(ex);
}

void http_app_failed(Exchange* ex, PyObject* exc) {
  ex->handler->log_error("Exception in ASGI application\n", exc);  // uvicorn's line, exactly
  if (!ex->response_started) http_answer_500(ex);
  else if (!ex->response_complete) close_connection(ex);
}

void http_app_returned(Exchange* ex, PyObject* result) {
  if (result != Py_None) {
    log_non_none_result(ex, result);
    close_connection(ex);
  } else if (!ex->response_started && !ex->disconnected && ex->conn != nullptr) {
    ex->handler->log_error("ASGI callable returned without starting response." + request_line(ex->conn), nullptr);
    http_answer_500(ex);
  } else if (!ex->response_complete && !ex->disconnected && ex->conn != nullptr) {
    ex->handler->log_error("ASGI callable returned without completing response." + request_line(ex->conn), nullptr);
    close_connection(ex);
  }
}

}  // namespace fa
