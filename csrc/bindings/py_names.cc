#include "bindings/py_names.h"

#include <llhttp.h>

namespace fa {

PyNames names;

namespace {

const char* const kCommonHeaders[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-type",
    "content-length", "cookie", "authorization", "cache-control", "origin", "referer", "upgrade",
    "upgrade-insecure-requests", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
    "x-request-id", "transfer-encoding", "expect", "pragma", "if-none-match", "if-modified-since", "range",
    "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "dnt", "te", "keep-alive", "forwarded", "sec-websocket-key", "sec-websocket-version", "priority"};

bool intern(PyObject** slot, const char* s) {
  *slot = PyUnicode_InternFromString(s);
  return *slot != nullptr;
}

}  // namespace

bool py_names_init() {
  PyNames& n = names;
  const bool ok =
      intern(&n.type, "type") && intern(&n.body, "body") && intern(&n.more_body, "more_body") &&
      intern(&n.status, "status") && intern(&n.headers, "headers") && intern(&n.text, "text") &&
      intern(&n.bytes, "bytes") && intern(&n.code, "code") && intern(&n.reason, "reason") &&
      intern(&n.subprotocol, "subprotocol") && intern(&n.http_request, "http.request") &&
      intern(&n.http_disconnect, "http.disconnect") && intern(&n.http_response_start, "http.response.start") &&
      intern(&n.http_response_body, "http.response.body") &&
      intern(&n.http_response_pathsend, "http.response.pathsend") &&
      intern(&n.http_response_trailers, "http.response.trailers") && intern(&n.trailers, "trailers") &&
      intern(&n.more_trailers, "more_trailers") && intern(&n.ws_connect, "websocket.connect") &&
      intern(&n.ws_receive, "websocket.receive") && intern(&n.ws_disconnect, "websocket.disconnect") &&
      intern(&n.ws_accept, "websocket.accept") && intern(&n.ws_send, "websocket.send") &&
      intern(&n.ws_close, "websocket.close") &&
      intern(&n.ws_http_response_start, "websocket.http.response.start") &&
      intern(&n.ws_http_response_body, "websocket.http.response.body") && intern(&n.extensions, "extensions") &&
      intern(&n.ws_http_response_str, "websocket.http.response") && intern(&n.asgi, "asgi") && intern(&n.http_version, "http_version") &&
      intern(&n.server, "server") && intern(&n.client, "client") && intern(&n.scheme, "scheme") &&
      intern(&n.method, "method") && intern(&n.root_path, "root_path") && intern(&n.path, "path") &&
      intern(&n.raw_path, "raw_path") && intern(&n.query_string, "query_string") && intern(&n.state, "state") &&
      intern(&n.subprotocols, "subprotocols") && intern(&n.version, "version") &&
      intern(&n.spec_version, "spec_version") && intern(&n.http, "http") && intern(&n.websocket, "websocket") &&
      intern(&n.ws, "ws") && intern(&n.https, "https") && intern(&n.wss, "wss") && intern(&n.v10, "1.0") && intern(&n.v11, "1.1") && intern(&n.v2, "2") && intern(&n.v30, "3.0") &&
      intern(&n.v20, "2.0") && intern(&n.spec_23, "2.3") && intern(&n.spec_24, "2.4");
  if (!ok) return false;
  n.empty_bytes = PyBytes_FromStringAndSize("", 0);
  if (n.empty_bytes == nullptr) return false;
  for (PyObject*& slot : n.methods) slot = nullptr;
#define FA_METHOD(num, name, string) \
  if ((num) < 64 && !intern(&n.methods[num], #string)) return false;
  HTTP_METHOD_MAP(FA_METHOD)
#undef FA_METHOD
  for (const char* name : kCommonHeaders) {
    PyObject* b = PyBytes_FromString(name);
    if (b == nullptr) return false;
    n.header_names.emplace(std::string_view(PyBytes_AS_STRING(b), static_cast<std::size_t>(PyBytes_GET_SIZE(b))), b);
  }
  n.client_disconnected = PyErr_NewExceptionWithDoc(
      "fasterapi_asgi._core.ClientDisconnected", "send() on a WebSocket whose client is gone.", PyExc_OSError, nullptr);
  return n.client_disconnected != nullptr;
}

PyObject* header_name_bytes(std::string_view name) {
  const auto it = names.header_names.find(name);
  if (it != names.header_names.end()) return Py_NewRef(it->second);
  return PyBytes_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
}

}  // namespace fa
