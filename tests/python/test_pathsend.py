"""Files as responses: ASGI ``http.response.pathsend`` (advertised in scope["extensions"]) sent by the core
with sendfile(2). Starlette's FileResponse and StaticFiles under fasterapi-asgi must answer byte for byte as
under uvicorn (which reads the file in Python); the file's bytes never go through Python here."""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import ServerProcess, fd_count, rss_kb, start_server

APP = "files_app:app"
NATIVE = ("--native", "files_app:native_routes")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("files")
    (d / "small.txt").write_bytes(b"hello, file\n")
    (d / "empty.txt").write_bytes(b"")
    (d / "page.html").write_text("<h1>hi</h1>\n")
    big = os.urandom(1 << 20) * 12  # 12 MiB
    (d / "big.bin").write_bytes(big)
    (d / "sub").mkdir()
    (d / "sub" / "index.html").write_text("<p>index</p>\n")
    return d


@pytest.fixture(scope="module")
def servers(files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    os.environ["FA_FILES_DIR"] = str(files)
    started = {
        "fasterapi": start_server("fasterapi", APP, NATIVE, logs),
        "uvicorn": start_server("uvicorn", APP, (), logs),
    }
    yield started
    for srv in started.values():
        srv.stop()
    os.environ.pop("FA_FILES_DIR", None)


def metric(srv: ServerProcess, name: str) -> int:
    text = httpx.get(f"{srv.url}/metrics", trust_env=False).text
    m = re.search(rf"^{name} (\d+)", text, re.M)
    assert m is not None, text
    return int(m.group(1))


def comparable(r: httpx.Response) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers (without date and server) and body; a multipart response's boundary is masked."""
    headers = sorted((k, v) for k, v in r.headers.items() if k not in ("date", "server"))
    content = r.content
    m = re.search(r"boundary=(\w+)", r.headers.get("content-type", ""))
    if m is not None:
        headers = [(k, v.replace(m.group(1), "BOUNDARY")) for k, v in headers]
        content = content.replace(m.group(1).encode(), b"BOUNDARY")
    return r.status_code, headers, content


CASES: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/static/small.txt", {}),
    ("HEAD", "/static/small.txt", {}),
    ("GET", "/static/empty.txt", {}),
    ("GET", "/static/page.html", {}),
    ("GET", "/static/big.bin", {}),
    ("GET", "/file/big.bin", {}),
    ("GET", "/static/sub/", {}),
    ("GET", "/static/sub", {}),
    ("GET", "/static/nope.txt", {}),
    ("GET", "/static/../files_app.py", {}),
    ("GET", "/static/%2e%2e/files_app.py", {}),
    ("GET", "/static/big.bin", {"range": "bytes=0-0"}),
    ("GET", "/static/big.bin", {"range": "bytes=-10"}),
    ("GET", "/static/big.bin", {"range": f"bytes={12 * 2**20 - 1}-"}),
    ("GET", "/static/big.bin", {"range": f"bytes={12 * 2**20}-"}),
    ("GET", "/static/big.bin", {"range": "bytes=0-1,5-9"}),
    ("GET", "/static/small.txt", {"range": "bytes=5-2"}),
    ("HEAD", "/static/big.bin", {"range": "bytes=0-99"}),
]


@pytest.mark.parametrize(("method", "path", "headers"), CASES)
def test_same_bytes_as_uvicorn(
    method: str, path: str, headers: dict[str, str], servers: dict[str, ServerProcess]
) -> None:
    answers = []
    for srv in servers.values():
        with httpx.Client(base_url=srv.url, trust_env=False, timeout=30) as client:
            answers.append(comparable(client.request(method, path, headers=headers)))
    assert answers[0] == answers[1]


def test_conditional_requests_match_uvicorn(servers: dict[str, ServerProcess]) -> None:
    first = httpx.get(f"{servers['uvicorn'].url}/static/small.txt", trust_env=False)
    for condition in (
        {"if-none-match": first.headers["etag"]},
        {"if-modified-since": first.headers["last-modified"]},
        {"if-none-match": '"other"'},
    ):
        answers = [
            comparable(httpx.get(f"{srv.url}/static/small.txt", headers=condition, trust_env=False))
            for srv in servers.values()
        ]
        assert answers[0] == answers[1], condition


