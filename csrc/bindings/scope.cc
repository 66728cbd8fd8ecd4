#include "bindings/scope.h"

#include <llhttp.h>

#include <cstring>
#include <string>
#include <new>
#include <string_view>

#include "bindings/py_app_handler.h"
#include "bindings/py_names.h"
#include "core/strings.h"
#include "server/connection.h"

namespace fa {

namespace {

// Percent-decode into `out`. Returns false if nothing needed decoding.
bool percent_decode(std::string_view in, std::string* out) {
  if (in.find('%') == std::string_view::npos) return false;
  out->clear();
  out->reserve(in.size());
  auto hex = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  for (std::size_t i = 0; i < in.size(); ++i) {
    if (in[i] == '%' && i + 2 < in.size()) {
      const int hi = hex(in[i + 1]), lo = hex(in[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out->push_back(static_cast<char>(hi * 16 + lo));
        i += 2;
        continue;
      }
    }
    out->push_back(in[i]);
  }
  return true;
}

PyObject* addr_tuple(const std::string& host, int port) {
  PyObject* h = PyUnicode_FromStringAndSize(host.data(), static_cast<Py_ssize_t>(host.size()));
  if (h == nullptr) return nullptr;
  PyObject* p = PyLong_FromLong(port);
  if (p == nullptr) {
    Py_DECREF(h);
    return nullptr;
  }
  PyObject* t = PyTuple_Pack(2, h, p);
  Py_DECREF(h);
  Py_DECREF(p);
  return t;
}

// Per-connection cached (client, server) tuples, built on the first request of a connection.
struct ConnCache {
  PyObject* client;
  PyObject* server;
};

}  // namespace

namespace {

// scope["extensions"] of the template: {"http.response.pathsend": {}} (the server sends files itself).
bool add_extensions(PyObject* scope) {
  PyObject* extensions = PyDict_New();
  PyObject* pathsend = extensions != nullptr ? PyDict_New() : nullptr;
  const bool ok = pathsend != nullptr && PyDict_SetItem(extensions, names.http_response_pathsend, pathsend) == 0 &&
                  PyDict_SetItem(scope, names.extensions, extensions) == 0;
  Py_XDECREF(pathsend);
  Py_XDECREF(extensions);
  return ok;
}

}  // namespace

PyObject* make_scope_template(PyObject* root_path, const char* asgi_version) {
  const PyNames& n = names;
  PyObject* asgi = PyDict_New();
  if (asgi == nullptr) return nullptr;
  if (PyDict_SetItem(asgi, n.version, std::strcmp(asgi_version, "3.0") == 0 ? n.v30 : n.v20) < 0 ||
      PyDict_SetItem(asgi, n.spec_version, n.spec_23) < 0) {
    Py_DECREF(asgi);
    return nullptr;
  }
  // Key order as uvicorn builds the scope. The asgi dict here is only the model: every scope gets its own copy.
  PyObject* d = PyDict_New();
  const bool ok = d != nullptr && PyDict_SetItem(d, n.type, n.http) == 0 && PyDict_SetItem(d, n.asgi, asgi) == 0 &&
                  PyDict_SetItem(d, n.http_version, n.v11) == 0 && PyDict_SetItem(d, n.server, Py_None) == 0 &&
                  PyDict_SetItem(d, n.client, Py_None) == 0 && PyDict_SetItem(d, n.scheme, n.http) == 0 &&
                  PyDict_SetItem(d, n.method, Py_None) == 0 && PyDict_SetItem(d, n.root_path, root_path) == 0 &&
                  PyDict_SetItem(d, n.path, Py_None) == 0 && PyDict_SetItem(d, n.raw_path, Py_None) == 0 &&
                  PyDict_SetItem(d, n.query_string, Py_None) == 0 && PyDict_SetItem(d, n.headers, Py_None) == 0 &&
                  add_extensions(d);
  Py_DECREF(asgi);
  if (!ok) {
    Py_XDECREF(d);
    return nullptr;
  }
  return d;
}

void release_conn_cache(Connection& c) {
  auto* cache = static_cast<ConnCache*>(c.app_data);
  if (cache == nullptr) return;
  Py_XDECREF(cache->client);
  Py_XDECREF(cache->server);
  delete cache;
  c.app_data = nullptr;
}

namespace {

// PyDict_SetItem that takes (steals) `value`; -1 when value is nullptr (its error is set) or the set fails.
int set_steal(PyObject* d, PyObject* key, PyObject* value) {
  if (value == nullptr) return -1;
  const int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  return rc;
}

// The connection's (client, server) tuples, built on its first request; both or neither are cached.
ConnCache* conn_cache(Connection& c) {
  auto* cache = static_cast<ConnCache*>(c.app_data);
  if (cache != nullptr) return cache;
  PyObject* client = nullptr;
  PyObject* server = nullptr;
  if (c.is_tcp()) {
    client = addr_tuple(c.peer_host(), c.peer_port());
    server = client != nullptr ? addr_tuple(c.local_host(), c.local_port()) : nullptr;
    if (server == nullptr) {
      Py_XDECREF(client);
      return nullptr;
    }
  } else if (!c.local_host().empty()) {
    // A Unix socket: no client address; the server is (path, None), as uvicorn reports it.
    PyObject* path = PyUnicode_DecodeFSDefaultAndSize(c.local_host().data(),
                                                      static_cast<Py_ssize_t>(c.local_host().size()));
    server = path != nullptr ? PyTuple_Pack(2, path, Py_None) : nullptr;
    Py_XDECREF(path);
    if (server == nullptr) return nullptr;
  }
  cache = new (std::nothrow) ConnCache{client, server};
  if (cache == nullptr) {
    Py_XDECREF(client);
    Py_XDECREF(server);
    PyErr_NoMemory();
    return nullptr;
  }
  c.app_data = cache;
  return cache;
}

// scope["path"] (percent-decoded, UTF-8 with replacement) and scope["raw_path"], both behind root_path.
bool set_paths(PyAppHandler& h, PyObject* scope, const RequestHead& head) {
  const std::string_view raw = head.path_view();
  thread_local std::string decoded;
  const bool changed = percent_decode(raw, &decoded);
  const std::string_view text = changed ? std::string_view(decoded) : raw;
  PyObject* path = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
  if (path == nullptr) return false;
  PyObject* raw_path;
  if (PyUnicode_GET_LENGTH(h.root_path_) > 0) {
    Py_SETREF(path, PyUnicode_Concat(h.root_path_, path));
    const Py_ssize_t root_len = PyBytes_GET_SIZE(h.root_path_bytes_);
    raw_path = PyBytes_FromStringAndSize(nullptr, root_len + static_cast<Py_ssize_t>(raw.size()));
    if (raw_path != nullptr) {
      std::memcpy(PyBytes_AS_STRING(raw_path), PyBytes_AS_STRING(h.root_path_bytes_), static_cast<std::size_t>(root_len));
      std::memcpy(PyBytes_AS_STRING(raw_path) + root_len, raw.data(), raw.size());
    }
  } else {
    raw_path = PyBytes_FromStringAndSize(raw.data(), static_cast<Py_ssize_t>(raw.size()));
  }
  if (path == nullptr || raw_path == nullptr) {
    Py_XDECREF(path);
    Py_XDECREF(raw_path);
    return false;
  }
  return set_steal(scope, names.path, path) == 0 && set_steal(scope, names.raw_path, raw_path) == 0;
}

// scope["headers"]: a list of (name, value) bytes tuples; common names are shared cached objects.
PyObject* header_list(const RequestHead& head, bool* forwarded) {
  const Py_ssize_t n = static_cast<Py_ssize_t>(head.headers.size());
  PyObject* list = PyList_New(n);
  if (list == nullptr) return nullptr;
  for (Py_ssize_t i = 0; i < n; ++i) {
    const auto& hdr = head.headers[static_cast<std::size_t>(i)];
    const std::string_view name = head.str(hdr.first), value = head.str(hdr.second);
    if (name.size() >= 15 && name.compare(0, 12, "x-forwarded-") == 0 &&
        (name == "x-forwarded-for" || name == "x-forwarded-proto"))
      *forwarded = true;
    PyObject* nb = header_name_bytes(name);
    PyObject* vb = nb != nullptr ? PyBytes_FromStringAndSize(value.data(), static_cast<Py_ssize_t>(value.size())) : nullptr;
    PyObject* pair = vb != nullptr ? PyTuple_New(2) : nullptr;
    if (pair == nullptr) {
      Py_XDECREF(nb);
      Py_XDECREF(vb);
      Py_DECREF(list);
      return nullptr;
    }
    PyTuple_SET_ITEM(pair, 0, nb);
    PyTuple_SET_ITEM(pair, 1, vb);
    PyList_SET_ITEM(list, i, pair);
  }
  return list;
}

}  // namespace

namespace {

// The request's own copy of the server's extensions; HTTP/2 scopes add http.response.trailers (the stream can end
// with a trailer HEADERS frame; HTTP/1.1 responses here never carry trailers).
PyObject* scope_extensions(PyAppHandler& h, const RequestHead& head) {
  PyObject* d = PyDict_Copy(h.scope_extensions_);
  if (d == nullptr || head.http_major != 2) return d;
  PyObject* empty = PyDict_New();
  if (empty == nullptr || PyDict_SetItem(d, names.http_response_trailers, empty) < 0) {
    Py_XDECREF(empty);
    Py_DECREF(d);
    return nullptr;
  }
  Py_DECREF(empty);
  return d;
}

}  // namespace

PyObject* build_scope(PyAppHandler& h, HttpStream& s, const RequestHead& head, bool* forwarded) {
  const PyNames& n = names;
  Connection& c = s.connection();
  PyObject* method = head.method >= 0 && head.method < 64 ? n.methods[head.method] : nullptr;
  if (method == nullptr) {
    PyErr_SetString(PyExc_ValueError, "unknown method");
    return nullptr;
  }
  ConnCache* cache = conn_cache(c);
  if (cache == nullptr) return nullptr;
  PyObject* scope = PyDict_Copy(h.scope_template_);
  if (scope == nullptr) return nullptr;
  const std::string_view q = head.query_view();
  const bool ok =
      // Every request gets its own scope["asgi"]: an app may write to it (uvicorn builds a new one each time).
      set_steal(scope, n.asgi, PyDict_Copy(h.scope_asgi_)) == 0 &&
      set_steal(scope, n.extensions, scope_extensions(h, head)) == 0 &&
      (cache->client == nullptr || PyDict_SetItem(scope, n.client, cache->client) == 0) &&
      (cache->server == nullptr || PyDict_SetItem(scope, n.server, cache->server) == 0) &&
      (head.http_major == 2 ? PyDict_SetItem(scope, n.http_version, n.v2) == 0
                            : head.http_minor != 0 || PyDict_SetItem(scope, n.http_version, n.v10) == 0) &&
      (!c.is_tls() || PyDict_SetItem(scope, n.scheme, n.https) == 0) &&
      PyDict_SetItem(scope, n.method, method) == 0 && set_paths(h, scope, head) &&
      (q.empty() ? PyDict_SetItem(scope, n.query_string, n.empty_bytes) == 0
                 : set_steal(scope, n.query_string,
                             PyBytes_FromStringAndSize(q.data(), static_cast<Py_ssize_t>(q.size()))) == 0) &&
      set_steal(scope, n.headers, header_list(head, forwarded)) == 0 &&
      (h.state_ == nullptr || set_steal(scope, n.state, PyDict_Copy(h.state_)) == 0);
  if (!ok) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "cannot build the request scope");
    Py_DECREF(scope);
    return nullptr;
  }
  return scope;
}

