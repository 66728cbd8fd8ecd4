#include "bindings/runner.h"

#include <new>

#include "bindings/exchange.h"
#include "server/stage_clock.h"

namespace fa {

namespace {

struct Runner {
  PyObject_HEAD
  PyObject* coro;
  Exchange* ex;  // reported to once, then cleared
};
PyTypeObject RunnerType = {PyVarObject_HEAD_INIT(nullptr, 0)};

// Free list (GIL held): a finished request's Runner keeps its memory for the next request (see exchange.cc).
constexpr int kPoolMax = 64;
Runner* g_runner_pool[kPoolMax];
int g_runner_pool_size = 0;

// The app's coroutine ended (value on return, or the Python error set). Reports it to the exchange.
void runner_finish(Runner* r, PyObject* value) {
  Exchange* ex = r->ex;
  r->ex = nullptr;
  PyObject *t = nullptr, *v = nullptr, *tb = nullptr;
  if (value == nullptr) {
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != nullptr && v != nullptr) PyException_SetTraceback(v, tb);
  }
  // The core below may run out of memory; no C++ exception may cross the Task's CPython frames.
  try {
    if (value != nullptr) exchange_app_returned(ex, value);
    else exchange_app_failed(ex, v != nullptr ? v : Py_None);
  } catch (...) {
    PyErr_WriteUnraisable(reinterpret_cast<PyObject*>(r));
  }
  Py_XDECREF(t);
  Py_XDECREF(v);
  Py_XDECREF(tb);
  Py_DECREF(reinterpret_cast<PyObject*>(ex));
  Py_CLEAR(r->coro);
}

PySendResult runner_am_send(PyObject* self, PyObject* arg, PyObject** result) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return PYGEN_ERROR;
  }
  PyObject* out = nullptr;
  PySendResult status;
  {
    StageScope app_stage(kStageApp);
    status = PyIter_Send(r->coro, arg, &out);
  }
  if (status == PYGEN_NEXT) {
    *result = out;
    return PYGEN_NEXT;
  }
  runner_finish(r, status == PYGEN_RETURN ? out : nullptr);
  Py_XDECREF(out);
  *result = Py_NewRef(Py_None);
  return PYGEN_RETURN;
}

