"""What users see in the logs matches uvicorn: logger names, access lines, WebSocket handshake lines, levels,
and a logging configuration written for uvicorn. The same requests go to both servers; lines compared."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import StartServer
from harness import RawClient, ServerProcess, launch_server, request
from websockets.exceptions import InvalidStatus

pytestmark = pytest.mark.timeout(60)


def lines_with(server: ServerProcess, marker: str, timeout: float = 5.0) -> list[str]:
    server.wait_for_log(marker, timeout)
    return [ln for ln in server.log().splitlines() if marker in ln]


def strip_ports(line: str) -> str:
    return re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)


def test_access_line_after_proxy_headers_and_root_path(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app", "--root-path", "/api", "--forwarded-allow-ips", "*")
    with RawClient(srv.port) as c:
        c.send(request("GET", "/scope/a%20b?q=1", [("X-Forwarded-For", "203.0.113.7")]))
        assert c.read_response().status == 200
    (line,) = lines_with(srv, "203.0.113.7")
    assert line == 'INFO:     203.0.113.7:0 - "GET /api/scope/a%20b?q=1 HTTP/1.1" 200 OK', line


def test_access_line_for_a_failing_stream(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app")
    with RawClient(srv.port) as c:
        c.send(request("GET", "/raise-after"))
        c.read_to_eof(5)
    assert lines_with(srv, '"GET /raise-after HTTP/1.1"')[0].endswith('"GET /raise-after HTTP/1.1" 200 OK')


def test_app_logging_through_uvicorn_error(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app")
    assert httpx.get(srv.url + "/log-lines").text == "logged"
    assert lines_with(srv, "APP-INFO-LINE") == ["INFO:     APP-INFO-LINE"]
    assert lines_with(srv, "APP-WARNING-LINE") == ["WARNING:  APP-WARNING-LINE"]


def test_websocket_handshake_lines(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "ws_raw:app")

    async def go() -> None:
        async with websockets.connect(f"ws://127.0.0.1:{srv.port}/echo") as ws:
            await ws.send("x")
            await ws.recv()
        with pytest.raises(InvalidStatus):
            async with websockets.connect(f"ws://127.0.0.1:{srv.port}/reject"):
                pass

    asyncio.run(go())
    time.sleep(0.3)
    log = [strip_ports(ln) for ln in srv.log().splitlines()]
    accepted = log.index('INFO:     127.0.0.1:PORT - "WebSocket /echo" [accepted]')
    assert log[accepted + 1] == "INFO:     connection open"
    rejected = log.index('INFO:     127.0.0.1:PORT - "WebSocket /reject" 403')
    assert log[rejected + 1] == "INFO:     connection rejected (403 Forbidden)"


def test_access_line_target_is_the_path_as_sent(kind: str, start_server: StartServer) -> None:
    """uvicorn 0.55 logs the target as the client sent it (raw_path), not the decoded path quoted again."""
    if kind == "uvicorn":
        import uvicorn

        if tuple(int(part) for part in uvicorn.__version__.split(".")[:2]) < (0, 55):
            pytest.skip(
                f"uvicorn {uvicorn.__version__} (Python 3.10's newest) logs the decoded path; 0.55 the target"
            )
    srv = start_server(kind, "raw_app:app")
    for target in ("/scope/..%2Fapp.py", "/scope/%ZZ%", "/scope/a%20b?q=%22x%22"):
        with RawClient(srv.port) as c:
            c.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            c.read_response()
    for logged in ("/scope/..%2Fapp.py", "/scope/%ZZ%", "/scope/a%20b?q=%22x%22"):
        (line,) = lines_with(srv, f'"GET {logged} HTTP/1.1"')
        assert line.endswith(f'"GET {logged} HTTP/1.1" 200 OK'), line


def test_exception_line_is_uvicorns(kind: str, start_server: StartServer) -> None:
    srv = start_server(kind, "raw_app:app")
    with RawClient(srv.port) as c:
        c.send(request("GET", "/raise-before"))
        assert c.read_response().status == 500
    srv.wait_for_log("APP-RAISED-BEFORE-START")
    assert "ERROR:    Exception in ASGI application\nTraceback (most recent call last):" in srv.log()


def test_refused_websocket_handshake_line(kind: str, start_server: StartServer) -> None:
    """A handshake the server itself refuses (no Sec-WebSocket-Key): uvicorn's WebSocket library logs it
    through uvicorn's error logger."""
    srv = start_server(kind, "ws_raw:app")
    with RawClient(srv.port) as c:
        c.send(
            b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        assert c.read_response().status == 400
    assert lines_with(srv, "connection rejected (400") == ["INFO:     connection rejected (400 Bad Request)"]


def test_unix_socket_access_line(kind: str, tmp_path: Path) -> None:
    path = str(tmp_path / f"{kind}.sock")
    srv = launch_server(kind, "raw_app:app", ("--uds", path), tmp_path)
    try:
        deadline = time.monotonic() + 15
        while not Path(path).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        transport = httpx.HTTPTransport(uds=path)
        with httpx.Client(transport=transport, base_url="http://local", trust_env=False) as client:
            assert client.get("/").status_code == 200
        (line,) = lines_with(srv, '"GET / HTTP/1.1"')
    finally:
        srv.stop()
    assert line == 'INFO:      - "GET / HTTP/1.1" 200 OK', line


UVICORN_LOG_CONFIG = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "default": {"format": "CFG-DEFAULT %(levelname)s %(name)s %(message)s"},
        "access": {"format": "CFG-ACCESS %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {
        "default": {"formatter": "default", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        "access": {"formatter": "access", "class": "logging.StreamHandler", "stream": "ext://sys.stdout"},
    },
    "loggers": {
        "uvicorn": {"handlers": ["default"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["access"], "level": "INFO", "propagate": False},
    },
}


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_log_config_written_for_uvicorn(
    kind: str, fresh_server: StartServer, tmp_path: Path, fmt: str
) -> None:
    if fmt == "json":
        cfg = tmp_path / "log.json"
        cfg.write_text(json.dumps(UVICORN_LOG_CONFIG))
    else:
        yaml = pytest.importorskip("yaml")
        cfg = tmp_path / "log.yaml"
        cfg.write_text(yaml.safe_dump(UVICORN_LOG_CONFIG))
    srv = fresh_server(kind, "raw_app:app", "--log-config", str(cfg))
    assert httpx.get(srv.url + "/log-lines").status_code == 200
    assert lines_with(srv, "APP-INFO-LINE") == ["CFG-DEFAULT INFO uvicorn.error APP-INFO-LINE"]
    (access,) = lines_with(srv, '"GET /log-lines HTTP/1.1"')
    assert (
        strip_ports(access) == 'CFG-ACCESS INFO uvicorn.access 127.0.0.1:PORT - "GET /log-lines HTTP/1.1" 200'
    )
    # Start-up and shutdown lines go through the configured handler too.
    assert any(
        ln.startswith("CFG-DEFAULT INFO uvicorn.error Started server process")
        for ln in srv.log().splitlines()
    )
