"""--reset-contextvars against uvicorn: each request in a fresh contextvars.Context hides context set
outside it (at import); without the flag a request sees what uvicorn's requests see. Requests never see each
other's."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from harness import ServerProcess

StartServer = Callable[..., ServerProcess]


def seen(server: ServerProcess) -> list[str]:
    with httpx.Client(base_url=server.url, trust_env=False, timeout=10) as client:
        return [client.get("/").text for _ in range(3)]


@pytest.mark.parametrize("flags", [(), ("--reset-contextvars",)], ids=["default", "reset"])
def test_request_context_matches_uvicorn(flags: tuple[str, ...], fresh_server: StartServer) -> None:
    ours = seen(fresh_server("fasterapi", "contextvars_app:app", *flags))
    theirs = seen(fresh_server("uvicorn", "contextvars_app:app", *flags))
    assert ours == theirs
    expected = "unset" if flags else "set-at-import"
    assert ours == [expected] * 3
