"""The coroutine each request's Task runs: calls the app and reports how it ended to the native `send`."""

from __future__ import annotations

from typing import Any


async def run_asgi(app: Any, scope: dict[str, Any], receive: Any, send: Any) -> None:
    try:
        result = await app(scope, receive, send)
    except BaseException as exc:  # noqa: BLE001 - as uvicorn: log, answer 500 or close, keep serving
        send._app_failed(exc)
    else:
        send._app_returned(result)
