"""A raw WebSocket client over one socket, for tests that look at the wire: RSV bits, pings the server sends,
pongs withheld, hand-made (compressed) frames. Server frames are read whole, with FIN/RSV1/opcode.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
import zlib
from dataclasses import dataclass

# What a permessage-deflate sender strips and the receiver puts back (RFC 7692 7.2.1).
TAIL = b"\x00\x00\xff\xff"


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    payload: bytes

    @property
    def close_code(self) -> int | None:
        assert self.opcode == 0x8, self
        return struct.unpack("!H", self.payload[:2])[0] if self.payload else None


def client_frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    b0 = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    key = os.urandom(4)
    mask = (key * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big") if n else b""
    return head + key + masked


def deflate_payload(data: bytes, level: int = 6) -> bytes:
    """One message as a permessage-deflate client sends it (fresh context, no tail)."""
    z = zlib.compressobj(level, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(TAIL)
    return out[:-4]


class WireClient:
    def __init__(self, sock: socket.socket, head: bytes) -> None:
        self.sock = sock
        self.buf = bytearray()
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = [
            (k.strip().lower().decode("latin-1"), v.strip().decode("latin-1"))
            for k, _, v in (line.partition(b":") for line in lines[1:] if line)
        ]
        self.head = head

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k == name.lower()]
        return values[-1] if values else None

    def close(self) -> None:
        self.sock.close()

    def read_body(self, timeout: float = 5.0) -> bytes:
        """The body of a non-101 answer (by its Content-Length)."""
        n = int(self.header("content-length") or 0)
        self._fill(n, time.monotonic() + timeout)
        return bytes(self.buf[:n])

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frame(self, opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> None:
        self.sock.sendall(client_frame(opcode, payload, fin, rsv1))

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no complete frame in time ({len(self.buf)} bytes buffered)")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                chunk = b""
            except TimeoutError:
                continue
            if not chunk:
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes of a frame")
            self.buf += chunk

    def read_frame(self, timeout: float = 5.0) -> Frame:
        """The next server frame; TimeoutError when none arrives in time, EOFError when the stream ends."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        assert b1 & 0x80 == 0, "server frames must not be masked"
        n, hdr = b1 & 0x7F, 2
        if n == 126:
            self._fill(4, deadline)
            n, hdr = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._fill(10, deadline)
            n, hdr = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._fill(hdr + n, deadline)
        payload = bytes(self.buf[hdr : hdr + n])
        del self.buf[: hdr + n]
        return Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload)

    def read_until_close(self, timeout: float = 5.0, answer_pings: bool = True) -> Frame:
        deadline = time.monotonic() + timeout
        while True:
            frame = self.read_frame(max(0.0, deadline - time.monotonic()))
            if frame.opcode == 0x8:
                return frame
            if frame.opcode == 0x9 and answer_pings:
                self.send_frame(0xA, frame.payload)

    def assert_eof(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        try:
            self._fill(len(self.buf) + 1, deadline)
        except EOFError:
            return
        raise AssertionError(f"expected the server to close the stream, got {bytes(self.buf[:100])!r}")


def connect(port: int, path: str = "/echo", extensions: list[str] | None = None) -> WireClient:
    """Send the handshake (`extensions` as Sec-WebSocket-Extensions lines) and read the response head."""
    key = base64.b64encode(os.urandom(16))
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    ext = b"".join(b"Sec-WebSocket-Extensions: " + e.encode("latin-1") + b"\r\n" for e in extensions or [])
    sock.sendall(
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n" + ext + b"\r\n"
    )
    data = bytearray()
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    end = data.find(b"\r\n\r\n")
    client = WireClient(sock, bytes(data[:end]) if end >= 0 else bytes(data))
    client.buf += data[end + 4 :] if end >= 0 else b""
    return client
