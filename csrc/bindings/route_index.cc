#include "bindings/route_index.h"

#include <memory>
#include <new>
#include <string_view>
#include <vector>

#include "bindings/py_names.h"
#include "http/prefix_index.h"
#include "server/stage_clock.h"

// Lifetime and ownership:
// - An IndexedRouterApp owns strong references to its router, the router's original `app` function, Starlette's
//   `get_route_path`, the Python `keys_for` reader (and `verify`, set only by the test plugin), the routes list it
//   was built from, a snapshot tuple of that list's items (so no route's address can be reused while the snapshot
//   is compared by identity) and one tuple of routes per candidate set. It is GC-tracked: the router holds it (in
//   `middleware_stack`) and it holds the router.
// - A RouterView holds its router, its candidate tuple and the routes list; the app function's coroutine frame holds
//   the view for as long as the request is routed and handled.
// Everything here runs with the GIL held (it is called by Python code).

namespace fa {

namespace {

PyObject* g_routes_name = nullptr;  // "routes"
unsigned long long g_lookups = 0;   // over every IndexedRouterApp (GIL held)
unsigned long long g_plain = 0;
PyObject* g_router_name = nullptr;  // "router"

// ---------------------------------------------------------------------------------------------------------------
// RouterView: `self` for the router's app function. `routes` answers the candidates the first time it is read (the
// app's matching loop) and the whole table after that (a redirect_slashes probe or anything else); every other
// attribute is the router's own.
// ---------------------------------------------------------------------------------------------------------------
struct RouterView {
  PyObject_HEAD
  PyObject* router;
  PyObject* candidates;  // tuple
  PyObject* routes;      // the router's routes list
  bool read;
};
PyTypeObject RouterViewType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* view_getattro(PyObject* self, PyObject* name) {
  RouterView* v = reinterpret_cast<RouterView*>(self);
  if (name == g_routes_name || (PyUnicode_Check(name) && PyUnicode_Compare(name, g_routes_name) == 0)) {
    if (!v->read) {
      v->read = true;
      return Py_NewRef(v->candidates);
    }
    return Py_NewRef(v->routes);
  }
  return PyObject_GetAttr(v->router, name);
}
int view_setattro(PyObject* self, PyObject* name, PyObject* value) {
  return PyObject_SetAttr(reinterpret_cast<RouterView*>(self)->router, name, value);
}
void view_dealloc(PyObject* self) {
  RouterView* v = reinterpret_cast<RouterView*>(self);
  PyObject_GC_UnTrack(self);
  Py_CLEAR(v->router);
  Py_CLEAR(v->candidates);
  Py_CLEAR(v->routes);
  PyObject_GC_Del(self);
}
int view_traverse(PyObject* self, visitproc visit, void* arg) {
  RouterView* v = reinterpret_cast<RouterView*>(self);
  Py_VISIT(v->router);
  Py_VISIT(v->candidates);
  Py_VISIT(v->routes);
  return 0;
}
int view_clear(PyObject* self) {
  RouterView* v = reinterpret_cast<RouterView*>(self);
  Py_CLEAR(v->router);
  Py_CLEAR(v->candidates);
  Py_CLEAR(v->routes);
  return 0;
}
PyObject* view_new(PyObject* router, PyObject* candidates, PyObject* routes) {
  RouterView* v = PyObject_GC_New(RouterView, &RouterViewType);
  if (v == nullptr) return nullptr;
  v->router = Py_NewRef(router);
  v->candidates = Py_NewRef(candidates);
  v->routes = Py_NewRef(routes);
  v->read = false;
  PyObject_GC_Track(reinterpret_cast<PyObject*>(v));
  return reinterpret_cast<PyObject*>(v);
}

// ---------------------------------------------------------------------------------------------------------------
// IndexedRouterApp
// ---------------------------------------------------------------------------------------------------------------
struct Built {
  PrefixIndex index;
  std::vector<PyObject*> set_tuples;  // owned: one tuple of routes per index.sets() entry
  ~Built() {
    for (PyObject* t : set_tuples) Py_XDECREF(t);
  }
};

struct IndexedApp {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* router;
  PyObject* func;            // the router class's own `app` function (unbound)
  PyObject* get_route_path;  // starlette.routing.get_route_path
  PyObject* keys_for;        // keys_for(routes) -> [(key: str, exact: bool), ...] | None (route_index.py)
  PyObject* ctx_scope_key;   // FastAPI's scope key and effective-route-context key, or nullptr
  PyObject* ctx_key;
  PyObject* verify;          // verify(scope, snapshot, candidates) before each indexed request, or nullptr (tests)
  PyObject* routes;          // the list the index was built from (nullptr: not built yet)
  PyObject* snapshot;        // tuple: its items then
  Built* built;              // nullptr: this table cannot be indexed; requests take the plain scan
  unsigned long long lookups, plain, rebuilds;
  Py_ssize_t indexed;        // routes with a key other than "" (always a candidate)
};
PyTypeObject IndexedAppType = {PyVarObject_HEAD_INIT(nullptr, 0)};

void clear_built(IndexedApp* a) {
  delete a->built;
  a->built = nullptr;
  Py_CLEAR(a->routes);
  Py_CLEAR(a->snapshot);
  a->indexed = 0;
}

// Reads the table (through keys_for) and builds the index for `routes`. False with a Python error set; a table that
// cannot be indexed (keys_for answered None) is not an error: `built` stays nullptr and requests take the plain scan.
bool rebuild(IndexedApp* a, PyObject* routes) {
  clear_built(a);
  ++a->rebuilds;
  a->routes = Py_NewRef(routes);
  a->snapshot = PyList_AsTuple(routes);
  if (a->snapshot == nullptr) return false;
  PyObject* keys = PyObject_CallOneArg(a->keys_for, a->snapshot);
  if (keys == nullptr) return false;
  if (keys == Py_None) {
    Py_DECREF(keys);
    return true;
  }
  const Py_ssize_t n = PyTuple_GET_SIZE(a->snapshot);
  if (!PyList_Check(keys) || PyList_GET_SIZE(keys) != n) {
    Py_DECREF(keys);
    PyErr_SetString(PyExc_RuntimeError, "keys_for must return one (key, exact) pair per route");
    return false;
  }
  std::unique_ptr<Built> built(new (std::nothrow) Built());
  if (!built) {
    Py_DECREF(keys);
    PyErr_NoMemory();
    return false;
  }
  Py_ssize_t indexed = 0;
  try {
    for (Py_ssize_t i = 0; i < n; ++i) {
      PyObject* item = PyList_GET_ITEM(keys, i);
      const char* key = nullptr;
      Py_ssize_t len = 0;
      int exact = 0;
      if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyUnicode_Check(PyTuple_GET_ITEM(item, 0)) ||
          (key = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(item, 0), &len)) == nullptr ||
          (exact = PyObject_IsTrue(PyTuple_GET_ITEM(item, 1))) < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "keys_for: each key is a (str, bool) pair");
        Py_DECREF(keys);
        return false;
      }
      if (len > 0 || exact) ++indexed;
      built->index.add(std::string_view(key, static_cast<std::size_t>(len)),
                       exact ? PrefixIndex::Kind::kExact : PrefixIndex::Kind::kPrefix);
    }
    built->index.build();
    built->set_tuples.reserve(built->index.sets().size());
  } catch (const std::bad_alloc&) {
    Py_DECREF(keys);
    PyErr_NoMemory();
    return false;
  }
  Py_DECREF(keys);
  for (const auto& set : built->index.sets()) {
    PyObject* t = PyTuple_New(static_cast<Py_ssize_t>(set.size()));
    if (t == nullptr) return false;
    for (std::size_t j = 0; j < set.size(); ++j) {
      PyTuple_SET_ITEM(t, static_cast<Py_ssize_t>(j), Py_NewRef(PyTuple_GET_ITEM(a->snapshot, set[j])));
    }
    built->set_tuples.push_back(t);
  }
  a->built = built.release();
  a->indexed = indexed;
  return true;
}

