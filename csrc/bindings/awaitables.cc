#include "bindings/awaitables.h"

namespace fa {

namespace {

struct Ready {
  PyObject_HEAD
  PyObject* value;
};

PyTypeObject ReadyType = {PyVarObject_HEAD_INIT(nullptr, 0)};
PyObject* g_ready_none = nullptr;

void ready_dealloc(PyObject* self) {
  Py_XDECREF(reinterpret_cast<Ready*>(self)->value);
  PyObject_Free(self);
}
PyObject* ready_await(PyObject* self) { return Py_NewRef(self); }
PySendResult ready_am_send(PyObject* self, PyObject*, PyObject** result) {
  Ready* r = reinterpret_cast<Ready*>(self);
  *result = Py_NewRef(r->value != nullptr ? r->value : Py_None);
  return PYGEN_RETURN;
}
// The iterator protocol, for callers that do not use am_send: raise StopIteration(value).
PyObject* ready_iternext(PyObject* self) {
  Ready* r = reinterpret_cast<Ready*>(self);
  if (r->value == nullptr || r->value == Py_None) return nullptr;  // StopIteration with value None
  // StopIteration(value) built explicitly, so that a tuple value is not unpacked as arguments.
  PyObject* exc = PyObject_CallOneArg(PyExc_StopIteration, r->value);
  if (exc != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, exc);
    Py_DECREF(exc);
  }
  return nullptr;
}
PyObject* ready_send(PyObject* self, PyObject*) { return ready_iternext(self); }
PyObject* ready_throw(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  if (nargs < 1) {
    PyErr_SetString(PyExc_TypeError, "throw expected at least 1 argument");
    return nullptr;
  }
  PyObject* typ = args[0];
  if (PyExceptionInstance_Check(typ)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(typ)), typ);
  } else {
    PyErr_SetObject(typ, nargs > 1 ? args[1] : nullptr);
  }
  return nullptr;
}
PyObject* ready_close(PyObject*, PyObject*) { Py_RETURN_NONE; }

PyMethodDef ready_methods[] = {
    {"send", ready_send, METH_O, nullptr},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(ready_throw)), METH_FASTCALL, nullptr},
    {"close", ready_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};
PyAsyncMethods ready_async = {ready_await, nullptr, nullptr, ready_am_send};

}  // namespace

bool awaitables_init() {
  ReadyType.tp_name = "fasterapi_asgi._core.Ready";
  ReadyType.tp_basicsize = sizeof(Ready);
  ReadyType.tp_dealloc = ready_dealloc;
  ReadyType.tp_flags = Py_TPFLAGS_DEFAULT;
  ReadyType.tp_as_async = &ready_async;
  ReadyType.tp_iter = PyObject_SelfIter;
  ReadyType.tp_iternext = ready_iternext;
  ReadyType.tp_methods = ready_methods;
  if (PyType_Ready(&ReadyType) != 0) return false;
  g_ready_none = ready_new(Py_None);
  return g_ready_none != nullptr;
}

PyObject* ready_new(PyObject* value) {
  Ready* r = PyObject_New(Ready, &ReadyType);
  if (r == nullptr) return nullptr;
  r->value = Py_NewRef(value);
  return reinterpret_cast<PyObject*>(r);
}

PyObject* ready_steal(PyObject* value) {
  if (value == nullptr) return nullptr;
  PyObject* r = ready_new(value);
  Py_DECREF(value);
  return r;
}

PyObject* ready_none() { return Py_NewRef(g_ready_none); }

}  // namespace fa
