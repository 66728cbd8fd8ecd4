"""Native static files: ``native.static`` (a directory) and ``native.file(from_disk=True)`` answered by the
C++ core with sendfile(2), against the same app under uvicorn, where ``native.static`` mounts Starlette's
``StaticFiles(html=True)`` (tests/python/apps/static_app.py).

What must match Starlette byte for byte: status, body, content-type, content-length, content-range,
accept-ranges, last-modified, location. Different by design (docs/native-routes.md, "Static files"): the
ETag value (size and mtime in hex instead of an MD5 of them), 304 answers also carrying last-modified, a
range set of several ranges (answered 200 with the whole file; Starlette sends multipart/byteranges), a
malformed range or another unit ("bytes=5-2", "items=0-5": ignored, 200; Starlette 400), and symlinks
(never followed unless ``follow_symlinks=True``; Starlette follows those that stay inside the directory).
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from harness import RawClient, RawResponse, ServerProcess, fd_count, request, rss_kb, start_server

APP = "static_app:app"
BIG = 3 * 2**20 + 17
SECRET = b"TOPSECRET outside the served directory\n"


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("static")
    (base / "secret.txt").write_bytes(SECRET)
    d = base / "www"
    d.mkdir()
    (d / "index.html").write_text("<h1>home</h1>\n")
    (d / "app.js").write_text("console.log(1);\n")
    (d / "style.css").write_text("body{}\n")
    (d / "data.json").write_text('{"a":1}')
    (d / "logo.svg").write_text("<svg/>")
    (d / "empty.txt").write_bytes(b"")
    (d / "noext").write_bytes(b"raw bytes")
    (d / "space name.txt").write_bytes(b"spaced\n")
    (d / "big.bin").write_bytes(os.urandom(BIG))
    (d / "sub").mkdir()
    (d / "sub" / "index.html").write_text("<p>sub</p>\n")
    (d / "sub" / "page.html").write_text("<p>page</p>\n")
    (d / "noindex").mkdir()
    (d / "noindex" / "a.txt").write_text("a\n")
    (d / "packed.js").write_text("let x = 'plain';\n")
    (d / "packed.js.br").write_bytes(b"BROTLI-BYTES")
    (d / "packed.js.gz").write_bytes(b"GZIP-BYTES")
    (d / ".hidden").write_text("hidden\n")
    (d / ".git").mkdir()
    (d / ".git" / "config").write_text("[core]\n")
    (d / "link_out.txt").symlink_to(base / "secret.txt")
    (d / "link_dir").symlink_to(base)
    (d / "link_in.txt").symlink_to(d / "app.js")
    os.mkfifo(d / "pipe")  # not a regular file: 404, and opening it must not block the loop
    return d


@pytest.fixture(scope="module")
def servers(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServerProcess]]:
    logs = tmp_path_factory.mktemp("logs")
    os.environ["FA_STATIC_DIR"] = str(tree)
    started = {
        "fasterapi": start_server("fasterapi", APP, (), logs),
        "uvicorn": start_server("uvicorn", APP, (), logs),
    }
    yield started
    for srv in started.values():
        srv.stop()
    os.environ.pop("FA_STATIC_DIR", None)


def ask(
    srv: ServerProcess, method: str, target: str, headers: list[tuple[str, str]] | None = None
) -> RawResponse:
    with RawClient(srv.port, timeout=30) as c:
        c.send(request(method, target, [*(headers or []), ("Connection", "close")]))
        return c.read_response(method)


MUST_MATCH = ("content-type", "content-length", "content-range", "accept-ranges", "last-modified", "location")


def essentials(r: RawResponse) -> tuple[int, dict[str, str | None], bytes]:
    return r.status, {h: r.header(h) for h in MUST_MATCH}, r.body


N = BIG
CASES: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("GET", "/assets/app.js", []),
    ("GET", "/assets/style.css", []),
    ("GET", "/assets/data.json", []),
    ("GET", "/assets/logo.svg", []),
    ("GET", "/assets/index.html", []),
    ("GET", "/assets/empty.txt", []),
    ("GET", "/assets/noext", []),
    ("GET", "/assets/space%20name.txt", []),
    ("GET", "/assets/big.bin", []),
    ("HEAD", "/assets/big.bin", []),
    ("HEAD", "/assets/app.js", []),
    ("GET", "/assets/", []),
    ("GET", "/assets/sub/", []),
    ("GET", "/assets/sub/page.html", []),
    ("GET", "/assets/sub/page.html/", []),
    ("GET", "/assets/sub", []),
    ("GET", "/assets/sub?x=1", []),
    ("GET", "/assets/noindex/", []),
    ("GET", "/assets/nope.txt", []),
    ("GET", "/assets/sub/nope/deeper.txt", []),
    ("GET", "/assets/big.bin", [("Range", "bytes=0-0")]),
    ("GET", "/assets/big.bin", [("Range", "bytes=0-")]),
    ("GET", "/assets/big.bin", [("Range", "bytes=-10")]),
    ("GET", "/assets/big.bin", [("Range", f"bytes=-{N + 5}")]),
    ("GET", "/assets/big.bin", [("Range", f"bytes={N - 1}-")]),
    ("GET", "/assets/big.bin", [("Range", f"bytes={N - 1}-{N + 100}")]),
    ("GET", "/assets/big.bin", [("Range", f"bytes=100-{2**20}")]),
    ("GET", "/assets/big.bin", [("Range", f"bytes={N}-")]),
    ("GET", "/assets/big.bin", [("Range", "bytes=-0")]),
    ("GET", "/assets/empty.txt", [("Range", "bytes=0-")]),
    ("HEAD", "/assets/big.bin", [("Range", "bytes=0-99")]),
    ("GET", "/download", []),
    ("GET", "/download", [("Range", "bytes=10-19")]),
    ("HEAD", "/download", []),
    ("GET", "/hello", []),
]


@pytest.mark.parametrize(("method", "target", "headers"), CASES)
def test_same_answer_as_starlette_under_uvicorn(
    method: str, target: str, headers: list[tuple[str, str]], servers: dict[str, ServerProcess]
) -> None:
    native, reference = (ask(srv, method, target, headers) for srv in servers.values())
    assert essentials(native) == essentials(reference)
    if native.status in (200, 206) and target != "/hello":
        assert native.header("etag") is not None and native.header("etag") != reference.header("etag")


def test_if_range_and_multiple_ranges(servers: dict[str, ServerProcess], tree: Path) -> None:
    srv = servers["fasterapi"]
    data = (tree / "big.bin").read_bytes()
    first = ask(srv, "GET", "/assets/big.bin")
    # If-Range with the current validators: the range applies; with another one: the whole file.
    for validator in (first.header("etag"), first.header("last-modified")):
        assert validator is not None
        r = ask(srv, "GET", "/assets/big.bin", [("Range", "bytes=5-9"), ("If-Range", validator)])
        assert (r.status, r.body) == (206, data[5:10])
    r = ask(srv, "GET", "/assets/big.bin", [("Range", "bytes=5-9"), ("If-Range", '"stale"')])
    assert (r.status, r.body) == (200, data)
    # Several ranges and a malformed one: ignored (RFC 9110 14.2), the whole file.
    for spec in ("bytes=0-1,5-9", "bytes=5-2", "bytes=x-y", "items=0-5"):
        r = ask(srv, "GET", "/assets/big.bin", [("Range", spec)])
        assert (r.status, r.body, r.header("content-range")) == (200, data, None), spec


def test_conditional_requests(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    first = ask(srv, "GET", "/cached/app.js")
    etag, modified = first.header("etag"), first.header("last-modified")
    assert etag is not None and modified is not None
    assert first.header("cache-control") == "public, max-age=3600"
    for headers in (
        [("If-None-Match", etag)],
        [("If-None-Match", f'"x", W/{etag}')],
        [("If-None-Match", "*")],
        [("If-Modified-Since", modified)],
        [("If-Modified-Since", "Fri, 01 Jan 2100 00:00:00 GMT")],
    ):
        r = ask(srv, "GET", "/cached/app.js", headers)
        assert (r.status, r.body) == (304, b""), headers
        assert r.header("etag") == etag and r.header("cache-control") == "public, max-age=3600"
        assert r.header("content-length") is None
    for headers in (
        [("If-None-Match", '"other"')],
        [("If-None-Match", '"other"'), ("If-Modified-Since", modified)],  # If-None-Match decides
        [("If-Modified-Since", "Sat, 01 Jan 2000 00:00:00 GMT")],
        [("If-Modified-Since", "not a date")],
    ):
        r = ask(srv, "GET", "/cached/app.js", headers)
        assert (r.status, r.body) == (200, b"console.log(1);\n"), headers
    # Starlette answers the same (its own ETag formula: each server is asked with its own validators).
    for name, s in servers.items():
        ref = ask(s, "GET", "/assets/style.css")
        for h in ("If-None-Match", "If-Modified-Since"):
            value = ref.header("etag" if h == "If-None-Match" else "last-modified")
            assert value is not None
            r = ask(s, "GET", "/assets/style.css", [(h, value)])
            assert (r.status, r.body) == (304, b""), (name, h)


def test_precompressed_siblings(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    cases = [
        ("br, gzip", b"BROTLI-BYTES", "br"),
        ("gzip, deflate", b"GZIP-BYTES", "gzip"),
        ("br;q=0, gzip;q=0.5", b"GZIP-BYTES", "gzip"),
        ("identity", b"let x = 'plain';\n", None),
        ("", b"let x = 'plain';\n", None),
    ]
    for accept, body, encoding in cases:
        headers = [("Accept-Encoding", accept)] if accept else []
        r = ask(srv, "GET", "/assets/packed.js", headers)
        assert (r.status, r.body, r.header("content-encoding")) == (200, body, encoding), accept
        assert r.header("content-type") == "text/javascript; charset=utf-8"
        assert r.header("vary") == "accept-encoding"
        assert r.header("content-length") == str(len(body))
    # No sibling: no Content-Encoding; Vary all the same (the route chooses by Accept-Encoding).
    r = ask(srv, "GET", "/assets/app.js", [("Accept-Encoding", "br, gzip")])
    assert r.header("vary") == "accept-encoding" and r.header("content-encoding") is None


TRAVERSALS = [
    "/assets/../secret.txt",
    "/assets/sub/../../secret.txt",
    "/assets/%2e%2e/secret.txt",
    "/assets/%2E%2E/secret.txt",
    "/assets/.%2e/secret.txt",
    "/assets/..%2fsecret.txt",
    "/assets/%2e%2e%2fsecret.txt",
    "/assets/sub%2f..%2f..%2fsecret.txt",
    "/assets/..%5csecret.txt",
    "/assets/..\\secret.txt",
    "/assets/sub/..%5c..%5csecret.txt",
    "/assets/%00",
    "/assets/app.js%00.txt",
    "/assets/%2fetc%2fpasswd",
    "/assets//etc/passwd",
    "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/assets/link_out.txt",
    "/assets/link_dir/secret.txt",
    "/assets/link_dir/www/app.js",
    "/assets/link_in.txt",
    "/assets/.hidden",
    "/assets/.git/config",
    "/assets/sub/%2ehidden",
    "/assets/%",
    "/assets/%zz",
    "/assets/pipe",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_and_symlinks_are_404(target: str, servers: dict[str, ServerProcess]) -> None:
    r = ask(servers["fasterapi"], "GET", target)
    assert r.status == 404, r.head
    assert SECRET not in r.body and b"root:" not in r.body


def test_follow_symlinks_and_hidden_when_allowed(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    assert ask(srv, "GET", "/linked/link_out.txt").body == SECRET
    assert ask(srv, "GET", "/linked/link_in.txt").body == b"console.log(1);\n"
    assert ask(srv, "GET", "/linked/.hidden").body == b"hidden\n"
    # Still no way up by name.
    assert ask(srv, "GET", "/linked/%2e%2e/secret.txt").status == 404


def test_methods(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    r = ask(srv, "POST", "/assets/app.js")
    assert r.status == 405 and "GET" in (r.header("allow") or "")
    r = ask(srv, "HEAD", "/assets/app.js")
    assert (r.status, r.body, r.header("content-length")) == (200, b"", "16")


def test_changes_on_disk_are_seen(servers: dict[str, ServerProcess], tree: Path) -> None:
    srv = servers["fasterapi"]
    f = tree / "changing.txt"
    f.write_text("one\n")
    first = ask(srv, "GET", "/assets/changing.txt")
    assert first.body == b"one\n"
    f.write_text("second version\n")
    os.utime(f, (time.time() + 5, time.time() + 5))
    second = ask(srv, "GET", "/assets/changing.txt")
    assert second.body == b"second version\n" and second.header("etag") != first.header("etag")
    f.unlink()
    assert ask(srv, "GET", "/assets/changing.txt").status == 404


def route_hits(srv: ServerProcess) -> dict[str, int]:
    metrics = httpx.get(f"{srv.url}/metrics", trust_env=False).text
    return {
        m.group(1): int(m.group(2))
        for m in re.finditer(
            r'^fasterapi_route_requests_total\{method="GET",route="([^"]+)"\} (\d+)$', metrics, re.M
        )
    }


def test_keep_alive_and_pipelining_wait_for_the_file(servers: dict[str, ServerProcess], tree: Path) -> None:
    srv = servers["fasterapi"]
    big = (tree / "big.bin").read_bytes()
    before = route_hits(srv)
    with RawClient(srv.port, timeout=30) as c:
        c.send(
            request("GET", "/assets/big.bin")
            + request("HEAD", "/assets/big.bin")
            + request("GET", "/assets/app.js", [("Range", "bytes=0-6")])
            + request("GET", "/assets/nope")
            + request("GET", "/download")
            + request("GET", "/assets/style.css")
        )
        assert c.read_response().body == big
        assert c.read_response("HEAD").header("content-length") == str(BIG)
        assert c.read_response().body == b"console"
        assert c.read_response().status == 404
        assert c.read_response().body == big
        assert c.read_response().body == b"body{}\n"
        # The connection is still usable.
        c.send(request("GET", "/assets/data.json"))
        assert c.read_response().body == b'{"a":1}'
    after = route_hits(srv)
    assert after["/assets/{path:path}"] - before["/assets/{path:path}"] == 6
    assert after["/download"] - before["/download"] == 1


def test_slow_reader_does_not_block_others(servers: dict[str, ServerProcess], tree: Path) -> None:
    srv = servers["fasterapi"]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    s.settimeout(30)
    s.connect(("127.0.0.1", srv.port))
    with s:
        s.sendall(request("GET", "/assets/big.bin") + request("GET", "/assets/app.js"))
        time.sleep(0.3)
        assert ask(srv, "GET", "/assets/style.css").body == b"body{}\n"
        data = b""
        while data.count(b"console.log(1);\n") == 0:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and rest[:BIG] == (tree / "big.bin").read_bytes()
    assert rest[BIG:].startswith(b"HTTP/1.1 200")


def test_static_over_tls(tree: Path, tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    pem = tmp_path / "server.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(pem))
    os.environ["FA_STATIC_DIR"] = str(tree)
    srv = start_server("fasterapi", APP, ("--ssl-certfile", str(pem)), tmp_path)
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        big = (tree / "big.bin").read_bytes()
        with httpx.Client(verify=ctx, trust_env=False, timeout=30) as client:
            base = f"https://127.0.0.1:{srv.port}"
            assert client.get(f"{base}/assets/big.bin").content == big
            r = client.get(f"{base}/assets/big.bin", headers={"range": "bytes=1000-2999"})
            assert (r.status_code, r.content) == (206, big[1000:3000])
            assert client.get(f"{base}/assets/../secret.txt").status_code == 404
            assert client.get(f"{base}/download").content == big
            r = client.get(f"{base}/assets/sub", follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (307, f"{base}/assets/sub/")
    finally:
        srv.stop()


@pytest.mark.timeout(120)
def test_large_file_keeps_memory_flat(tmp_path: Path) -> None:
    d = tmp_path / "www"
    d.mkdir()
    with (d / "big.bin").open("wb") as f:  # sparse: the kernel reads zeros
        f.truncate(1 << 29)
    os.environ["FA_STATIC_DIR"] = str(d)
    srv = start_server("fasterapi", APP, (), tmp_path)
    try:
        ask(srv, "GET", "/metrics")
        before = rss_kb(srv.proc.pid)
        peak = before
        received = 0
        with RawClient(srv.port, timeout=60) as c:
            c.send(request("GET", "/assets/big.bin", [("Connection", "close")]))
            c.read_head()
            received = len(c.buf)
            c.buf.clear()
            buf = bytearray(1 << 20)
            while (n := c.sock.recv_into(buf)) > 0:
                received += n
                if received % (32 << 20) < (1 << 20):
                    peak = max(peak, rss_kb(srv.proc.pid))
        assert received == 1 << 29
        assert peak - before < 16 * 1024, (before, peak)
    finally:
        srv.stop()


def test_access_log_and_clients_leaving_mid_file(servers: dict[str, ServerProcess]) -> None:
    srv = servers["fasterapi"]
    ask(srv, "GET", "/assets/big.bin", [("Range", "bytes=1-2"), ("User-Agent", "range-probe")])
    fds = fd_count(srv.proc.pid)
    for _ in range(10):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        s.connect(("127.0.0.1", srv.port))
        s.sendall(request("GET", "/download"))
        s.recv(1000)
        s.close()
    deadline = time.monotonic() + 5
    while fd_count(srv.proc.pid) > fds and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(srv.proc.pid) <= fds
    assert ask(srv, "GET", "/assets/app.js").status == 200
    log = srv.log()
    assert '"GET /assets/big.bin HTTP/1.1" 206' in log
    assert log.count('"GET /download HTTP/1.1" 200') >= 10  # also those cut short
