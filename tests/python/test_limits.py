"""--limit-concurrency and --backlog, checked against uvicorn's behaviour."""

from __future__ import annotations

import pytest
from conftest import StartServer
from harness import RawClient, request


@pytest.mark.parametrize("kind", ["fasterapi", "uvicorn"])
def test_limit_concurrency_answers_503_and_closes(kind: str, start_server: StartServer) -> None:
    # uvicorn's rule: a request is refused while the open connections (its own included) reach the limit.
    srv = start_server(kind, "raw_app:app", "--limit-concurrency", "2")
    with RawClient(srv.port) as first:
        first.send(request("GET", "/"))
        assert first.read_response().status == 200  # 1 connection open: below the limit
        with RawClient(srv.port) as second:
            second.send(request("GET", "/"))
            r = second.read_response()
            assert r.status == 503
            assert "close" in (r.header("connection") or "").lower()
            assert second.wait_closed(3)
        # The refused connection is gone: the first one is served again.
        first.send(request("GET", "/"))
        assert first.read_response().status == 200
    srv.wait_for_log("WARNING:  Exceeded concurrency limit.")
