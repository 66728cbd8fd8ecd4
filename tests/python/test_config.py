"""Config unit tests: header parsing, app loading (ASGI 2/3 detection, factories), proxy headers,
env files, sockets and the access-log format.  In-process; no server runs."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fasterapi_asgi import Config
from fasterapi_asgi.config import parse_header
from fasterapi_asgi.logging import AccessFormatter
from fasterapi_asgi.middleware.asgi2 import ASGI2Middleware
from fasterapi_asgi.middleware.proxy_headers import ProxyHeadersMiddleware


@pytest.fixture(autouse=True)
def capture_server_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Let caplog see INFO records even if an earlier test applied LOGGING_CONFIG (propagate=False)."""
    package_logger = logging.getLogger("uvicorn")
    saved = package_logger.propagate
    package_logger.propagate = True
    caplog.set_level(logging.INFO)
    yield
    package_logger.propagate = saved


def make_config(app: Any, **kwargs: Any) -> Config:
    # log_config=None: never reconfigure the test process's logging.
    return Config(app, log_config=None, **kwargs)


async def asgi3_app(scope: Any, receive: Any, send: Any) -> None:
    pass


class ASGI2App:
    def __init__(self, scope: Any) -> None:
        self.scope = scope

    async def __call__(self, receive: Any, send: Any) -> None:
        pass


class ASGI3Instance:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class ASGI2Instance:
    def __call__(self, scope: Any) -> Any:
        return asgi3_app


def create_app() -> Any:
    return asgi3_app


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("X-Foo:bar", ("X-Foo", "bar")),
        ("X-Foo: bar baz ", ("X-Foo", "bar baz")),
        ("X-Empty:", ("X-Empty", "")),
        ("X-Url: http://a:1/b", ("X-Url", "http://a:1/b")),
        (("Server", "mine"), ("Server", "mine")),
    ],
)
def test_parse_header(raw: Any, expected: tuple[str, str]) -> None:
    assert parse_header(raw) == expected


