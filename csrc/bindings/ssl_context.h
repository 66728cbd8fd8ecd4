// The core's TLS context from a Python ssl.SSLContext (bindings layer: the only place that sees both).
#pragma once

#include <Python.h>

#include <memory>

#include "core/tls_session.h"

namespace fa {

// Bind the OpenSSL table to the OpenSSL of Python's `_ssl` module, then take a reference to the SSL_CTX inside
// `context` (an ssl.SSLContext). The context keeps its Python-side configuration (certificate chain, key,
// verify mode, CA, ciphers, versions: exactly what uvicorn's create_ssl_context() or the app's
// ssl_context_factory set); the core replaces only the ALPN selection. Contexts with Python callbacks that OpenSSL
// would call on the core's connections (sni_callback, keylog_filename, _msg_callback) are refused: those callbacks
// expect Python's own SSL socket objects. Returns nullptr with a Python exception set on failure.
std::shared_ptr<TlsContext> tls_context_from_python(PyObject* context, bool http2);

}  // namespace fa