def test_file_bytes_go_by_sendfile(servers: dict[str, ServerProcess], files: Path) -> None:
    srv = servers["fasterapi"]
    before = metric(srv, "fasterapi_sendfile_bytes_total")
    sent_before = metric(srv, "fasterapi_files_sent_total")
    r = httpx.get(f"{srv.url}/file/big.bin", trust_env=False, timeout=30)
    assert hashlib.sha256(r.content).digest() == hashlib.sha256((files / "big.bin").read_bytes()).digest()
    assert metric(srv, "fasterapi_sendfile_bytes_total") - before == 12 * 2**20
    assert metric(srv, "fasterapi_files_sent_total") - sent_before == 1


def raw_get(port: int, path: str, *, keep_alive: bool = False, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    connection = "keep-alive" if keep_alive else "close"
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: {connection}\r\n\r\n".encode())
    return s


class Reader:
    """Responses read off one socket in order; bytes past one response wait for the next."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.buf = b""

    def response(self, pause: float = 0.0) -> tuple[bytes, bytes]:
        """The head and the Content-Length body of the next response."""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(65536)
            assert chunk, f"closed before a response head: {self.buf!r}"
            self.buf += chunk
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.I).group(1))  # type: ignore[union-attr]
        parts = [rest]
        have = len(rest)
        while have < length:
            chunk = self.s.recv(65536)
            assert chunk, f"closed after {have} of {length} bytes"
            parts.append(chunk)
            have += len(chunk)
            if pause:
                time.sleep(pause)
        data = b"".join(parts)
        self.buf = data[length:]
        return head, data[:length]


def read_response(s: socket.socket, pause: float = 0.0) -> tuple[bytes, bytes]:
    return Reader(s).response(pause)


def test_slow_reader_gets_the_whole_file(servers: dict[str, ServerProcess], files: Path) -> None:
    """The socket fills up again and again: the core waits for it without blocking anyone else."""
    srv = servers["fasterapi"]
    with raw_get(srv.port, "/file/big.bin", rcvbuf=16384) as s:
        time.sleep(0.3)  # the first sendfile fills the buffers and has to wait
        assert httpx.get(f"{srv.url}/static/small.txt", trust_env=False).content == b"hello, file\n"
        _, body = read_response(s, pause=0.0005)
    assert body == (files / "big.bin").read_bytes()


def test_keep_alive_after_files(servers: dict[str, ServerProcess], files: Path) -> None:
    srv = servers["fasterapi"]
    with raw_get(srv.port, "/file/big.bin", keep_alive=True) as s:
        reader = Reader(s)
        _, body = reader.response()
        assert len(body) == 12 * 2**20
        for path, want in (("/static/small.txt", b"hello, file\n"), ("/file/small.txt", b"hello, file\n")):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert reader.response()[1] == want
        # Pipelined: a file response, then an ordinary one, in order.
        s.sendall(
            b"GET /file/page.html HTTP/1.1\r\nHost: x\r\n\r\nGET /raw/events HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert reader.response()[1] == (files / "page.html").read_bytes()
        assert reader.response()[0].startswith(b"HTTP/1.1 200")


def test_clients_leaving_mid_file_leak_nothing(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    httpx.get(f"{srv.url}/static/small.txt", trust_env=False)
    baseline = fd_count(srv.proc.pid)
    for _ in range(20):
        s = raw_get(srv.port, "/file/big.bin", rcvbuf=8192)
        s.recv(1000)
        s.close()
    deadline = time.monotonic() + 5
    while fd_count(srv.proc.pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(srv.proc.pid) <= baseline
    assert httpx.get(f"{srv.url}/static/small.txt", trust_env=False).status_code == 200


def chunked_body(s: socket.socket) -> bytes:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower()
    body = b""
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return body
        body, rest = body + rest[:size], rest[size + 2 :]


def test_raw_pathsend_chunked_and_errors(servers: dict[str, ServerProcess], files: Path) -> None:
    srv = servers["fasterapi"]
    with raw_get(srv.port, "/raw/chunked/big.bin") as s:
        assert chunked_body(s) == (files / "big.bin").read_bytes()
    # A Content-Length that is not the file's size, or a file that does not exist: send() raises in the app,
    # the response already started, so the connection closes (the client never gets a wrong body).
    cases = (("/raw/wrong-length/small.txt", "RuntimeError"), ("/raw/missing", "FileNotFoundError"))
    for path, error in cases:
        with raw_get(srv.port, path) as s:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and body == b""
        assert httpx.get(f"{srv.url}/raw/events", trust_env=False).json()[-1] == error
    assert srv.alive()


def test_head_request_with_pathsend_has_no_body(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(
        b"HEAD /raw/plain/small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /raw/plain/small.txt HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    data = b""
    while data.count(b"hello, file\n") < 1:
        data += s.recv(65536)
    s.close()
    assert data.count(b"HTTP/1.1 200") == 2
    assert data.endswith(b"\r\n\r\nhello, file\n")  # the HEAD answer carried no body


def test_pathsend_over_tls(files: Path, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    os.environ["FA_FILES_DIR"] = str(files)
    pem = str(tmp_path / "server.pem")
    srv = start_server("fasterapi", APP, ("--ssl-certfile", pem, *NATIVE), tmp_path)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        with httpx.Client(verify=ctx, trust_env=False, timeout=30) as client:
            for path in ("/file/big.bin", "/static/small.txt", "/file/big.bin"):
                r = client.get(f"https://127.0.0.1:{srv.port}{path}")
                assert r.content == (files / path.rsplit("/", 1)[1]).read_bytes()
            # TLS: read into the TLS writer, not sendfile.
            metrics = client.get(f"https://127.0.0.1:{srv.port}/metrics").text
            assert re.search(r"^fasterapi_sendfile_bytes_total 0$", metrics, re.M)
            assert re.search(r"^fasterapi_files_sent_total 3$", metrics, re.M)
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_one_gigabyte_file_keeps_memory_flat(files: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.bin"
    with huge.open("wb") as f:  # sparse: no disk needed, the kernel reads zeros
        f.truncate(1 << 30)
    os.environ["FA_FILES_DIR"] = str(tmp_path)
    srv = start_server("fasterapi", APP, NATIVE, tmp_path)
    try:
        httpx.get(f"{srv.url}/metrics", trust_env=False)
        before = rss_kb(srv.proc.pid)
        received = 0
        with raw_get(srv.port, "/file/huge.bin") as s:
            peak = before
            data = b""
            while b"\r\n\r\n" not in data:
                data += s.recv(65536)
            received = len(data.partition(b"\r\n\r\n")[2])
            buf = bytearray(1 << 20)
            while (n := s.recv_into(buf)) > 0:
                received += n
                if received % (64 << 20) < (1 << 20):
                    peak = max(peak, rss_kb(srv.proc.pid))
        assert received == 1 << 30
        assert peak - before < 16 * 1024, (before, peak)  # KB: the file never passes through the process
    finally:
        srv.stop()
        os.environ["FA_FILES_DIR"] = str(files)


# /sys attribute files report a page (4096 bytes) as their size and hold a few bytes.
SHORT_FILES = ("/sys/devices/system/cpu/online", "/sys/kernel/mm/transparent_hugepage/enabled")


def test_file_shorter_than_its_size_is_cut_short_and_send_returns(servers: dict[str, ServerProcess]) -> None:
    """The head and the bytes the file holds go out, then the connection closes before the Content-Length
    (what a client of uvicorn sees too); the app's send() returns instead of waiting forever."""
    path = next(
        (p for p in SHORT_FILES if os.path.isfile(p) and os.path.getsize(p) > len(Path(p).read_bytes())), None
    )
    if path is None:
        pytest.skip("no /sys file here reports more bytes than it holds")
    srv = servers["fasterapi"]
    with raw_get(srv.port, "/raw/plain/" + path) as s:
        s.settimeout(10)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), data[:200]
    assert f"content-length: {os.path.getsize(path)}".encode() in head.lower()
    assert body == Path(path).read_bytes()
    deadline = time.monotonic() + 5
    while httpx.get(f"{srv.url}/raw/events", trust_env=False).json()[-1:] != ["sent"]:
        assert time.monotonic() < deadline, "the app's send(pathsend) never returned"
        time.sleep(0.05)
    assert srv.alive()
