"""Seed corpora for the fuzz targets: every request of tests/cpp/data/parser_cases.txt (prefixed with the two
control bytes fuzz_request_parser reads first), a few WebSocket frame sequences, a few response heads, and
request streams for the connection target.

    python tests/fuzz/make_seeds.py OUT_DIR      # writes OUT_DIR/<target>/seed-N
"""

from __future__ import annotations

import os
import re
import struct
import sys
import zlib
from pathlib import Path

CASES = Path(__file__).resolve().parents[1] / "cpp" / "data" / "parser_cases.txt"


def unescape(text: str) -> bytes:
    out = bytearray()
    i = 0
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text):
            n = text[i + 1]
            simple = {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\", "s": b" "}
            if n in simple:
                out += simple[n]
                i += 2
                continue
            if n == "x":
                out.append(int(text[i + 2 : i + 4], 16))
                i += 4
                continue
        out += c.encode("latin-1")
        i += 1
    return bytes(out)


def request_seeds() -> list[bytes]:
    seeds: list[bytes] = []
    current: bytearray | None = None
    for line in CASES.read_text(encoding="latin-1").splitlines():
        if line.startswith("=== "):
            if current:
                seeds.append(bytes(current))
            current = bytearray()
        elif current is not None and line.startswith("> "):
            current += unescape(line[2:])
        elif current is not None and (m := re.match(r"\* (\d+) (.*)", line)):
            current += unescape(m.group(2)) * min(int(m.group(1)), 4096)
    if current:
        seeds.append(bytes(current))
    return [bytes([flags, split]) + s for s in seeds for flags, split in ((1, 0), (0, 7))]


def frame(opcode: int, payload: bytes, fin: bool = True, rsv1: bool = False) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", first, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, n)
    return head + mask + masked


def ws_seeds() -> list[bytes]:
    fragmented = deflated(b"fragment " * 20)
    seqs = [
        frame(1, b"hello"),
        frame(2, b"\x00" * 300),
        frame(1, b"frag", fin=False) + frame(9, b"ping") + frame(0, b"ment"),
        frame(8, struct.pack("!H", 1000) + b"bye"),
        frame(1, "caf\u00e9".encode()) + frame(10, b""),
        frame(2, b"x" * 70000),
        # permessage-deflate (every input also runs with an inflater): compressed, fragmented, a bomb.
        frame(1, deflated(b"hello hello hello"), rsv1=True) + frame(2, b"plain"),
        frame(2, fragmented[:7], fin=False, rsv1=True) + frame(0, fragmented[7:]),
        frame(2, deflated(b"\0" * 200000), rsv1=True),
    ]
    return [bytes([4, 3]) + s for s in seqs]


def deflated(data: bytes) -> bytes:
    """A permessage-deflate payload: raw deflate, sync-flushed, without the 00 00 FF FF tail."""
    z = zlib.compressobj(wbits=-15)
    return (z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH))[:-4]


def response_seeds() -> list[bytes]:
    heads = [
        b"content-type\xfftext/plain\xffcontent-length\xff5",
        b"transfer-encoding\xffchunked\xffx-a\xffb",
        b"connection\xffclose",
        b"content-length\xff5\xffcontent-length\xff6",
        b"x-bad\xffa\r\nb",
    ]
    return [bytes([200, 0, 2, 5]) + h for h in heads]


def connection_seeds() -> list[bytes]:
    """Request streams split into several sends (0xFE), pipelined, with bodies, and a WebSocket session."""
    sep = b"\xfe"
    seeds = [s[2:] for s in request_seeds()[::2]]
    seeds += [
        b"GET /native HTTP/1.1\r\nHost: x\r\n\r\n" + sep + b"GET /now HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /items/7 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab" + sep + b"cde",
        b"POST /app HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc"
        + sep
        + b"\r\n0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        + sep
        + frame(1, b"hello")
        + sep
        + frame(9, b"p")
        + frame(1, b"close"),
    ]
    return seeds + h2_connection_seeds()


def h2_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + sid.to_bytes(4, "big") + payload


def h2_connection_seeds() -> list[bytes]:
    """HTTP/2 (the fuzz server has --http2 on): the preface, SETTINGS, requests on several streams with
    bodies, resets, window updates, pings, a GOAWAY. Header blocks use HPACK's static table only (0x82 GET,
    0x83 POST, 0x86 http; 0x41/0x44 literal :authority/:path)."""
    sep = b"\xfe"
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)

    def head(method: int, path: bytes) -> bytes:
        return bytes([method, 0x86]) + b"\x41\x01x" + b"\x44" + bytes([len(path)]) + path

    get_native = h2_frame(1, 0x5, 1, head(0x82, b"/native"))
    get_now = h2_frame(1, 0x5, 3, head(0x82, b"/now"))
    post = h2_frame(1, 0x4, 5, head(0x83, b"/app")) + h2_frame(0, 0, 5, b"ab") + sep + h2_frame(0, 1, 5, b"c")
    return [
        preface + get_native + sep + get_now + sep + post,
        preface[:10] + sep + preface[10:] + get_now,
        preface
        + h2_frame(4, 1, 0)
        + h2_frame(6, 0, 0, b"12345678")
        + h2_frame(8, 0, 0, (1000).to_bytes(4, "big"))
        + h2_frame(1, 0x4, 1, head(0x83, b"/app"))
        + h2_frame(3, 0, 1, (8).to_bytes(4, "big"))
        + sep
        + get_now.replace(b"\x00\x00\x00\x03", b"\x00\x00\x00\x07", 1)
        + h2_frame(7, 0, 0, (0).to_bytes(8, "big")),
    ]


def tls_connection_seeds() -> list[bytes]:
    """The connection seeds over TLS: the first byte picks the ALPN the client offers (1: h2, 0: http/1.1)."""
    h2 = h2_connection_seeds()
    return [b"\x01" + s for s in h2] + [b"\x00" + s for s in connection_seeds() if s not in h2]


def main(argv: list[str]) -> int:
    out = Path(argv[1])
    for target, seeds in (
        ("fuzz_request_parser", request_seeds()),
        ("fuzz_ws_frames", ws_seeds()),
        ("fuzz_response_head", response_seeds()),
        ("fuzz_connection", connection_seeds()),
        ("fuzz_tls_connection", tls_connection_seeds()),
    ):
        d = out / target
        d.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds):
            (d / f"seed-{i}").write_bytes(seed)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
