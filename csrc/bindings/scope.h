// Building the ASGI connection scope (http and websocket) from a parsed RequestHead, with interned keys, cached
// values and a per-server template. GIL held.
#pragma once

#include <Python.h>

#include "http/request.h"

namespace fa {

class Connection;
class HttpStream;
class PyAppHandler;

// The constant part of every http scope of a server, in uvicorn's key order (variable values are filled in place,
// so the order is kept). New reference or nullptr with an error set.
PyObject* make_scope_template(PyObject* root_path, const char* asgi_version);
// The http scope for the request now parsed on `c`. *forwarded is set when the request has an x-forwarded-for or
// x-forwarded-proto header. New reference, or nullptr with an error set.
PyObject* build_scope(PyAppHandler& h, HttpStream& s, const RequestHead& head, bool* forwarded);
// The websocket scope (uvicorn's key order, asgi.spec_version 2.4, subprotocols). Same contract.
PyObject* build_ws_scope(PyAppHandler& h, HttpStream& s, const RequestHead& head, bool* forwarded);
// Drop the per-connection cache (client/server tuples) kept in c.app_data.
void release_conn_cache(Connection& c);

}  // namespace fa
