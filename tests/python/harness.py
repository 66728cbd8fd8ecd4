"""Test harness: real server subprocesses on free ports, and a raw HTTP/1.x socket client.

Two server kinds run from the same test body:

- ``fasterapi``: ``python -m fasterapi_asgi APP ...``
- ``uvicorn``:   ``python -m uvicorn APP --loop uvloop --http httptools ...`` (the reference)

Servers run from the repository root with ``--app-dir tests/python/apps``; their stdout and stderr go
to one log file that tests can read (``ServerProcess.log()``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]


def _package_parent() -> Path:
    """The sys.path entry the tests' fasterapi_asgi comes from: the checkout for an editable install, the
    site-packages of an installed wheel (the release path's run). A subprocess that needs the package on its
    PYTHONPATH gets this one, so it runs the same copy as the tests."""
    import importlib.util

    spec = importlib.util.find_spec("fasterapi_asgi")
    assert spec is not None and spec.origin is not None, "fasterapi_asgi is not installed"
    return Path(spec.origin).resolve().parents[1]


PACKAGE_PARENT = _package_parent()
APP_DIR = "tests/python/apps"
KINDS = ("fasterapi", "uvicorn")
START_TIMEOUT = 15.0

# Sizes used by the limit tests.  They must exceed the core's limits (header section, URL) while
# the URL one stays below the header-section limit, so that the URL limit is the one that trips.
HEADER_SECTION_TOO_LARGE = 256 * 1024
URL_TOO_LONG = 48 * 1024


_port_cursor: list[int] = []


def free_port() -> int:
    """A port no socket holds now, for a server about to start. The kernel picks it, unless FA_TEST_PORTS
    (``LOW-HIGH``) is set: the test command gives each of the runs it runs side by side its own range, below
    the kernel's ephemeral ports, so that two runs never hand the same free port to two servers (the second
    server's bind would fail, and its test would talk to the other run's server)."""
    span = os.environ.get("FA_TEST_PORTS")
    if not span:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])
    low, high = (int(bound) for bound in span.split("-"))
    if not _port_cursor:
        _port_cursor.append(low + os.getpid() % (high - low + 1))
    for _ in range(high - low + 1):  # the next port of the range no socket holds, round and round
        port = _port_cursor[0]
        _port_cursor[0] = low if port >= high else port + 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free port in FA_TEST_PORTS={span}")


def server_command(kind: str, app: str, port: int, flags: tuple[str, ...]) -> list[str]:
    common = [app, "--host", "127.0.0.1", "--port", str(port), "--app-dir", APP_DIR]
    if kind == "fasterapi":
        return [sys.executable, "-m", "fasterapi_asgi", *common, *flags]
    if kind == "uvicorn":
        loop = [] if "--loop" in flags else ["--loop", "uvloop"]
        return [sys.executable, "-m", "uvicorn", *common, *loop, "--http", "httptools", *flags]
    raise ValueError(f"unknown server kind {kind!r}")


@dataclass
class ServerProcess:
    kind: str
    app: str
    flags: tuple[str, ...]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] = field(repr=False)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def log_excerpt(self, limit: int = 6000) -> str:
        """The end of the log with long lines shortened, for failure messages."""
        lines = [
            ln if len(ln) <= 300 else ln[:300] + f"...[{len(ln)} chars]" for ln in self.log().splitlines()
        ]
        return "\n".join(lines)[-limit:]

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            log = self.log()
            if text in log:
                return log
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{text!r} not in {self.kind} log after {timeout}s:\n{self.log_excerpt()}"
                )
            time.sleep(0.02)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 5 s. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return int(self.proc.returncode)


def launch_server(kind: str, app: str, flags: tuple[str, ...], log_dir: Path) -> ServerProcess:
    """Start a server process without waiting for it (for tests of start-up failures)."""
    port = free_port()
    log_path = log_dir / f"{kind}-{port}.log"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            server_command(kind, app, port, flags),
            cwd=REPO_ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    return ServerProcess(kind, app, flags, port, log_path, proc)


def wait_accepting(server: ServerProcess, timeout: float = START_TIMEOUT) -> None:
    """Poll connect until the server accepts; fail with its output if it exits or times out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.proc.poll() is not None:
            raise RuntimeError(
                f"{server.kind} server {server.app} {server.flags} exited with code "
                f"{server.proc.returncode} before accepting connections; output:\n{server.log_excerpt()}"
            )
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            code = server.stop()
            raise RuntimeError(
                f"{server.kind} server {server.app} {server.flags} not accepting on port {server.port} "
                f"after {timeout}s (exit code {code}); output:\n{server.log_excerpt()}"
            )
        time.sleep(0.05)


def start_server(kind: str, app: str, flags: tuple[str, ...], log_dir: Path) -> ServerProcess:
    """Start a server and wait until it accepts connections (fails with its log otherwise)."""
    server = launch_server(kind, app, flags, log_dir)
    wait_accepting(server)
    return server


