"""An HTTP/2 client for the tests, at two levels over one real socket.

- ``H2Client``: the ``h2`` library's connection state machine (a conforming client): requests, responses,
  flow control, resets, with the server's events kept for the test to inspect.
- ``send_frame`` / ``read_frames``: raw frames built and parsed with ``hyperframe``, for what a conforming
  client never sends (protocol violations, floods) and to see exactly which frames the server answers with.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.events
import h2.settings
from hyperframe.frame import Frame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class Response:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    informational: list[int] = field(default_factory=list)  # 1xx statuses received first
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset_code: int | None = None  # RST_STREAM from the server

    def header(self, name: bytes) -> bytes | None:
        for n, v in self.headers:
            if n == name:
                return v
        return None


class H2Client:
    def __init__(
        self,
        port: int,
        *,
        settings: dict[int, int] | None = None,
        tls: ssl.SSLContext | None = None,
        auto_ack: bool = True,
        timeout: float = 5.0,
    ) -> None:
        sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
            sock = tls.wrap_socket(sock, server_hostname="localhost")
            self.alpn = sock.selected_alpn_protocol()
        self.sock = sock
        self.timeout = timeout
        self.auto_ack = auto_ack  # acknowledge received DATA (WINDOW_UPDATE) as the app reads it
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.responses: dict[int, Response] = {}
        self.events: list[Any] = []
        self.closed = False  # the server closed the connection
        self.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        end: bool = True,
        authority: str = "localhost",
        scheme: str = "http",
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", scheme), (":authority", authority), (":path", path), *headers]
        self.conn.send_headers(
            sid, [(k.encode(), v.encode()) for k, v in hs], end_stream=end and body is None
        )
        self.responses[sid] = Response()
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, *, end: bool = True) -> None:
        """As much of ``body`` as the flow-control windows allow now; the rest as they open."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            last = len(view) <= window
            self.conn.send_data(sid, bytes(view[:window]), end_stream=end and last)
            view = view[window:]
            self.flush()
            if end and last:
                return
        if end:
            self.conn.end_stream(sid)
            self.flush()

    def read_once(self, timeout: float | None = None) -> list[Any]:
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return []
        events = self.conn.receive_data(data)
        for ev in events:
            self._note(ev)
        self.events.extend(events)
        self.flush()
        return events

    def _note(self, ev: Any) -> None:
        sid = getattr(ev, "stream_id", None)
        r = self.responses.get(sid) if sid is not None else None
        if isinstance(ev, h2.events.InformationalResponseReceived) and r is not None:
            r.informational.append(int(dict(ev.headers)[b":status"]))
        elif isinstance(ev, h2.events.ResponseReceived) and r is not None:
            r.headers = [(n, v) for n, v in ev.headers if not n.startswith(b":")]
            r.status = int(dict(ev.headers)[b":status"])
        elif isinstance(ev, h2.events.DataReceived) and r is not None:
            r.body += ev.data
            if self.auto_ack:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        elif isinstance(ev, h2.events.TrailersReceived) and r is not None:
            r.trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamEnded) and r is not None:
            r.ended = True
        elif isinstance(ev, h2.events.StreamReset) and r is not None:
            r.reset_code = int(ev.error_code)

    def pump(self, until: Callable[[], bool], timeout: float | None = None) -> bool:
        """Read until ``until()`` holds (True), the connection closes or the time is up (False)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not until():
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return until()
            self.read_once(min(left, 0.5))
        return True

    def response(self, sid: int, timeout: float | None = None) -> Response:
        r = self.responses[sid]
        if not self.pump(lambda: r.ended or r.reset_code is not None, timeout):
            raise AssertionError(f"stream {sid}: no complete response (closed={self.closed}, {r})")
        return r

    def get(self, path: str, timeout: float | None = None, **kw: Any) -> Response:
        return self.response(self.request("GET", path, **kw), timeout)

    def terminated(self) -> h2.events.ConnectionTerminated | None:
        for ev in self.events:
            if isinstance(ev, h2.events.ConnectionTerminated):
                return ev
        return None


# ---- raw frames ----


def raw_connect(port: int, *, settings: bytes = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00") -> socket.socket:
    """A connection that has sent the preface and an empty SETTINGS frame, nothing else."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(PREFACE + settings)
    return sock


def send_frame(sock: socket.socket, frame: Frame) -> None:
    sock.sendall(frame.serialize())


class Frames(list[Frame]):
    """Frames read, and whether the server closed the connection after them."""

    closed = False


def read_frames(
    sock: socket.socket, timeout: float = 2.0, until: Callable[[Frame], bool] | None = None
) -> Frames:
    """Frames from the server until ``until(frame)``, the connection closes or ``timeout`` passes."""
    frames = Frames()
    buf = b""
    deadline = time.monotonic() + timeout
    closed = False
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            closed = True
            break
        buf += chunk
        done = False
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            frames.append(frame)
            if until is not None and until(frame):
                done = True
        if done:
            break
    frames.closed = closed
    return frames


def closed_by_peer(sock: socket.socket, timeout: float = 2.0) -> bool:
    """Whether the server closes the connection within ``timeout`` (frames before the close are read)."""
    return read_frames(sock, timeout).closed


def settings_max_concurrent(frames: Iterable[Frame]) -> int | None:
    for f in frames:
        if f.type == 0x4 and "ACK" not in f.flags:
            return dict(f.settings).get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
    return None
