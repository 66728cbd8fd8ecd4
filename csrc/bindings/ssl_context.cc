#include "bindings/ssl_context.h"

#include <dlfcn.h>

#include <string>

#include "core/memory_probe.h"

namespace fa {

namespace {

// Python's ssl.SSLContext is a subclass of _ssl._SSLContext, whose C object (PySSLContext in Modules/_ssl.c) has
// had the same head since Python 3.2: `PyObject_HEAD; SSL_CTX *ctx; ...`. The layout is private, so the pointer
// read here is checked against what the object reports through its public API before it is used.
struct PySSLContextHead {
  PyObject_HEAD
  SSL_CTX* ctx;
};

constexpr const char* kLayoutError =
    "cannot use this ssl.SSLContext: its OpenSSL context does not match what it reports (an unsupported Python "
    "build)";
// How much of what the pointer points at must be readable before OpenSSL is called on it: more than the fields
// SSL_CTX_get_options() and SSL_CTX_get_verify_mode() read in OpenSSL 1.1 and 3.x (SSL_CTX is some 1 KiB).
constexpr std::size_t kSslCtxProbeBytes = 1024;

bool bind_openssl(PyObject* ssl_module) {
  if (tls_api_bound()) return true;
  std::string error;
  PyObject* file = PyObject_GetAttrString(ssl_module, "__file__");
  bool ok;
  if (file != nullptr && PyUnicode_Check(file)) {
    const char* path = PyUnicode_AsUTF8(file);
    ok = path != nullptr && tls_api_bind(path, &error);
  } else {
    PyErr_Clear();  // _ssl built into the interpreter: its OpenSSL is in the program's global scope
    ok = tls_api_bind_handle(RTLD_DEFAULT, "the Python interpreter", &error);
  }
  Py_XDECREF(file);
  if (!ok && !PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, error.c_str());
  return ok;
}

// getattr(obj, name) is None (a missing attribute counts as None).
bool attr_is_none(PyObject* obj, const char* name) {
  PyObject* v = PyObject_GetAttrString(obj, name);
  if (v == nullptr) {
    PyErr_Clear();
    return true;
  }
  const bool none = v == Py_None;
  Py_DECREF(v);
  return none;
}

// int(getattr(obj, name)) as unsigned long long; false with an error set on failure.
bool attr_as_ull(PyObject* obj, const char* name, unsigned long long* out) {
  PyObject* v = PyObject_GetAttrString(obj, name);
  if (v == nullptr) return false;
  *out = PyLong_AsUnsignedLongLongMask(v);
  Py_DECREF(v);
  return !PyErr_Occurred();
}

}  // namespace

std::shared_ptr<TlsContext> tls_context_from_python(PyObject* context, bool http2) {
  PyObject* ssl_module = PyImport_ImportModule("_ssl");
  if (ssl_module == nullptr) return nullptr;
  PyObject* base = PyObject_GetAttrString(ssl_module, "_SSLContext");
  const int is_context = base != nullptr ? PyObject_IsInstance(context, base) : -1;
  Py_XDECREF(base);
  if (is_context != 1) {
    Py_DECREF(ssl_module);
    if (is_context == 0) PyErr_SetString(PyExc_TypeError, "ssl_context must be an ssl.SSLContext");
    return nullptr;
  }
  const bool bound = bind_openssl(ssl_module);
  Py_DECREF(ssl_module);
  if (!bound) return nullptr;
  for (const char* name : {"sni_callback", "keylog_filename", "_msg_callback"}) {
    if (!attr_is_none(context, name)) {
      PyErr_Format(PyExc_ValueError,
                   "ssl.SSLContext.%s is not supported by fasterapi-asgi's native TLS (set it to None)", name);
      return nullptr;
    }
  }
  // The layout check below calls OpenSSL on the pointer read from the object: first make sure that the object is
  // large enough to hold it and that it points at readable memory, so a changed layout is an error, not a crash.
  if (static_cast<std::size_t>(Py_TYPE(context)->tp_basicsize) < sizeof(PySSLContextHead)) {
    PyErr_SetString(PyExc_RuntimeError, kLayoutError);
    return nullptr;
  }
  SSL_CTX* ctx = reinterpret_cast<PySSLContextHead*>(context)->ctx;
  if (!memory_readable(ctx, kSslCtxProbeBytes)) {
    PyErr_SetString(PyExc_RuntimeError, kLayoutError);
    return nullptr;
  }
  unsigned long long options = 0, verify_mode = 0;
  if (!attr_as_ull(context, "options", &options) || !attr_as_ull(context, "verify_mode", &verify_mode)) return nullptr;
  // Python's verify modes as OpenSSL flags: CERT_NONE, CERT_OPTIONAL (peer), CERT_REQUIRED (peer + fail if none).
  const int expected_verify = verify_mode == 0 ? SSL_VERIFY_NONE
                              : verify_mode == 1 ? SSL_VERIFY_PEER
                                                 : SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  const int verify_mask = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
  if (ossl.SSL_CTX_get_options(ctx) != options ||
      (ossl.SSL_CTX_get_verify_mode(ctx) & verify_mask) != expected_verify) {
    PyErr_SetString(PyExc_RuntimeError, kLayoutError);
    return nullptr;
  }
  std::string error;
  TlsContext* tls = TlsContext::adopt(ctx, &error, http2);
  if (tls == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, error.c_str());
    return nullptr;
  }
  return std::shared_ptr<TlsContext>(tls);
}

}  // namespace fa
