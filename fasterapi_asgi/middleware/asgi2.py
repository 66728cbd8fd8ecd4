"""Adapter that presents an ASGI 2 (double-callable) application as ASGI 3."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ASGI2Instance = Callable[[Any, Any], Awaitable[None]]
ASGI2App = Callable[[MutableMapping[str, Any]], ASGI2Instance]


class ASGI2Middleware:
    """``app(scope)`` returns an instance, awaited as ``instance(receive, send)``."""

    def __init__(self, app: ASGI2App) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        instance = self.app(scope)
        await instance(receive, send)