namespace {

// Each Sec-WebSocket-Protocol value split on commas, every item trimmed (uvicorn keeps empty ones too).
PyObject* subprotocol_list(const RequestHead& head) {
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  for (const auto& hdr : head.headers) {
    if (head.str(hdr.first) != "sec-websocket-protocol") continue;
    const bool failed = for_each_list_item(head.str(hdr.second), [list](std::string_view item) {
      PyObject* s = PyUnicode_DecodeLatin1(item.data(), static_cast<Py_ssize_t>(item.size()), nullptr);
      const bool err = s == nullptr || PyList_Append(list, s) < 0;
      Py_XDECREF(s);
      return err;
    });
    if (failed) {
      Py_DECREF(list);
      return nullptr;
    }
  }
  return list;
}

}  // namespace

PyObject* build_ws_scope(PyAppHandler& h, HttpStream& s, const RequestHead& head, bool* forwarded) {
  const PyNames& n = names;
  const Connection& c = s.connection();
  PyObject* http = build_scope(h, s, head, forwarded);
  if (http == nullptr) return nullptr;
  PyObject* scope = PyDict_New();
  PyObject* asgi = PyDict_New();
  PyObject* subprotocols = subprotocol_list(head);
  bool ok = scope != nullptr && asgi != nullptr && subprotocols != nullptr;
  if (ok) {
    PyObject* http_asgi = PyDict_GetItem(http, n.asgi);
    PyObject* version = http_asgi != nullptr && PyDict_Check(http_asgi) ? PyDict_GetItem(http_asgi, n.version) : nullptr;
    ok = PyDict_SetItem(asgi, n.version, version != nullptr ? version : n.v30) == 0 &&
         PyDict_SetItem(asgi, n.spec_version, n.spec_24) == 0;
  }
  // uvicorn's order: type, asgi, http_version, scheme, server, client, root_path, path, raw_path, query_string,
  // headers, subprotocols, state.
  auto copy = [&](PyObject* key) {
    if (!ok) return;
    PyObject* v = PyDict_GetItem(http, key);
    ok = PyDict_SetItem(scope, key, v != nullptr ? v : Py_None) == 0;
  };
  if (ok)
    ok = PyDict_SetItem(scope, n.type, n.websocket) == 0 && PyDict_SetItem(scope, n.asgi, asgi) == 0 &&
         PyDict_SetItem(scope, n.http_version, n.v11) == 0 && PyDict_SetItem(scope, n.scheme, c.is_tls() ? n.wss : n.ws) == 0;
  copy(n.server);
  copy(n.client);
  copy(n.root_path);
  copy(n.path);
  copy(n.raw_path);
  copy(n.query_string);
  copy(n.headers);
  if (ok) ok = PyDict_SetItem(scope, n.subprotocols, subprotocols) == 0;
  if (ok && PyDict_GetItem(http, n.state) != nullptr) copy(n.state);
  // The websocket.http.response extension (denial responses before accept), as uvicorn advertises it.
  if (ok) {
    PyObject* ext = PyDict_New();
    PyObject* denial = PyDict_New();
    ok = ext != nullptr && denial != nullptr && PyDict_SetItem(ext, n.ws_http_response_str, denial) == 0 &&
         PyDict_SetItem(scope, n.extensions, ext) == 0;
    Py_XDECREF(ext);
    Py_XDECREF(denial);
  }
  Py_DECREF(http);
  Py_XDECREF(asgi);
  Py_XDECREF(subprotocols);
  if (!ok) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "cannot build the websocket scope");
    Py_XDECREF(scope);
    return nullptr;
  }
  return scope;
}

}  // namespace fa
