// Exchange: one request/response cycle (an HTTP request or a WebSocket session) as the app sees it. The Exchange
// object *is* the app's `send` callable; a Receive object wraps it as `receive`. Both are vectorcall types.
//
// Ownership:
// - The stream holds one reference to its current Exchange (HttpStream::exchange) while the request is in
//   flight, dropped by detach(); the Receive object, the Runner and the caller hold their own.
// - Every Exchange holds a counted reference to its PyAppHandler (retain/release), so an app Task that outlives
//   the server (shutdown, the PyServer object collected) still finds its handler when it completes.
// - ex->conn is nullptr once detached (response complete and the connection moved on, or the connection closed):
//   nothing reaches a connection through a detached exchange.
// GIL: every function here is called with the GIL held.
#pragma once

#include <Python.h>

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fa {

class HttpStream;
class PyAppHandler;
struct RequestHead;

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
  // websocket.http.response (a denial response instead of accept): status and headers of the start message,
  // the body gathered until the last body message (uvicorn sends it whole, with a Content-Length).
  bool denial = false;
  int denial_status = 0;
  std::vector<std::pair<std::string, std::string>> denial_headers;  // copied: the app may reuse its list
  std::string denial_body;
  ~WsState() {
    for (auto& e : queue) Py_DECREF(e.first);
    Py_XDECREF(disconnect);
  }
};

struct Exchange {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyAppHandler* handler;  // counted reference (PyAppHandler::retain), released in dealloc
  HttpStream* conn;       // nullptr once detached (HTTP/1.1: the Http1Session; HTTP/2: an H2Stream)
  std::vector<PyObject*>* chunks;  // request body chunks not yet taken by receive()
  PyObject* receive_waiter;  // Future awaited by receive(), or nullptr
  // Further receive() calls waiting at the same time (Starlette's StreamingResponse listens for the disconnect
  // while the endpoint polls is_disconnected(); uvicorn lets both wait). nullptr until first needed.
  std::vector<PyObject*>* more_waiters;
  PyObject* drain_waiter;    // Future awaited by send() under write backpressure, or nullptr
  PyObject* task;            // the app's Task, kept alive until the app is done
  PyObject* scope;           // the request's scope (for the access line), or nullptr
  std::size_t buffered;
  int status;
  bool body_complete;
  bool disconnected;
  bool response_started;
  bool response_complete;
  bool body_paused;
  bool app_done;
  bool final_delivered;  // the http.request message with more_body=False was handed to the app
  bool file_pending;     // http.response.pathsend: the core is sending the file; send() waits in drain_waiter
  bool trailers_expected;  // http.response.start had trailers=True and the stream takes them (HTTP/2)
  bool awaiting_trailers;  // the body is complete: http.response.trailers messages complete the response
  WsState* ws;           // WebSocket session, or nullptr
};

// Module setup of the Send/Receive types; false with a Python error set.
bool exchange_types_init();
// A new Exchange for the request now on `c` (websocket: with a WsState) and its Receive. New references in
// *ex and *receive, or false with a Python error set and nothing created.
bool exchange_create(PyAppHandler* handler, HttpStream* c, bool websocket, Exchange** ex, PyObject** receive);

// ---- shared by the HTTP and WebSocket cycles ----
PyObject* new_future(Exchange* ex);
// receive() has nothing to return yet: a Future the core resolves (kept in ex->receive_waiter, or with the
// further waiters when one is already waiting).
PyObject* park_receive(Exchange* ex);
// The slot of the first receive() still waiting (cancelled ones dropped on the way), or nullptr: a message that
// goes to one receiver (a body chunk, a WebSocket message) is resolve()d into it.
PyObject** waiting_receive(Exchange* ex);
// Every waiting receive() gets its own copy of `message` (a dict; http.disconnect, websocket.disconnect).
void resolve_all_receives(Exchange* ex, PyObject* message);
// Resolve *waiter (if any) with `value` and clear it.
void resolve(PyObject** waiter, PyObject* value);
// Whether *waiter is a Future still waiting for its result. One the app cancelled (receive() under a timeout, an
// anyio cancel scope, Starlette's is_disconnected()) is dropped here, so it blocks no later receive() and takes
// no message with it.
bool live_waiter(PyObject** waiter);
// Drop the connection's reference; ex->conn becomes nullptr.
void detach(Exchange* ex);
// The response is complete: access log, detach, let the connection go on, wake a pending receive().
void complete_response(Exchange* ex);
// What send() returns after queueing output: a Future resolved when the write queue drains below the low-water
// mark (backpressure), or the shared Ready(None).
PyObject* drain_or_ready(Exchange* ex);
void clear_chunks(Exchange* ex);
// {"type": type}: a new message dict, or nullptr with an error set (http.disconnect, websocket.connect, ...).
PyObject* type_message(PyObject* type);
// The client went away while the request was in flight.
void exchange_disconnected(Exchange* ex);
// Sets RuntimeError(fmt % arg) and returns nullptr.
PyObject* runtime_error(const char* fmt, PyObject* arg = nullptr);
// A view of a bytes or bytearray object; false for other types (no error set).
bool get_bytes(PyObject* o, std::string_view* out);
bool type_is(PyObject* type, PyObject* interned);
// ` ("GET /path HTTP/1.1")` for log lines, or "" without a connection.
std::string request_line(const HttpStream* c);
// "1.0", "1.1" or "2", for log lines.
const char* http_version_text(const RequestHead& head);
// The app is done (returned or raised): drop the Task and the drain waiter.
void app_finished(Exchange* ex);
// message["status"] as a long. False with a Python error set (KeyError when absent).
bool message_status(PyObject* message, long* status);
// message["body"] (absent or None: empty) and message["more_body"]. The data stays valid while `message` lives and
// until release_body(view) when *view_used; bytes and bytearray are viewed directly, other buffers through
// PyObject_GetBuffer. False with a Python error set.
bool message_body(PyObject* message, std::string_view* data, Py_buffer* view, bool* view_used, bool* more);
// As uvicorn: an ASGI callable must return None; anything else is logged.
void log_non_none_result(Exchange* ex, PyObject* result);

// ---- the app's coroutine ended (called by the Runner) ----
void exchange_app_failed(Exchange* ex, PyObject* exc);
void exchange_app_returned(Exchange* ex, PyObject* result);

}  // namespace fa