// Python-level protocol (send/throw/__next__) for callers that do not use am_send.
PyObject* runner_result_to_python(PySendResult status, PyObject* value) {
  if (status == PYGEN_NEXT) return value;
  if (status == PYGEN_RETURN) {
    Py_DECREF(value);
    PyErr_SetNone(PyExc_StopIteration);
  }
  return nullptr;
}
PyObject* runner_send(PyObject* self, PyObject* arg) {
  PyObject* value = nullptr;
  const PySendResult status = runner_am_send(self, arg, &value);
  return runner_result_to_python(status, value);
}
PyObject* runner_iternext(PyObject* self) { return runner_send(self, Py_None); }
PyObject* runner_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
    return nullptr;
  }
  PyObject* meth = PyObject_GetAttrString(r->coro, "throw");
  if (meth == nullptr) return nullptr;
  PyObject* out;
  {
    StageScope app_stage(kStageApp);
    out = PyObject_Vectorcall(meth, args, static_cast<size_t>(nargs), nullptr);
  }
  Py_DECREF(meth);
  if (out != nullptr) return out;  // the app's coroutine caught it and yielded again
  if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    PyObject* value = v != nullptr ? PyObject_GetAttrString(v, "value") : Py_NewRef(Py_None);
    Py_XDECREF(t);
    Py_XDECREF(v);
    Py_XDECREF(tb);
    if (value == nullptr) return nullptr;
    runner_finish(r, value);
    Py_DECREF(value);
  } else {
    runner_finish(r, nullptr);
  }
  PyErr_SetNone(PyExc_StopIteration);
  return nullptr;
}
// close() before the app finished (the Task was destroyed unfinished): the app is done, with nothing to report.
PyObject* runner_close(PyObject* self, PyObject*) {
  Runner* r = reinterpret_cast<Runner*>(self);
  if (r->coro == nullptr) Py_RETURN_NONE;
  PyObject* res = PyObject_CallMethod(r->coro, "close", nullptr);
  if (r->ex != nullptr) {
    Exchange* ex = r->ex;
    r->ex = nullptr;
    app_finished(ex);
    Py_DECREF(reinterpret_cast<PyObject*>(ex));
  }
  Py_CLEAR(r->coro);
  return res;
}
PyObject* runner_await(PyObject* self) { return Py_NewRef(self); }
void runner_dealloc(PyObject* self) {
  Runner* r = reinterpret_cast<Runner*>(self);
  PyObject_GC_UnTrack(self);
  Py_CLEAR(r->coro);
  Py_CLEAR(r->ex);
  if (g_runner_pool_size < kPoolMax) g_runner_pool[g_runner_pool_size++] = r;
  else PyObject_GC_Del(self);
}
int runner_traverse(PyObject* self, visitproc visit, void* arg) {
  Runner* r = reinterpret_cast<Runner*>(self);
  Py_VISIT(r->coro);
  Py_VISIT(reinterpret_cast<PyObject*>(r->ex));
  return 0;
}
int runner_clear(PyObject* self) {
  Runner* r = reinterpret_cast<Runner*>(self);
  Py_CLEAR(r->coro);
  Py_CLEAR(r->ex);
  return 0;
}
PyMethodDef runner_methods[] = {
    {"send", runner_send, METH_O, nullptr},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(runner_throw)), METH_FASTCALL, nullptr},
    {"close", runner_close, METH_NOARGS, nullptr},
    {nullptr, nullptr, 0, nullptr}};
PyAsyncMethods runner_async = {runner_await, nullptr, nullptr, runner_am_send};

}  // namespace

bool runner_type_init() {
  RunnerType.tp_name = "fasterapi_asgi._core.Runner";
  RunnerType.tp_basicsize = sizeof(Runner);
  RunnerType.tp_dealloc = runner_dealloc;
  RunnerType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  RunnerType.tp_as_async = &runner_async;
  RunnerType.tp_iter = PyObject_SelfIter;
  RunnerType.tp_iternext = runner_iternext;
  RunnerType.tp_methods = runner_methods;
  RunnerType.tp_traverse = runner_traverse;
  RunnerType.tp_clear = runner_clear;
  if (PyType_Ready(&RunnerType) != 0) return false;
  // asyncio.Task accepts it as a coroutine: register with collections.abc.Coroutine.
  PyObject* abc = PyImport_ImportModule("collections.abc");
  if (abc == nullptr) return false;
  PyObject* coroutine = PyObject_GetAttrString(abc, "Coroutine");
  Py_DECREF(abc);
  if (coroutine == nullptr) return false;
  PyObject* reg = PyObject_CallMethod(coroutine, "register", "O", reinterpret_cast<PyObject*>(&RunnerType));
  Py_DECREF(coroutine);
  if (reg == nullptr) return false;
  Py_DECREF(reg);
  return true;
}

PyObject* runner_new(PyObject* coro, Exchange* ex) {
  Runner* r;
  if (g_runner_pool_size > 0) {
    r = g_runner_pool[--g_runner_pool_size];
    PyObject_Init(reinterpret_cast<PyObject*>(r), &RunnerType);
  } else {
    r = PyObject_GC_New(Runner, &RunnerType);
    if (r == nullptr) return nullptr;
  }
  r->coro = Py_NewRef(coro);
  r->ex = reinterpret_cast<Exchange*>(Py_NewRef(reinterpret_cast<PyObject*>(ex)));
  PyObject_GC_Track(reinterpret_cast<PyObject*>(r));
  return reinterpret_cast<PyObject*>(r);
}

}  // namespace fa
