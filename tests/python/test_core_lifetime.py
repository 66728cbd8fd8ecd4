"""Binding tests: lifetimes and error paths of the native core, driven in-process over real sockets.

These are the only tests besides the benchmark ones that import ``fasterapi_asgi._core``: what they check
(objects outliving the server, failing constructors, memory exhaustion inside ``send``) cannot be seen
from outside a server process.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from fasterapi_asgi import _core
from fasterapi_asgi._embed import Embedded
from fasterapi_asgi.server import _bind_libuv

pytestmark = pytest.mark.timeout(60)

Messages = list[tuple[str, BaseException | None]]


def run(
    main: Callable[[], Coroutine[Any, Any, None]], loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    loop = loop_factory()
    try:
        loop.run_until_complete(main())
    finally:
        loop.close()


def listening_socket() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock, int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "asyncio"]
)
def test_app_task_outlives_server(loop_factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
    """A request Task still running when the server object is destroyed finishes safely afterwards: its
    completion is reported (the error log still works) and the app handler is freed only then."""
    _bind_libuv(_core)
    logged: Messages = []

    async def main() -> None:
        started = asyncio.Event()
        gate = asyncio.Event()

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.set()
            await gate.wait()
            raise RuntimeError("APP-FAILED-AFTER-SERVER-GONE")

        core = _core.Server(asyncio.get_running_loop(), app, error_log=lambda m, e: logged.append((m, e)))
        sock, port = listening_socket()
        core.listen(sock, 128)
        sock.close()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(started.wait(), 5)
        core.close()
        del core
        gc.collect()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # the connection was closed
        writer.close()
        for _ in range(5):
            await asyncio.sleep(0.01)
        assert _core.live_app_handlers() == 1, "the app handler was freed while a request Task still runs"
        gate.set()
        for _ in range(5):
            await asyncio.sleep(0.01)

    run(main, loop_factory)
    assert any("Exception in ASGI application" in m and isinstance(e, RuntimeError) for m, e in logged), (
        logged
    )
    logged.clear()  # the exception's traceback holds the app's frame, and so its send/receive objects
    gc.collect()
    assert _core.live_app_handlers() == 0
    assert _core.live_handles() == 0


class LoopWithoutTasks:
    """Enough of an event loop for the embedding, but without create_task/create_future."""

    def add_reader(self, fd: int, cb: Callable[[], None]) -> None:
        pass

    def remove_reader(self, fd: int) -> None:
        pass

    def call_soon(self, cb: Callable[[], None]) -> None:
        pass

    def call_later(self, delay: float, cb: Callable[[], None]) -> None:
        pass


def test_server_constructor_reports_missing_loop_api() -> None:
    _bind_libuv(_core)
    before = _core.live_app_handlers()
    with pytest.raises(AttributeError, match="create_task"):
        _core.Server(LoopWithoutTasks(), lambda s, r, w: None, error_log=lambda m, e: None)
    gc.collect()
    assert _core.live_app_handlers() == before


class RecordingCore:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.wakeup: Callable[[], None] | None = None

    def _backend_fd(self) -> int:
        return self._r.fileno()

    def _set_wakeup(self, fn: Callable[[], None] | None) -> None:
        self.wakeup = fn

    def _run_once(self) -> None:
        self.calls.append("run_once")

    def _backend_timeout(self) -> int:
        return -1


def test_embedding_tick_never_runs_after_detach() -> None:
    """--loop asyncio: a tick the core asked for (call_soon) must not run into a core that is gone."""

    async def main() -> None:
        core = RecordingCore()
        r, w = socket.socketpair()
        core._r = r  # type: ignore[attr-defined]
        try:
            embedded = Embedded(asyncio.get_running_loop(), core)
            assert core.wakeup is not None
            core.wakeup()  # the core asks for a tick...
            embedded.detach()  # ...and is destroyed before the loop runs it
            for _ in range(3):
                await asyncio.sleep(0)
            assert core.calls == [], "a scheduled tick ran after the embedding was detached"
            # A live embedding does tick.
            embedded = Embedded(asyncio.get_running_loop(), core)
            assert core.wakeup is not None
            core.wakeup()
            await asyncio.sleep(0)
            assert core.calls == ["run_once"]
            embedded.detach()
        finally:
            r.close()
            w.close()

    run(main, asyncio.new_event_loop)


def run_script(body: str) -> subprocess.CompletedProcess[str]:
    prelude = textwrap.dedent(
        """
        import asyncio, socket, sys
        import uvloop
        from fasterapi_asgi import _core
        from fasterapi_asgi.server import _bind_libuv
        _bind_libuv(_core)
        logged = []
        def serve(app):
            core = _core.Server(asyncio.get_running_loop(), app, error_log=lambda m, e: logged.append((m, e)))
            sock = socket.socket(); sock.bind(("127.0.0.1", 0)); sock.listen(16)
            core.listen(sock, 16)
            port = sock.getsockname()[1]
            sock.close()
            return core, port
        """
    )
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(body)], capture_output=True, text=True, timeout=60
    )


def test_websocket_accept_key_failure_is_a_python_error() -> None:
    """If computing Sec-WebSocket-Accept fails, send() raises a real exception (not SystemError), the
    client gets a 500 and the server goes on."""
    proc = run_script(
        """
        import base64
        base64.b64encode = lambda data: "not bytes"   # breaks the accept-key computation
        outcome = []
        async def app(scope, receive, send):
            if scope["type"] == "websocket":
                await receive()
                try:
                    await send({"type": "websocket.accept"})
                except BaseException as exc:
                    outcome.append(type(exc).__name__)
                    raise
        async def main():
            core, port = serve(app)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET /ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n")
            head = await asyncio.wait_for(r.read(), 5)
            print("STATUS", head.split(b"\\r\\n")[0].decode())
            print("OUTCOME", outcome)
            core.close()
        uvloop.run(main())
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "STATUS HTTP/1.1 500 Internal Server Error" in proc.stdout, proc.stdout + proc.stderr
    assert "OUTCOME [" in proc.stdout and "SystemError" not in proc.stdout + proc.stderr, (
        proc.stdout + proc.stderr
    )


def test_memory_exhaustion_in_send_is_memory_error() -> None:
    """A C++ allocation failure inside send() surfaces as MemoryError in the app; it never unwinds through
    CPython frames (which would abort the process)."""
    proc = run_script(
        """
        import resource
        outcome = []
        async def app(scope, receive, send):
            value = b"a" * (200 << 20)
            # Leave room for Python, but not for the core to copy the 200 MiB header into its output buffer.
            with open("/proc/self/status") as f:
                vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
            resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), resource.RLIM_INFINITY))
            try:
                await send({"type": "http.response.start", "status": 200, "headers": [(b"x-big", value)]})
            except MemoryError:
                outcome.append("MemoryError")
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
            del value
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        async def main():
            core, port = serve(app)
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n")
            data = await asyncio.wait_for(r.read(), 10)
            print("STATUS", data.split(b"\\r\\n")[0].decode(), data.endswith(b"ok"))
            print("OUTCOME", outcome)
            core.close()
        uvloop.run(main())
        """
    )
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert "STATUS HTTP/1.1 200 OK True" in proc.stdout, proc.stdout + proc.stderr
    assert "OUTCOME ['MemoryError']" in proc.stdout, proc.stdout + proc.stderr