// The routes list as it is now, when it still is the table the index was built from: same list, same routes.
bool is_current(const IndexedApp* a, PyObject* routes) {
  if (routes != a->routes) return false;
  const Py_ssize_t n = PyList_GET_SIZE(routes);
  if (n != PyTuple_GET_SIZE(a->snapshot)) return false;
  for (Py_ssize_t i = 0; i < n; ++i) {
    if (PyList_GET_ITEM(routes, i) != PyTuple_GET_ITEM(a->snapshot, i)) return false;
  }
  return true;
}

PyObject* call_func(IndexedApp* a, PyObject* self, PyObject* const* args, std::size_t nargsf, PyObject* kwnames) {
  const Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
  const Py_ssize_t total = nargs + (kwnames != nullptr ? PyTuple_GET_SIZE(kwnames) : 0);
  PyObject* small[8];
  std::unique_ptr<PyObject*[]> big;
  PyObject** stack = small;
  if (total + 1 > 8) {
    big.reset(new (std::nothrow) PyObject*[static_cast<std::size_t>(total + 1)]);
    if (!big) return PyErr_NoMemory();
    stack = big.get();
  }
  stack[0] = self;
  for (Py_ssize_t i = 0; i < total; ++i) stack[i + 1] = args[i];
  return PyObject_Vectorcall(a->func, stack, static_cast<std::size_t>(nargs + 1), kwnames);
}