@pytest.mark.parametrize(
    "raw", ["no colon", ": value", "Bad Name: x", "X-A: b\r\nX-Injected: 1", "X-A: \x00"]
)
def test_parse_header_rejects(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_header(raw)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("ws_max_queue", 0, "ws_max_queue must be >= 1"),
        ("ws_ping_interval", -1.0, "ws_ping_interval must be >= 0 seconds or None (off), got -1.0"),
        ("ws_ping_timeout", float("nan"), "ws_ping_timeout must be >= 0 seconds or None (off), got nan"),
    ],
)
def test_websocket_options_are_checked(option: str, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_config(asgi3_app, **{option: value})


def test_websocket_options_none_turns_pings_off() -> None:
    config = make_config(asgi3_app, ws_ping_interval=None, ws_ping_timeout=None, ws_max_queue=1)
    assert (config.ws_ping_interval, config.ws_ping_timeout, config.ws_max_queue) == (None, None, 1)
    assert config.ws_per_message_deflate is True  # uvicorn's default


def test_default_headers_are_lowercased_bytes() -> None:
    config = make_config(asgi3_app, headers=[("X-Custom", "One"), "X-Other: Two"])
    assert config.default_headers == [(b"x-custom", b"One"), (b"x-other", b"Two")]
    assert config.core_server_header is True


def test_user_server_header_replaces_the_default() -> None:
    assert make_config(asgi3_app, headers=["Server: mine"]).core_server_header is False
    assert make_config(asgi3_app, server_header=False).core_server_header is False


@pytest.mark.parametrize(
    ("app", "interface", "wrapped"),
    [
        (asgi3_app, "asgi3", False),
        (ASGI3Instance(), "asgi3", False),
        (ASGI2App, "asgi2", True),
        (ASGI2Instance(), "asgi2", True),
    ],
)
def test_interface_detection(app: Any, interface: str, wrapped: bool) -> None:
    config = make_config(app, proxy_headers=False)
    config.load()
    assert config.interface == interface
    assert config.asgi_version == ("2.0" if interface == "asgi2" else "3.0")
    assert isinstance(config.loaded_app, ASGI2Middleware) is wrapped
    if not wrapped:
        assert config.loaded_app is app


def test_asgi2_middleware_calls_the_double_callable() -> None:
    calls: list[Any] = []

    class App:
        def __init__(self, scope: Any) -> None:
            calls.append(scope["type"])

        async def __call__(self, receive: Any, send: Any) -> None:
            calls.append(await receive())

    async def receive() -> str:
        return "message"

    asyncio.run(ASGI2Middleware(App)({"type": "http"}, receive, None))
    assert calls == ["http", "message"]


def test_proxy_headers_on_by_default() -> None:
    config = make_config(asgi3_app)
    config.load()
    # Applied by the core through a hook (only for requests carrying x-forwarded-*), not a middleware layer.
    assert config.loaded_app is asgi3_app
    assert config.proxy_rewrite is not None
    assert isinstance(config.proxy_rewrite.__self__, ProxyHeadersMiddleware)  # type: ignore[attr-defined]
    assert config.forwarded_allow_ips == "127.0.0.1,::1"


def test_forwarded_allow_ips_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    assert make_config(asgi3_app).forwarded_allow_ips == "10.0.0.1"


def test_factory_flag(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(create_app, factory=True, proxy_headers=False)
    config.load()
    assert config.loaded_app is asgi3_app
    assert "factory detected" not in caplog.text


def test_factory_detected_without_flag(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(create_app, proxy_headers=False)
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        config.load()
    assert config.loaded_app is asgi3_app
    assert "ASGI app factory detected" in caplog.text


def test_factory_flag_with_non_factory_exits_3(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config(asgi3_app, factory=True)
    with pytest.raises(SystemExit) as exc_info:
        config.load()
    assert exc_info.value.code == 3
    assert "Error loading ASGI app factory" in caplog.text


def test_import_string(caplog: pytest.LogCaptureFixture) -> None:
    config = make_config("tests_config_no_such_module:app")
    with pytest.raises(SystemExit) as exc_info:
        config.load()
    assert exc_info.value.code == 3
    assert 'Error loading ASGI app. Could not import module "tests_config_no_such_module".' in caplog.text

    config = make_config("json:dumps")  # a real callable; not an ASGI app, but it imports
    assert config.load_app() is __import__("json").dumps


def test_import_error_inside_the_module_is_not_hidden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_app_module.py").write_text("import tests_config_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="tests_config_missing_dependency"):
        make_config("broken_app_module:app").load_app()


def test_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CFG_TEST_A", "")
    monkeypatch.delenv("CFG_TEST_A")  # registered for restore: removed again after the test
    monkeypatch.setenv("CFG_TEST_KEEP", "from-environment")
    env_file = tmp_path / ".env"
    env_file.write_text("CFG_TEST_A=1\nCFG_TEST_KEEP=from-file\n")
    make_config(asgi3_app, env_file=env_file)
    assert os.environ["CFG_TEST_A"] == "1"
    assert os.environ["CFG_TEST_KEEP"] == "from-environment"  # the environment wins, as in uvicorn


def test_web_concurrency(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    assert make_config(asgi3_app).workers == 3
    assert make_config(asgi3_app, workers=2).workers == 2


def run_proxy(scope: dict[str, Any], trusted: Any = "127.0.0.1") -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.update(scope)

    asyncio.run(ProxyHeadersMiddleware(app, trusted_hosts=trusted)(scope, None, None))  # type: ignore[arg-type]
    return seen


def http_scope(client: str, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http", "scheme": "http", "client": (client, 1234), "headers": list(headers)}


def test_proxy_headers_trusted() -> None:
    scope = run_proxy(
        http_scope("127.0.0.1", (b"x-forwarded-for", b"1.2.3.4, 10.0.0.1"), (b"x-forwarded-proto", b"https")),
        trusted=["127.0.0.1", "10.0.0.0/8"],
    )
    assert scope["client"] == ("1.2.3.4", 0)
    assert scope["scheme"] == "https"


def test_proxy_headers_untrusted_peer_is_ignored() -> None:
    scope = run_proxy(
        http_scope("192.168.1.9", (b"x-forwarded-for", b"1.2.3.4"), (b"x-forwarded-proto", b"https"))
    )
    assert scope["client"] == ("192.168.1.9", 1234)
    assert scope["scheme"] == "http"


def test_proxy_headers_rightmost_untrusted_and_ports() -> None:
    scope = run_proxy(http_scope("127.0.0.1", (b"x-forwarded-for", b"6.6.6.6, 5.5.5.5:8080")))
    assert scope["client"] == ("5.5.5.5", 8080)
    scope = run_proxy(http_scope("10.9.9.9", (b"x-forwarded-for", b"[::1]:99, 6.6.6.6")), trusted="*")
    assert scope["client"] == ("::1", 99)


def test_proxy_headers_invalid_proto_ignored() -> None:
    scope = run_proxy(http_scope("127.0.0.1", (b"x-forwarded-proto", b"javascript")))
    assert scope["scheme"] == "http"


def test_access_formatter() -> None:
    formatter = AccessFormatter(
        '%(levelprefix)s %(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False
    )
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5555", "GET", "/x?y=1", "1.1", 200), None,
    )  # fmt: skip
    assert formatter.format(record) == 'INFO:     127.0.0.1:5555 - "GET /x?y=1 HTTP/1.1" 200 OK'
    coloured = AccessFormatter("%(status_code)s", use_colors=True).format(record)
    assert coloured == "\x1b[32m200 OK\x1b[0m"


def test_create_sockets_tcp() -> None:
    sockets = make_config(asgi3_app, host="127.0.0.1", port=0).create_sockets()
    try:
        assert len(sockets) == 1
        assert sockets[0].family == socket.AF_INET
        client = socket.create_connection(sockets[0].getsockname(), timeout=2)  # listening
        client.close()
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this machine")
def test_bind_socket_ipv6() -> None:
    try:
        sock = make_config(asgi3_app, host="::1", port=0).bind_socket()
    except SystemExit:
        pytest.skip("::1 is not configured")
    with sock:
        assert sock.family == socket.AF_INET6
        assert sock.get_inheritable()


def test_create_sockets_uds_replaces_stale_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    (sock,) = make_config(asgi3_app, uds=path).create_sockets()
    with sock:
        assert sock.family == socket.AF_UNIX
        assert oct(os.stat(path).st_mode & 0o777) == oct(0o666)


def test_create_sockets_fd_detects_family() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    with listener:
        (sock,) = make_config(asgi3_app, fd=listener.fileno()).create_sockets()
        with sock:
            assert sock.family == socket.AF_INET
            assert sock.fileno() != listener.fileno()
            assert sock.getsockname() == listener.getsockname()


def test_bind_failure_exits_3(caplog: pytest.LogCaptureFixture) -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        with pytest.raises(SystemExit) as exc_info:
            make_config(asgi3_app, host="127.0.0.1", port=port).create_sockets()
    assert exc_info.value.code == 3
    assert "Address already in use" in caplog.text


def test_loop_factories() -> None:
    import uvloop

    assert make_config(asgi3_app, loop="uvloop").get_loop_factory() is uvloop.new_event_loop
    assert make_config(asgi3_app, loop="auto").get_loop_factory() is uvloop.new_event_loop
    assert make_config(asgi3_app, loop="asyncio").get_loop_factory() is asyncio.SelectorEventLoop
    assert make_config(asgi3_app, loop="none").get_loop_factory() is None
    assert make_config(asgi3_app, loop="uvloop:new_event_loop").get_loop_factory() is uvloop.new_event_loop


def test_config_is_picklable_for_workers() -> None:
    import pickle

    config = Config("json:dumps", workers=2, log_config=None, headers=["X-A: b"])
    clone = pickle.loads(pickle.dumps(config))
    assert clone.default_headers == [(b"x-a", b"b")]
    assert clone.workers == 2
