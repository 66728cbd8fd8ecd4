"""Running the core's private libuv loop inside a non-uvloop asyncio loop (``--loop asyncio``).

The private ``uv_loop_t`` is driven from the asyncio loop: its backend (epoll) fd is watched with
``add_reader``, its next timer is mirrored with ``call_later``, and the core asks for a tick (``call_soon``)
after Python-side calls that start libuv work (writes, timers, read restarts), because those only reach
epoll on the next ``uv_run``.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Embedded:
    """Drives the core's private loop from ``loop``. ``core`` is a non-owning reference to the native server:
    ``detach()`` (called by the server before it is destroyed) guarantees that nothing reaches it afterwards,
    including a tick already scheduled with ``call_soon``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, core: Any) -> None:
        self._loop = loop
        self._core: Any = core
        self._timer: asyncio.TimerHandle | None = None
        self._soon: asyncio.Handle | None = None
        self._fd = core._backend_fd()
        loop.add_reader(self._fd, self._tick)
        core._set_wakeup(self._wake)

    def _wake(self) -> None:
        if self._soon is None and self._core is not None:
            self._soon = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._soon = None
        if self._core is None:
            return
        self._core._run_once()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self._core._backend_timeout()
        if timeout >= 0:
            self._timer = self._loop.call_later(timeout / 1000.0, self._tick)

    def detach(self) -> None:
        if self._core is None:
            return
        self._core._set_wakeup(None)
        self._core = None
        if self._soon is not None:
            self._soon.cancel()
            self._soon = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
