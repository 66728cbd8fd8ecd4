"""Replaying an exception through the framework's own error handling.

A route plan and the flattened middleware stack run a request's happy path without the framework's
exception-handling wrappers. When an exception escapes that path, they do not reproduce the wrappers' error
handling: they replay the request's outcome through the wrappers' own code. The wrapper is called with an
inner app that re-sends the response start the request has already sent (so the wrapper's "response started"
state is what it would have been) and then raises the exception. The re-sent start is dropped before it
reaches the real ``send``; everything the wrapper sends after it (a 500, a handler's response) goes through.
The exception handlers, their order, the responses and what is re-raised are then the framework's own.

What differs from running the wrappers around the request from the start: the traceback of an exception the
wrappers re-raise has the replay's frames in it (the server logs it), and the wrapper's ``Request`` is made
when the exception is replayed.
"""

from __future__ import annotations

from typing import Any

Message = dict[str, Any]


def raiser(exc: BaseException, start: Message | None) -> Any:
    """The inner app of a replay: re-sends ``start`` (when the response had started), then raises ``exc``."""

    async def replayed(scope: Any, receive: Any, send: Any) -> None:
        if start is not None:
            await send(start)
        raise exc

    return replayed


class SkipFirst:
    """The ``send`` under a replay whose response had started: the re-sent start is dropped (the client has it
    already); every later message goes to ``send``."""

    __slots__ = ("send", "skip")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.skip = True

    async def __call__(self, message: Message) -> None:
        if self.skip:
            self.skip = False
            return
        await self.send(message)


def replay_send(send: Any, start: Message | None) -> Any:
    """The ``send`` to give a replay's wrappers."""
    return send if start is None else SkipFirst(send)


class TrackedSend:
    """A ``send`` that remembers the response start it passed on (recorded before the send, as Starlette's
    wrappers set their "response started" flag before sending)."""

    __slots__ = ("send", "start")

    def __init__(self, send: Any) -> None:
        self.send = send
        self.start: Message | None = None

    async def __call__(self, message: Message) -> None:
        if self.start is None and message["type"] == "http.response.start":
            self.start = message
        await self.send(message)
