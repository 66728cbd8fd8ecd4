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
    def __init__(self, loop: asyncio.AbstractEventLoop, core: Any) -> None:
        self._loop = loop
        self._core = core
        self._timer: asyncio.TimerHandle | None = None
        self._scheduled = False
        self._fd = core._backend_fd()
        loop.add_reader(self._fd, self._tick)
        core._set_wakeup(self._wake)

    def _wake(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self._scheduled = False
        self._core._run_once()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        timeout = self._core._backend_timeout()
        if timeout >= 0:
            self._timer = self._loop.call_later(timeout / 1000.0, self._tick)

    def detach(self) -> None:
        self._core._set_wakeup(None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop.remove_reader(self._fd)
