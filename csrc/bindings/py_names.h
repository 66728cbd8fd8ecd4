// Interned Python strings and cached constants used on the hot path: ASGI message and scope keys, message types,
// method names, common header names. Created once at module import (py_names_init); never freed (module lifetime).
// GIL: read-only after init, so any thread holding the GIL may use them.
#pragma once

#include <Python.h>

#include <string_view>
#include <unordered_map>

namespace fa {

struct PyNames {
  // Message keys and values.
  PyObject *type, *body, *more_body, *status, *headers, *text, *bytes, *code, *reason, *subprotocol;
  PyObject *http_request, *http_disconnect, *http_response_start, *http_response_body;
  PyObject* http_response_pathsend;  // the http.response.pathsend extension's message type
  // The http.response.trailers extension (HTTP/2 scopes): its message type and keys.
  PyObject *http_response_trailers, *trailers, *more_trailers;
  PyObject *ws_connect, *ws_receive, *ws_disconnect, *ws_accept, *ws_send, *ws_close;
  PyObject *ws_http_response_start, *ws_http_response_body;  // the websocket.http.response extension
  PyObject* ws_http_response_str;                             // "websocket.http.response" (its scope key)
  // Scope keys and values.
  PyObject *asgi, *http_version, *server, *client, *scheme, *method, *root_path, *path, *raw_path, *query_string,
      *state, *subprotocols, *version, *spec_version, *extensions;
  PyObject *http, *https, *websocket, *ws, *wss, *v10, *v11, *v2, *v30, *v20, *spec_23, *spec_24;
  PyObject* empty_bytes;
  PyObject* methods[64];  // interned method names by llhttp_method_t
  // ~40 common request header names as bytes objects, shared by every scope.
  std::unordered_map<std::string_view, PyObject*> header_names;
  // fasterapi_asgi._core.ClientDisconnected: raised by a WebSocket send() after the client left (an OSError).
  PyObject* client_disconnected;
};

extern PyNames names;

// Returns false with a Python error set.
bool py_names_init();

// The bytes object for a lowercase header name: a shared cached one when common, else a new one.
// New reference, or nullptr with an error set.
PyObject* header_name_bytes(std::string_view name);

}  // namespace fa
