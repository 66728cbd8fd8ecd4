// The WebSocket cycle of an Exchange (ASGI `websocket` scope): receive() (websocket.connect, queued messages,
// websocket.disconnect), send() (accept -> 101, close before accept -> 403, messages, close) and the end of the
// app. Frames and the handshake's wire format are the connection's (Connection::ws_*, WsSession). GIL held throughout.
#pragma once

#include <Python.h>

#include <cstddef>
#include <string_view>

namespace fa {

struct Exchange;

PyObject* ws_receive(Exchange* ex);
PyObject* ws_send(Exchange* ex, PyObject* message, PyObject* type);
// A complete message from the client; returns true to pause reading (the app is behind).
bool ws_message_arrived(Exchange* ex, bool text, const char* data, std::size_t len);
// The session ends with `code` (peer's close frame, a protocol error, shutdown).
void ws_session_closing(Exchange* ex, int code, std::string_view reason, bool with_reason);
// The stream was lost without a close frame (as uvicorn: 1005 once accepted, 1006 before).
void ws_stream_lost(Exchange* ex);
// The app returned (`result`) or raised (`exc`).
void ws_app_finished(Exchange* ex, PyObject* exc, PyObject* result);
// The app could not be started: the handshake is answered with a 500.
void ws_answer_500(Exchange* ex);

}  // namespace fa