// The candidate routes for a route path, in table order (new reference), or nullptr with an error set. Usually a
// precomputed tuple; both a longer key and an exact key K fit a path "K\n" (rare): the two sets merged.
PyObject* candidates_of_path(IndexedApp* a, std::string_view path) {
  const PrefixIndex::Result r = a->built->index.lookup(path);
  PyObject* first = a->built->set_tuples[r.first];
  if (r.second == PrefixIndex::kNoSet) return Py_NewRef(first);
  const auto& s1 = a->built->index.sets()[r.first];
  const auto& s2 = a->built->index.sets()[r.second];
  PyObject* merged = PyTuple_New(static_cast<Py_ssize_t>(s1.size() + s2.size()));
  if (merged == nullptr) return nullptr;
  std::size_t i = 0, j = 0;
  Py_ssize_t k = 0;
  while (i < s1.size() || j < s2.size()) {
    const std::uint32_t next = j == s2.size() || (i < s1.size() && s1[i] < s2[j]) ? s1[i++] : s2[j++];
    PyTuple_SET_ITEM(merged, k++, Py_NewRef(PyTuple_GET_ITEM(a->snapshot, next)));
  }
  return merged;
}

// The request's candidates (new reference), nullptr without an error set when this request takes the plain scan,
// or nullptr with an error set.
PyObject* candidates_for(IndexedApp* a, PyObject* scope, PyObject* routes) {
  PyObject* type = PyDict_GetItemWithError(scope, names.type);
  if (type == nullptr) return nullptr;
  if (type != names.http && type != names.websocket) {
    if (!PyUnicode_Check(type) ||
        (PyUnicode_Compare(type, names.http) != 0 && PyUnicode_Compare(type, names.websocket) != 0)) {
      return nullptr;  // lifespan (or anything the router itself should judge)
    }
  }
  if (a->ctx_scope_key != nullptr) {
    // FastAPI's APIRoute matches through an "effective route context" stored in the scope when one is set: then its
    // path is not its own path_regex, so the index must not judge it.
    PyObject* fastapi = PyDict_GetItemWithError(scope, a->ctx_scope_key);
    if (fastapi == nullptr && PyErr_Occurred()) return nullptr;
    if (fastapi != nullptr) {
      if (!PyDict_Check(fastapi)) return nullptr;
      PyObject* ctx = PyDict_GetItemWithError(fastapi, a->ctx_key);
      if (ctx == nullptr && PyErr_Occurred()) return nullptr;
      if (ctx != nullptr && ctx != Py_None) return nullptr;
    }
  }
  if (!is_current(a, routes)) {
    if (!rebuild(a, routes)) return nullptr;
  }
  if (a->built == nullptr) return nullptr;
  PyObject* route_path = PyObject_CallOneArg(a->get_route_path, scope);
  if (route_path == nullptr) return nullptr;
  Py_ssize_t len = 0;
  const char* utf8 = PyUnicode_Check(route_path) ? PyUnicode_AsUTF8AndSize(route_path, &len) : nullptr;
  if (utf8 == nullptr) {
    Py_DECREF(route_path);
    return nullptr;  // not a str, or lone surrogates: the plain scan decides
  }
  PyObject* out = candidates_of_path(a, std::string_view(utf8, static_cast<std::size_t>(len)));
  Py_DECREF(route_path);
  return out;
}

