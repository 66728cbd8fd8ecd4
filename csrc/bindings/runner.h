// Runner: the coroutine a request's Task runs. It forwards every step to the app's coroutine and, when that ends,
// reports how (return value or exception) to the Exchange, exactly like
//     async def run(app, scope, receive, send):
//         try: result = await app(scope, receive, send)
//         except BaseException as exc: <log; 500 or close>      (exchange_app_failed)
//         else: <check the response was completed>             (exchange_app_returned)
// but without a Python frame per step (uvicorn's run_asgi wrapper, natively).
#pragma once

#include <Python.h>

namespace fa {

struct Exchange;

// Module setup (the type, registered as a collections.abc.Coroutine); false with a Python error set.
bool runner_type_init();
// A Runner for `coro` reporting to `ex` (both referenced). New reference, or nullptr with an error set.
PyObject* runner_new(PyObject* coro, Exchange* ex);

}  // namespace fa