class ServerPool:
    """Servers shared per (kind, app, flags); all stopped by ``close``."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.servers: dict[tuple[str, str, tuple[str, ...]], ServerProcess] = {}

    def get(self, kind: str, app: str = "raw_app:app", *flags: str) -> ServerProcess:
        key = (kind, app, tuple(flags))
        server = self.servers.get(key)
        if server is None or not server.alive():
            server = start_server(kind, app, tuple(flags), self.log_dir)
            self.servers[key] = server
        return server

    def reap_dead(self) -> list[ServerProcess]:
        """Remove and return the servers whose process has exited."""
        dead = [srv for srv in self.servers.values() if not srv.alive()]
        self.servers = {key: srv for key, srv in self.servers.items() if srv.alive()}
        return dead

    def close(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()


def fd_count(pid: int) -> int:
    """Open descriptors of a server process (leak checks)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_kb(pid: int) -> int:
    """Resident memory of a process, KiB."""
    with open(f"/proc/{pid}/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])


def app_events(server: ServerProcess, event_id: str, expect: int = 1) -> list[Any]:
    """What the test app recorded under ``event_id`` (``GET /events?id=``), polled for up to 5 s until
    there are ``expect`` entries: apps record some events (a WebSocket's disconnect) after the client has
    seen the end."""
    import httpx

    deadline = time.monotonic() + 5
    while True:
        got = httpx.get(f"{server.url}/events", params={"id": event_id}, trust_env=False).json()
        if len(got) >= expect or time.monotonic() > deadline:
            return list(got)
        time.sleep(0.02)


# ---------------------------------------------------------------------------------------------
# Raw HTTP client


@dataclass
class RawResponse:
    version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    head: bytes

    def header(self, name: str) -> str | None:
        values = self.header_all(name)
        return values[-1] if values else None

    def header_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def chunked(self) -> bool:
        return "chunked" in (self.header("transfer-encoding") or "").lower()


class ConnectionClosed(AssertionError):
    """The peer closed the connection before a complete response arrived."""

    def __init__(self, message: str, received: bytes) -> None:
        super().__init__(message)
        self.received = received


class RawClient:
    """A blocking HTTP/1.x client over one TCP connection, for framing-level tests."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = bytearray()
        self.eof = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_tolerant(self, data: bytes) -> None:
        """Send, ignoring the server closing or resetting early (it may answer before reading all)."""
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            self.sock.sendall(data)

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = self.sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                got = bytes(self.buf)
                raise ConnectionClosed(f"connection closed after {len(got)} of {n} bytes", got)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_exact(self, n: int) -> bytes:
        return self._take(n)

    def _line(self) -> bytes:
        while True:
            idx = self.buf.find(b"\r\n")
            if idx >= 0:
                out = bytes(self.buf[:idx])
                del self.buf[: idx + 2]
                return out
            if not self._fill():
                got = bytes(self.buf)
                raise ConnectionClosed(f"connection closed in the middle of a line: {got[:200]!r}", got)

    def read_head(self) -> tuple[str, int, str, list[tuple[str, str]], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                got = bytes(self.buf)
                raise ConnectionClosed(f"connection closed before a full response head: {got[:300]!r}", got)
        idx = self.buf.find(b"\r\n\r\n")
        head = bytes(self.buf[: idx + 4])
        del self.buf[: idx + 4]
        lines = head[:-4].split(b"\r\n")
        version, _, rest = lines[0].decode("latin-1").partition(" ")
        status_text, _, reason = rest.partition(" ")
        headers: list[tuple[str, str]] = []
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            assert sep, f"malformed response header line {line!r} in {head!r}"
            headers.append((name, value.strip()))
        return version, int(status_text), reason, headers, head

    def read_response(self, method: str = "GET", allow_interim: bool = False) -> RawResponse:
        """Read one response. Interim (1xx) responses are returned only if ``allow_interim``."""
        while True:
            version, status, reason, headers, head = self.read_head()
            response = RawResponse(version, status, reason, headers, b"", head)
            if 100 <= status < 200:
                if allow_interim:
                    return response
                continue
            break
        if method == "HEAD" or status in (204, 304):
            return response
        if response.chunked:
            parts = []
            while True:
                size_line = self._line()
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    while self._line():  # trailers
                        pass
                    break
                parts.append(self._take(size))
                assert self._take(2) == b"\r\n", "chunk not followed by CRLF"
            response.body = b"".join(parts)
        elif response.header("content-length") is not None:
            response.body = self._take(int(response.header("content-length") or "0"))
        else:
            response.body = self.read_to_eof()
        return response

    def read_to_eof(self, timeout: float = 5.0) -> bytes:
        """Everything until the peer closes (or resets) the connection."""
        self.sock.settimeout(timeout)
        while self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """True if the peer closes within ``timeout``; data arriving meanwhile is kept in the buffer."""
        old = self.sock.gettimeout()
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
                try:
                    if not self._fill():
                        return True
                except TimeoutError:
                    return False
        finally:
            self.sock.settimeout(old)

    def pending(self, wait: float = 0.2) -> bytes:
        """Bytes that arrive within ``wait`` seconds (without treating a close as an error)."""
        self.wait_closed(wait)
        return bytes(self.buf)


def request(
    method: str,
    target: str,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    """Serialise one request; a Host header and (when there is a body) Content-Length are added."""
    lines = [f"{method} {target} {version}"]
    names = {k.lower() for k, _ in headers or []}
    if "host" not in names:
        lines.append("Host: 127.0.0.1")
    lines.extend(f"{k}: {v}" for k, v in headers or [])
    if body and content_length and "content-length" not in names and "transfer-encoding" not in names:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"


def decode_jsonable(value: Any) -> Any:
    """Invert raw_app's JSON encoding of scopes ({"$bytes": latin-1 text} -> bytes)."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return value["$bytes"].encode("latin-1")
        return {k: decode_jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode_jsonable(v) for v in value]
    return value