// The view for this request (new reference), nullptr without an error set for the plain scan, or nullptr with an
// error set. Charged to kStageRouteIndex.
PyObject* indexed_view(IndexedApp* a, PyObject* const* args, std::size_t nargsf, PyObject* kwnames) {
  StageScope index_stage(kStageRouteIndex);
  if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != nullptr || !PyDict_CheckExact(args[0])) return nullptr;
  PyObject* routes = PyObject_GetAttr(a->router, g_routes_name);
  PyObject* candidates = nullptr;
  if (routes != nullptr && PyList_CheckExact(routes)) candidates = candidates_for(a, args[0], routes);
  if (candidates == nullptr) {
    // Whatever went wrong above, the plain scan gives the router's own answer (or its own error) for it.
    PyErr_Clear();
    Py_XDECREF(routes);
    return nullptr;
  }
  ++a->lookups;
  ++g_lookups;
  if (a->verify != nullptr) {
    PyObject* ok = PyObject_CallFunctionObjArgs(a->verify, args[0], a->snapshot, candidates, nullptr);
    if (ok == nullptr) {
      Py_DECREF(candidates);
      Py_DECREF(routes);
      return nullptr;  // the verifier's error stands
    }
    Py_DECREF(ok);
  }
  PyObject* view = view_new(a->router, candidates, routes);
  Py_DECREF(candidates);
  Py_DECREF(routes);
  if (view == nullptr) return nullptr;
  // Router.app sets scope["router"] = self when missing; self is the view here, so the router is set first.
  PyObject* scope = args[0];
  const int has = PyDict_Contains(scope, g_router_name);
  if (has < 0 || (has == 0 && PyDict_SetItem(scope, g_router_name, a->router) < 0)) {
    Py_DECREF(view);
    return nullptr;
  }
  return view;
}

PyObject* indexed_vectorcall(PyObject* self, PyObject* const* args, std::size_t nargsf, PyObject* kwnames) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  PyObject* view = indexed_view(a, args, nargsf, kwnames);
  if (view == nullptr) {
    if (PyErr_Occurred()) return nullptr;
    ++a->plain;
    ++g_plain;
    return call_func(a, a->router, args, nargsf, kwnames);
  }
  PyObject* out = call_func(a, view, args, nargsf, kwnames);
  Py_DECREF(view);
  return out;
}

int indexed_init(PyObject* self, PyObject* args, PyObject* kwargs) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  static const char* kw[] = {"router", "func",    "get_route_path", "keys_for", "ctx_scope_key",
                             "ctx_key", "verify", nullptr};
  PyObject *router, *func, *grp, *keys_for, *ctx_scope_key = Py_None, *ctx_key = Py_None, *verify = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|OOO", const_cast<char**>(kw), &router, &func, &grp,
                                   &keys_for, &ctx_scope_key, &ctx_key, &verify)) {
    return -1;
  }
  Py_XSETREF(a->router, Py_NewRef(router));
  Py_XSETREF(a->func, Py_NewRef(func));
  Py_XSETREF(a->get_route_path, Py_NewRef(grp));
  Py_XSETREF(a->keys_for, Py_NewRef(keys_for));
  Py_CLEAR(a->ctx_scope_key);
  Py_CLEAR(a->ctx_key);
  Py_CLEAR(a->verify);
  if (verify != Py_None) a->verify = Py_NewRef(verify);
  if (ctx_scope_key != Py_None && ctx_key != Py_None) {
    a->ctx_scope_key = Py_NewRef(ctx_scope_key);
    a->ctx_key = Py_NewRef(ctx_key);
  }
  clear_built(a);
  a->vectorcall = indexed_vectorcall;
  return 0;
}

PyObject* indexed_new(PyTypeObject* type, PyObject*, PyObject*) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(type->tp_alloc(type, 0));  // zeroed
  if (a != nullptr) a->vectorcall = indexed_vectorcall;
  return reinterpret_cast<PyObject*>(a);
}
int indexed_traverse(PyObject* self, visitproc visit, void* arg) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  Py_VISIT(a->router);
  Py_VISIT(a->func);
  Py_VISIT(a->get_route_path);
  Py_VISIT(a->keys_for);
  Py_VISIT(a->verify);
  Py_VISIT(a->routes);
  Py_VISIT(a->snapshot);
  if (a->built != nullptr) {
    for (PyObject* t : a->built->set_tuples) Py_VISIT(t);
  }
  return 0;
}
int indexed_clear(PyObject* self) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  clear_built(a);
  Py_CLEAR(a->router);
  Py_CLEAR(a->func);
  Py_CLEAR(a->get_route_path);
  Py_CLEAR(a->keys_for);
  Py_CLEAR(a->ctx_scope_key);
  Py_CLEAR(a->ctx_key);
  Py_CLEAR(a->verify);
  return 0;
}
void indexed_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  indexed_clear(self);
  Py_TYPE(self)->tp_free(self);
}

