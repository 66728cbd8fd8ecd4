// Ready: an awaitable whose result is already known. `await` on it completes without a Future and without a
// StopIteration object (am_send returns PYGEN_RETURN). receive() and send() return one whenever they can answer at
// once; they create a Future only for a real wait.
#pragma once

#include <Python.h>

namespace fa {

// Module setup; false with a Python error set.
bool awaitables_init();
// A Ready holding `value` (new reference), or nullptr with an error set.
PyObject* ready_new(PyObject* value);
// ready_new(value) and drop the caller's reference to value; nullptr (error kept) when value is nullptr.
PyObject* ready_steal(PyObject* value);
// The shared Ready(None) (new reference): stateless, so one object serves every send().
PyObject* ready_none();

}  // namespace fa
