// The HTTP request/response cycle of an Exchange: receive() (request body, then http.disconnect), send()
// (http.response.start, http.response.body, http.response.pathsend) and the end of the app (500, close, or
// nothing to do). The wire format is the stream's (HttpStream::start_response / write_body / send_file /
// answer_error); this file maps ASGI messages onto it. GIL held throughout.
#pragma once

#include <Python.h>

#include <cstddef>

namespace fa {

struct Exchange;

PyObject* http_receive(Exchange* ex);
PyObject* http_send(Exchange* ex, PyObject* message, PyObject* type);
// Request body bytes arrived for `ex`; returns true to pause reading (body backpressure).
bool http_body_arrived(Exchange* ex, const char* data, std::size_t len);
void http_body_complete(Exchange* ex);
// The file of http.response.pathsend is out: the response is complete and the waiting send() returns.
void http_file_sent(Exchange* ex);
void http_app_failed(Exchange* ex, PyObject* exc);
void http_app_returned(Exchange* ex, PyObject* result);
// The server answers the request itself with a 500 (the app failed before starting its response).
void http_answer_500(Exchange* ex);

}  // namespace fa