// Builds the index now (it is otherwise built at the first request) and says how it went:
// {"routes": n, "indexed": routes the index can skip, "lookups", "plain", "rebuilds"}.
PyObject* indexed_prepare(PyObject* self, PyObject*) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  PyObject* routes = PyObject_GetAttr(a->router, g_routes_name);
  if (routes == nullptr) return nullptr;
  if (PyList_CheckExact(routes) && !is_current(a, routes) && !rebuild(a, routes)) {
    Py_DECREF(routes);
    return nullptr;
  }
  Py_DECREF(routes);
  Py_RETURN_NONE;
}
PyObject* indexed_stats(PyObject* self, PyObject*) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  return Py_BuildValue("{s:n,s:n,s:O,s:K,s:K,s:K}", "routes",
                       a->snapshot != nullptr ? PyTuple_GET_SIZE(a->snapshot) : Py_ssize_t{0}, "indexed", a->indexed,
                       "active", a->built != nullptr ? Py_True : Py_False, "lookups", a->lookups, "plain", a->plain,
                       "rebuilds", a->rebuilds);
}
// The candidates the index gives for a route path (tests and diagnostics), or None when it would scan.
PyObject* indexed_candidates(PyObject* self, PyObject* path) {
  IndexedApp* a = reinterpret_cast<IndexedApp*>(self);
  if (a->built == nullptr) Py_RETURN_NONE;
  Py_ssize_t len = 0;
  const char* utf8 = PyUnicode_AsUTF8AndSize(path, &len);
  if (utf8 == nullptr) return nullptr;
  return candidates_of_path(a, std::string_view(utf8, static_cast<std::size_t>(len)));
}
PyObject* indexed_get_router(PyObject* self, void*) {
  PyObject* r = reinterpret_cast<IndexedApp*>(self)->router;
  return Py_NewRef(r != nullptr ? r : Py_None);
}
PyObject* indexed_get_func(PyObject* self, void*) {
  PyObject* f = reinterpret_cast<IndexedApp*>(self)->func;
  return Py_NewRef(f != nullptr ? f : Py_None);
}

PyMethodDef indexed_methods[] = {
    {"prepare", indexed_prepare, METH_NOARGS, "Build the index now (else at the first request)."},
    {"stats", indexed_stats, METH_NOARGS, "Counters: routes, indexed, active, lookups, plain, rebuilds."},
    {"candidates", indexed_candidates, METH_O, "The candidate routes for a route path (None: plain scan)."},
    {nullptr, nullptr, 0, nullptr}};
PyGetSetDef indexed_getset[] = {{"router", indexed_get_router, nullptr, nullptr, nullptr},
                                {"func", indexed_get_func, nullptr, nullptr, nullptr},
                                {nullptr, nullptr, nullptr, nullptr, nullptr}};

}  // namespace

bool route_index_types_init() {
  g_routes_name = PyUnicode_InternFromString("routes");
  g_router_name = g_routes_name != nullptr ? PyUnicode_InternFromString("router") : nullptr;
  if (g_router_name == nullptr) return false;

  RouterViewType.tp_name = "fasterapi_asgi._core.RouterView";
  RouterViewType.tp_basicsize = sizeof(RouterView);
  RouterViewType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  RouterViewType.tp_dealloc = view_dealloc;
  RouterViewType.tp_traverse = view_traverse;
  RouterViewType.tp_clear = view_clear;
  RouterViewType.tp_getattro = view_getattro;
  RouterViewType.tp_setattro = view_setattro;
  if (PyType_Ready(&RouterViewType) != 0) return false;

  IndexedAppType.tp_name = "fasterapi_asgi._core.IndexedRouterApp";
  IndexedAppType.tp_doc =
      "IndexedRouterApp(router, func, get_route_path, keys_for, ctx_scope_key=None, ctx_key=None): calls "
      "func(view, scope, receive, send) where the view's routes are only the candidates for the path.";
  IndexedAppType.tp_basicsize = sizeof(IndexedApp);
  IndexedAppType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  IndexedAppType.tp_vectorcall_offset = offsetof(IndexedApp, vectorcall);
  IndexedAppType.tp_call = PyVectorcall_Call;
  IndexedAppType.tp_new = indexed_new;
  IndexedAppType.tp_init = indexed_init;
  IndexedAppType.tp_dealloc = indexed_dealloc;
  IndexedAppType.tp_traverse = indexed_traverse;
  IndexedAppType.tp_clear = indexed_clear;
  IndexedAppType.tp_methods = indexed_methods;
  IndexedAppType.tp_getset = indexed_getset;
  return PyType_Ready(&IndexedAppType) == 0;
}

PyObject* indexed_router_app_type() { return reinterpret_cast<PyObject*>(&IndexedAppType); }

void route_index_counters(unsigned long long* lookups, unsigned long long* plain) {
  *lookups = g_lookups;
  *plain = g_plain;
}

}  // namespace fa
