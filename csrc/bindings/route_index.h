// The native route index for Starlette (and FastAPI) routers: `IndexedRouterApp` takes the place of a router's own
// `app` in its middleware stack and, per request, hands the router's unchanged `app` function a `RouterView` whose
// `routes` are only the routes that can match the request's path (from http/prefix_index.h). Starlette still decides
// every match; fasterapi_asgi/route_index.py reads the route tables and says which routes the index may skip.
#pragma once

#include <Python.h>

namespace fa {

// Module setup: readies the types. False with a Python error set.
bool route_index_types_init();
// The `IndexedRouterApp` type object (borrowed), for the module to export.
PyObject* indexed_router_app_type();
// Requests routed through any index since start-up, and requests that took the plain scan (GIL held).
void route_index_counters(unsigned long long* lookups, unsigned long long* plain);

}  // namespace fa
