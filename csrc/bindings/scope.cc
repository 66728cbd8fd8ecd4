// Building the ASGI HTTP scope from a parsed RequestHead, with interned keys and cached values.
#include <llhttp.h>

#include <cstring>
#include <string_view>
#include <unordered_map>

#include "bindings/asgi.h"

namespace fa {

namespace {

struct Keys {
  PyObject *type, *asgi, *http_version, *server, *client, *scheme, *method, *root_path, *path, *raw_path,
      *query_string, *headers, *state;
  PyObject *http, *http_scheme, *v10, *v11, *asgi_dict;
  PyObject* methods[64];  // by llhttp_method_t
  std::unordered_map<std::string_view, PyObject*> header_names;
  PyObject* empty_bytes;
};
Keys k;

PyObject* intern(const char* s) { return PyUnicode_InternFromString(s); }

const char* const kCommonHeaders[] = {
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-type",
    "content-length", "cookie", "authorization", "cache-control", "origin", "referer", "upgrade",
    "upgrade-insecure-requests", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip",
    "x-request-id", "transfer-encoding", "expect", "pragma", "if-none-match", "if-modified-since", "range",
    "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "sec-ch-ua", "sec-ch-ua-mobile", "sec-ch-ua-platform",
    "dnt", "te", "keep-alive", "forwarded", "sec-websocket-key", "sec-websocket-version", "priority"};

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

bool scope_init() {
  k.type = intern("type");
  k.asgi = intern("asgi");
  k.http_version = intern("http_version");
  k.server = intern("server");
  k.client = intern("client");
  k.scheme = intern("scheme");
  k.method = intern("method");
  k.root_path = intern("root_path");
  k.path = intern("path");
  k.raw_path = intern("raw_path");
  k.query_string = intern("query_string");
  k.headers = intern("headers");
  k.state = intern("state");
  k.http = intern("http");
  k.http_scheme = intern("http");
  k.v10 = intern("1.0");
  k.v11 = intern("1.1");
  k.empty_bytes = PyBytes_FromStringAndSize("", 0);
  k.asgi_dict = Py_BuildValue("{s:s,s:s}", "version", "3.0", "spec_version", "2.3");
  for (PyObject*& slot : k.methods) slot = nullptr;
#define FA_METHOD(num, name, string) \
  if ((num) < 64) k.methods[num] = intern(#string);
  HTTP_METHOD_MAP(FA_METHOD)
#undef FA_METHOD
  for (const char* name : kCommonHeaders) {
    PyObject* b = PyBytes_FromString(name);
    if (b == nullptr) return false;
    k.header_names.emplace(std::string_view(PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b)), b);
  }
  return k.asgi_dict != nullptr && k.empty_bytes != nullptr && !PyErr_Occurred();
}

PyObject* make_scope_template(PyObject* root_path, const char* asgi_version) {
  // Key order as uvicorn builds the scope; variable values are replaced in place (order is kept).
  PyObject* d = PyDict_New();
  if (d == nullptr) return nullptr;
  PyDict_SetItem(d, k.type, k.http);
  if (std::strcmp(asgi_version, "3.0") == 0) {
    PyDict_SetItem(d, k.asgi, k.asgi_dict);
  } else {
    PyObject* a = Py_BuildValue("{s:s,s:s}", "version", asgi_version, "spec_version", "2.3");
    if (a == nullptr) {
      Py_DECREF(d);
      return nullptr;
    }
    PyDict_SetItem(d, k.asgi, a);
    Py_DECREF(a);
  }
  PyDict_SetItem(d, k.http_version, k.v11);
  PyDict_SetItem(d, k.server, Py_None);
  PyDict_SetItem(d, k.client, Py_None);
  PyDict_SetItem(d, k.scheme, k.http_scheme);
  PyDict_SetItem(d, k.method, Py_None);
  PyDict_SetItem(d, k.root_path, root_path);
  PyDict_SetItem(d, k.path, Py_None);
  PyDict_SetItem(d, k.raw_path, Py_None);
  PyDict_SetItem(d, k.query_string, Py_None);
  PyDict_SetItem(d, k.headers, Py_None);
  if (PyErr_Occurred()) {
    Py_DECREF(d);
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

static int set_steal(PyObject* d, PyObject* key, PyObject* value) {
  if (value == nullptr) return -1;
  const int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  return rc;
}

PyObject* build_scope(PyAppHandler& h, Connection& c, const RequestHead& head, bool* forwarded) {
  PyObject* scope = PyDict_Copy(h.scope_template_);
  if (scope == nullptr) return nullptr;
  auto* cache = static_cast<ConnCache*>(c.app_data);
  if (cache == nullptr) {
    cache = new ConnCache{nullptr, nullptr};
    c.app_data = cache;
    if (c.is_tcp()) {
      cache->client = addr_tuple(c.peer_host(), c.peer_port());
      cache->server = addr_tuple(c.local_host(), c.local_port());
      if (cache->client == nullptr || cache->server == nullptr) goto fail;
    }
  }
  if (cache->client != nullptr) {
    PyDict_SetItem(scope, k.client, cache->client);
    PyDict_SetItem(scope, k.server, cache->server);
  }
  if (head.http_minor == 0) PyDict_SetItem(scope, k.http_version, k.v10);
  {
    PyObject* method = head.method >= 0 && head.method < 64 ? k.methods[head.method] : nullptr;
    if (method == nullptr) {
      PyErr_SetString(PyExc_ValueError, "unknown method");
      goto fail;
    }
    PyDict_SetItem(scope, k.method, method);
  }
  {
    const std::string_view raw = head.path_view();
    thread_local std::string decoded;
    const bool changed = percent_decode(raw, &decoded);
    const std::string_view text = changed ? std::string_view(decoded) : raw;
    PyObject* path = PyUnicode_DecodeUTF8(text.data(), static_cast<Py_ssize_t>(text.size()), "replace");
    if (path == nullptr) goto fail;
    PyObject* raw_path = PyBytes_FromStringAndSize(raw.data(), static_cast<Py_ssize_t>(raw.size()));
    if (raw_path == nullptr) {
      Py_DECREF(path);
      goto fail;
    }
    if (PyUnicode_GET_LENGTH(h.root_path_) > 0) {
      PyObject* full = PyUnicode_Concat(h.root_path_, path);
      Py_DECREF(path);
      path = full;
      PyObject* full_raw = PyBytes_FromStringAndSize(nullptr, PyBytes_GET_SIZE(h.root_path_bytes_) + PyBytes_GET_SIZE(raw_path));
      if (full_raw != nullptr) {
        std::memcpy(PyBytes_AS_STRING(full_raw), PyBytes_AS_STRING(h.root_path_bytes_), PyBytes_GET_SIZE(h.root_path_bytes_));
        std::memcpy(PyBytes_AS_STRING(full_raw) + PyBytes_GET_SIZE(h.root_path_bytes_), PyBytes_AS_STRING(raw_path),
                    PyBytes_GET_SIZE(raw_path));
      }
      Py_DECREF(raw_path);
      raw_path = full_raw;
      if (path == nullptr || raw_path == nullptr) {
        Py_XDECREF(path);
        Py_XDECREF(raw_path);
        goto fail;
      }
    }
    set_steal(scope, k.path, path);
    set_steal(scope, k.raw_path, raw_path);
  }
  {
    const std::string_view q = head.query_view();
    if (q.empty()) PyDict_SetItem(scope, k.query_string, k.empty_bytes);
    else if (set_steal(scope, k.query_string, PyBytes_FromStringAndSize(q.data(), static_cast<Py_ssize_t>(q.size()))) < 0)
      goto fail;
  }
  {
    const Py_ssize_t n = static_cast<Py_ssize_t>(head.headers.size());
    PyObject* list = PyList_New(n);
    if (list == nullptr) goto fail;
    for (Py_ssize_t i = 0; i < n; ++i) {
      const auto& hdr = head.headers[static_cast<std::size_t>(i)];
      const std::string_view name = head.str(hdr.first), value = head.str(hdr.second);
      PyObject* nb;
      if (name.size() >= 15 && name.compare(0, 12, "x-forwarded-") == 0 &&
          (name == "x-forwarded-for" || name == "x-forwarded-proto"))
        *forwarded = true;
      auto it = k.header_names.find(name);
      if (it != k.header_names.end()) {
        nb = Py_NewRef(it->second);
      } else {
        nb = PyBytes_FromStringAndSize(name.data(), static_cast<Py_ssize_t>(name.size()));
      }
      PyObject* vb = PyBytes_FromStringAndSize(value.data(), static_cast<Py_ssize_t>(value.size()));
      if (nb == nullptr || vb == nullptr) {
        Py_XDECREF(nb);
        Py_XDECREF(vb);
        Py_DECREF(list);
        goto fail;
      }
      PyObject* pair = PyTuple_New(2);
      if (pair == nullptr) {
        Py_DECREF(nb);
        Py_DECREF(vb);
        Py_DECREF(list);
        goto fail;
      }
      PyTuple_SET_ITEM(pair, 0, nb);
      PyTuple_SET_ITEM(pair, 1, vb);
      PyList_SET_ITEM(list, i, pair);
    }
    set_steal(scope, k.headers, list);
  }
  if (h.state_ != nullptr) {
    if (set_steal(scope, k.state, PyDict_Copy(h.state_)) < 0) goto fail;
  }
  if (PyErr_Occurred()) goto fail;
  return scope;
fail:
  Py_DECREF(scope);
  return nullptr;
}

}  // namespace fa

namespace fa {

namespace {

struct WsKeys {
  PyObject *websocket, *ws_scheme, *subprotocols, *spec_24, *version, *spec_version;
};
WsKeys wk{};

bool ws_keys_init() {
  if (wk.websocket != nullptr) return true;
  wk.websocket = PyUnicode_InternFromString("websocket");
  wk.ws_scheme = PyUnicode_InternFromString("ws");
  wk.subprotocols = PyUnicode_InternFromString("subprotocols");
  wk.spec_24 = PyUnicode_InternFromString("2.4");
  wk.version = PyUnicode_InternFromString("version");
  wk.spec_version = PyUnicode_InternFromString("spec_version");
  return !PyErr_Occurred();
}

// Each Sec-WebSocket-Protocol value split on commas, every token stripped (uvicorn keeps empty ones too).
PyObject* subprotocol_list(const RequestHead& head) {
  PyObject* list = PyList_New(0);
  if (list == nullptr) return nullptr;
  auto is_space = [](char ch) {
    return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n' || ch == '\v' || ch == '\f';
  };
  for (const auto& hdr : head.headers) {
    if (head.str(hdr.first) != "sec-websocket-protocol") continue;
    const std::string_view value = head.str(hdr.second);
    std::size_t start = 0;
    while (start <= value.size()) {
      std::size_t end = value.find(',', start);
      if (end == std::string_view::npos) end = value.size();
      std::string_view tok = value.substr(start, end - start);
      while (!tok.empty() && is_space(tok.front())) tok.remove_prefix(1);
      while (!tok.empty() && is_space(tok.back())) tok.remove_suffix(1);
      PyObject* s = PyUnicode_DecodeLatin1(tok.data(), static_cast<Py_ssize_t>(tok.size()), nullptr);
      if (s == nullptr || PyList_Append(list, s) < 0) {
        Py_XDECREF(s);
        Py_DECREF(list);
        return nullptr;
      }
      Py_DECREF(s);
      start = end + 1;
    }
  }
  return list;
}

}  // namespace

PyObject* build_ws_scope(PyAppHandler& h, Connection& c, const RequestHead& head, bool* forwarded) {
  if (!ws_keys_init()) return nullptr;
  PyObject* http = build_scope(h, c, head, forwarded);
  if (http == nullptr) return nullptr;
  PyObject* scope = PyDict_New();
  PyObject* asgi = PyDict_New();
  PyObject* subprotocols = subprotocol_list(head);
  bool ok = scope != nullptr && asgi != nullptr && subprotocols != nullptr;
  if (ok) {
    PyObject* http_asgi = PyDict_GetItem(http, k.asgi);
    PyObject* version =
        http_asgi != nullptr && PyDict_Check(http_asgi) ? PyDict_GetItem(http_asgi, wk.version) : nullptr;
    ok = PyDict_SetItem(asgi, wk.version, version != nullptr ? version : k.v11) == 0 &&
         PyDict_SetItem(asgi, wk.spec_version, wk.spec_24) == 0;
  }
  // uvicorn's order: type, asgi, http_version, scheme, server, client, root_path, path, raw_path, query_string,
  // headers, subprotocols, state.
  auto copy = [&](PyObject* key) {
    if (!ok) return;
    PyObject* v = PyDict_GetItem(http, key);
    ok = PyDict_SetItem(scope, key, v != nullptr ? v : Py_None) == 0;
  };
  if (ok) ok = PyDict_SetItem(scope, k.type, wk.websocket) == 0 && PyDict_SetItem(scope, k.asgi, asgi) == 0 &&
               PyDict_SetItem(scope, k.http_version, k.v11) == 0 && PyDict_SetItem(scope, k.scheme, wk.ws_scheme) == 0;
  copy(k.server);
  copy(k.client);
  copy(k.root_path);
  copy(k.path);
  copy(k.raw_path);
  copy(k.query_string);
  copy(k.headers);
  if (ok) ok = PyDict_SetItem(scope, wk.subprotocols, subprotocols) == 0;
  if (ok && PyDict_GetItem(http, k.state) != nullptr) copy(k.state);
  Py_DECREF(http);
  Py_XDECREF(asgi);
  Py_XDECREF(subprotocols);
  if (!ok) {
    Py_XDECREF(scope);
    return nullptr;
  }
  return scope;
}

}  // namespace fa
