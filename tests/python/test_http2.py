"""HTTP/2 (--http2): h2c by prior knowledge and h2 by ALPN, served to ASGI apps and native routes over real
sockets; clients: the ``h2`` state machine (tests/python/h2_wire.py), httpx with ``http2=True`` and curl.

Frame-level conformance (RFC 9113) is in test_http2_rfc9113.py, the attack bounds in test_http2_attacks.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import h2.events
import h2.settings
import httpx
import pytest
import trustme
from h2_wire import H2Client, Response, raw_connect, read_frames, settings_max_concurrent
from harness import ServerProcess

StartServer = Callable[..., ServerProcess]
H2 = ("--http2",)


@pytest.fixture
def h2srv(start_server: StartServer) -> ServerProcess:
    return start_server("fasterapi", "raw_app:app", *H2)


def unwrap(value: object) -> object:
    """raw_app's JSON scope with its {"$bytes": ...} wrappers turned back into strings."""
    if isinstance(value, dict):
        if set(value) == {"$bytes"}:
            return value["$bytes"]
        return {k: unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    return value


def events(srv: ServerProcess, rid: str) -> list[str]:
    with H2Client(srv.port) as c:
        return list(json.loads(c.get(f"/events?id={rid}").body))


# ---- the basics: h2c by prior knowledge, the ASGI scope, HTTP/1.1 still served ----


def test_h2c_prior_knowledge_request_and_scope(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        r = c.get(
            "/scope/p%20q?x=1&y=2",
            headers=[("x-custom", "v"), ("cookie", "a=1"), ("cookie", "b=2")],
            authority="example.test:8443",
        )
    assert r.status == 200
    scope = unwrap(json.loads(r.body))
    assert scope["http_version"] == "2"
    assert scope["type"] == "http"
    assert scope["scheme"] == "http"
    assert scope["method"] == "GET"
    assert scope["path"] == "/scope/p q"
    assert scope["raw_path"] == "/scope/p%20q"
    assert scope["query_string"] == "x=1&y=2"
    headers = [tuple(h) for h in scope["headers"]]
    # ASGI: :authority becomes the first header, `host`; no pseudo-header reaches the app.
    assert headers[0] == ("host", "example.test:8443")
    assert not any(name.startswith(":") for name, _ in headers)
    assert ("x-custom", "v") in headers
    # RFC 9113 8.2.3: cookie fields are joined into one for an HTTP/1.1-minded app.
    assert ("cookie", "a=1; b=2") in headers
    assert scope["client"][0] == "127.0.0.1"
    assert scope["server"] == ["127.0.0.1", h2srv.port]


def test_response_headers_are_http2_shaped(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        r = c.get("/app-close")  # the app sends `connection: close`: meaningless (and malformed) in HTTP/2
    assert r.status == 200 and r.body == b"bye"
    names = [n for n, _ in r.headers]
    assert b"connection" not in names and b"transfer-encoding" not in names
    assert all(n == n.lower() for n in names)
    assert r.header(b"server") == b"fasterapi-asgi"
    assert r.header(b"date") is not None
    assert r.header(b"content-length") == b"3"


def test_http1_still_served_beside_http2(h2srv: ServerProcess) -> None:
    r = httpx.get(h2srv.url + "/", trust_env=False, timeout=5)
    assert r.status_code == 200 and r.http_version == "HTTP/1.1" and r.text == "hello, world"
    # A request line that begins like the preface but is not it ("P..." methods) is HTTP/1.1.
    r = httpx.post(h2srv.url + "/echo", content=b"xyz", trust_env=False, timeout=5)
    assert r.status_code == 200 and r.content == b"xyz"


def test_preface_split_across_reads(h2srv: ServerProcess) -> None:
    """The 24-byte preface arriving a byte at a time is still recognised."""
    import socket

    from h2_wire import PREFACE

    sock = socket.create_connection(("127.0.0.1", h2srv.port), timeout=5)
    try:
        for b in PREFACE:
            sock.sendall(bytes([b]))
            time.sleep(0.002)
        sock.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        frames = read_frames(sock, 2.0, until=lambda f: f.type == 0x4)
        assert frames and frames[0].type == 0x4  # the server's SETTINGS
        assert settings_max_concurrent(frames) == 100
    finally:
        sock.close()


def test_without_http2_the_preface_is_not_http2(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "raw_app:app")
    sock = raw_connect(srv.port)
    try:
        sock.settimeout(3)
        data = sock.recv(4096)
    finally:
        sock.close()
    assert data.startswith(b"HTTP/1.1 ")  # answered as a (bad) HTTP/1.1 request, not with frames


def test_settings_from_the_options(start_server: StartServer) -> None:
    srv = start_server(
        "fasterapi",
        "raw_app:app",
        *H2,
        "--http2-max-concurrent-streams",
        "7",
        "--http2-initial-window-size",
        "20000",
        "--http2-max-header-list-size",
        "4096",
    )
    sock = raw_connect(srv.port)
    try:
        frames = read_frames(sock, 2.0, until=lambda f: f.type == 0x4 and "ACK" not in f.flags)
    finally:
        sock.close()
    settings = dict(next(f for f in frames if f.type == 0x4 and "ACK" not in f.flags).settings)
    codes = h2.settings.SettingCodes
    assert settings[codes.MAX_CONCURRENT_STREAMS] == 7
    assert settings[codes.INITIAL_WINDOW_SIZE] == 20000
    assert settings[codes.MAX_HEADER_LIST_SIZE] == 4096


# ---- many streams on one connection ----


def test_concurrent_streams_are_concurrent_requests(h2srv: ServerProcess) -> None:
    """50 requests that each take 0.5 s in the app, on one connection: they run at the same time."""
    with H2Client(h2srv.port) as c:
        start = time.monotonic()
        sids = [c.request("GET", f"/slow?delay=0.5&id=s{i}") for i in range(50)]
        responses = [c.response(s, timeout=10) for s in sids]
        elapsed = time.monotonic() - start
    assert all(r.status == 200 and r.body == b"slow done" for r in responses)
    assert elapsed < 3.0, f"50 x 0.5 s streams took {elapsed:.2f} s: not concurrent"


def test_a_burst_beyond_one_turns_batch_is_served_whole(start_server: StartServer) -> None:
    """300 requests (GETs and POSTs with bodies) written in one go on one connection: more than the server
    takes up per loop turn (16), so the input pauses mid-stream and resumes turn after turn; every request is
    answered, with its own body."""
    srv = start_server("fasterapi", "raw_app:app", *H2, "--http2-max-concurrent-streams", "400")
    with H2Client(srv.port, timeout=20) as c:
        c.pump(lambda: c.conn.remote_settings.max_concurrent_streams == 400, timeout=5)
        expected: dict[int, bytes] = {}
        for i in range(300):
            hs = [(":method", "POST" if i % 3 else "GET"), (":scheme", "http"), (":authority", "localhost"),
                  (":path", "/echo" if i % 3 else "/")]  # fmt: skip
            sid = c.conn.get_next_available_stream_id()
            body = f"body-{i}".encode() * (i % 7 + 1)
            c.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in hs], end_stream=not i % 3)
            if i % 3:
                c.conn.send_data(sid, body, end_stream=True)
            c.responses[sid] = Response()
            expected[sid] = body if i % 3 else b"hello, world"
        c.flush()  # the whole burst in one write
        for sid, body in expected.items():
            assert c.response(sid, timeout=20).body == body


def test_native_burst_answers_arrive_without_more_input(start_server: StartServer) -> None:
    """40 native requests in one write: the later batches are answered while the server takes them up (inside
    its flush); their responses are written then, with no further byte from the client to wake the server."""
    srv = start_server("fasterapi", "native_app:app", *H2)
    with H2Client(srv.port) as c:
        for _ in range(40):
            sid = c.conn.get_next_available_stream_id()
            hs = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/plain")]
            c.conn.send_headers(sid, [(k.encode(), v.encode()) for k, v in hs], end_stream=True)
            c.responses[sid] = Response()
        c.flush()
        assert c.pump(lambda: all(r.ended for r in c.responses.values()), timeout=3), "responses stalled"
    assert all(r.body == b"Hello, World!" for r in c.responses.values())


def test_interleaved_bodies_on_many_streams(h2srv: ServerProcess) -> None:
    """Request bodies sent in interleaved pieces on 20 streams reach the right apps whole."""
    bodies = {i: os.urandom(30_000 + i * 1000) for i in range(20)}
    with H2Client(h2srv.port) as c:
        sids = {i: c.request("POST", "/digest", body=None, end=False) for i in bodies}
        for off in range(0, 60_000, 10_000):
            for i, body in bodies.items():
                piece = body[off : off + 10_000]
                if piece:
                    c.send_body(sids[i], piece, end=False)
        for i in bodies:
            c.conn.end_stream(sids[i])
        c.flush()
        results = {i: json.loads(c.response(sids[i], timeout=10).body) for i in bodies}
    for i, body in bodies.items():
        assert results[i]["length"] == len(body)
        assert results[i]["sha256"] == hashlib.sha256(body).hexdigest()


def test_large_response_and_large_upload(h2srv: ServerProcess) -> None:
    size = 3 * 1024 * 1024 + 17
    with H2Client(h2srv.port) as c:
        r = c.get(f"/big?size={size}")
        assert r.status == 200 and len(r.body) == size
        pattern = bytes(range(256)) * 256
        assert r.body[:65536] == pattern and r.body[65536:131072] == pattern
        upload = os.urandom(2 * 1024 * 1024)
        d = json.loads(c.response(c.request("POST", "/digest", body=upload), timeout=20).body)
    assert d["length"] == len(upload) and d["sha256"] == hashlib.sha256(upload).hexdigest()


def test_streaming_response_and_empty_bodies(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        assert c.get("/stream").body == b"part1-part2-part3"
        for code in (204, 304):
            r = c.get(f"/status?code={code}")
            assert r.status == code and r.body == b"" and r.ended
        head = c.response(c.request("HEAD", "/"))
        assert head.status == 200 and head.body == b"" and head.header(b"content-length") == b"12"


# ---- flow control: backpressure both ways ----


def test_request_body_window_waits_for_the_app(h2srv: ServerProcess) -> None:
    """The app sleeps before reading: the client may send one stream window (64 KiB) and no more until the app
    takes it; then the rest flows and the app gets every byte."""
    body = os.urandom(400_000)
    with H2Client(h2srv.port) as c:
        sid = c.request("POST", "/digest?delay=1.0", end=False)
        sent = 0
        start = time.monotonic()
        while sent < len(body) and time.monotonic() - start < 0.6:
            window = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
            if window > 0:
                c.conn.send_data(sid, body[sent : sent + window])
                sent += window
                c.flush()
            else:
                c.read_once(0.05)
        # Before the app reads, only the initial stream window (64 KiB) and what the server reads ahead for
        # the
        # app (its 64 KiB body high-water mark, as over HTTP/1.1) could go: about 128 KiB of the 400 KB.
        assert 65535 <= sent <= 65535 + 65536, sent
        c.send_body(sid, body[sent:])
        d = json.loads(c.response(sid, timeout=10).body)
    assert d["length"] == len(body) and d["sha256"] == hashlib.sha256(body).hexdigest()


def test_response_waits_for_the_clients_window(h2srv: ServerProcess) -> None:
    """A client that does not acknowledge DATA stops the app's send() (bounded buffering); acknowledging it
    lets the response complete."""
    size = 4 * 1024 * 1024
    rid = f"win{time.monotonic_ns()}"
    with H2Client(h2srv.port, auto_ack=False) as c:
        sid = c.request("GET", f"/big?size={size}&id={rid}")
        r = c.responses[sid]
        c.pump(lambda: len(r.body) >= 65535, timeout=5)
        time.sleep(0.5)
        progress = events(h2srv, rid)[0]
        # 64 KiB in flight at most, plus what the server buffers before send() waits (its write high-water
        # mark and one 64 KiB message): far below the 4 MiB.
        assert progress <= 512 * 1024, progress
        c.auto_ack = True
        c.conn.acknowledge_received_data(len(r.body), sid)
        c.flush()
        r = c.response(sid, timeout=20)
    assert len(r.body) == size


# ---- disconnects, resets and errors ----


def test_client_reset_is_http_disconnect(h2srv: ServerProcess) -> None:
    rid = f"rst{time.monotonic_ns()}"
    with H2Client(h2srv.port) as c:
        sid = c.request("POST", f"/wait-disconnect?id={rid}", body=b"abc")
        time.sleep(0.3)
        c.conn.reset_stream(sid)
        c.flush()
        # The connection and its other streams go on.
        assert c.get("/").body == b"hello, world"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len(events(h2srv, rid)) < 3:
        time.sleep(0.05)
    got = events(h2srv, rid)
    assert got[-2:] == ["http.disconnect", "send-ok"] and set(got[:-2]) == {"http.request"}, got


def test_connection_loss_disconnects_every_stream(h2srv: ServerProcess) -> None:
    rids = [f"gone{time.monotonic_ns()}-{i}" for i in range(3)]
    c = H2Client(h2srv.port)
    for rid in rids:
        c.request("POST", f"/wait-disconnect?id={rid}", body=b"x")
    time.sleep(0.3)
    c.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any("http.disconnect" not in events(h2srv, r) for r in rids):
        time.sleep(0.05)
    for rid in rids:
        got = events(h2srv, rid)
        assert got[-2:] == ["http.disconnect", "send-ok"] and set(got[:-2]) == {"http.request"}, got


def test_app_error_before_start_is_500_and_after_start_resets_the_stream(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        r = c.get("/raise-before")
        assert r.status == 500 and r.body == b"Internal Server Error"
        r = c.get("/raise-after")
        assert r.reset_code == 2  # INTERNAL_ERROR: the response cannot complete
        assert c.get("/").status == 200  # the connection survives both


def test_content_length_mismatch_resets_the_stream(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        assert c.get("/cl?declared=10&actual=12").reset_code == 2
        assert c.get("/cl?declared=10&actual=4").reset_code == 2
        assert c.get("/cl?declared=10&actual=10").body == b"X" * 10


def test_expect_100_continue(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        sid = c.request("POST", "/echo", headers=[("expect", "100-continue")], end=False)
        r = c.responses[sid]
        assert c.pump(lambda: bool(r.informational), timeout=5), "no 100 Continue"
        assert r.informational == [100]
        c.send_body(sid, b"after continue")
        assert c.response(sid).body == b"after continue"


def test_header_list_too_large_is_431(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "raw_app:app", *H2, "--http2-max-header-list-size", "4096")
    with H2Client(srv.port) as c:
        r = c.get("/", headers=[(f"x-h{i}", "v" * 100) for i in range(60)])
        assert r.status == 431
        assert c.get("/").status == 200


# ---- response trailers (ASGI's http.response.trailers extension) ----


def test_trailers_extension_over_http2(h2srv: ServerProcess) -> None:
    with H2Client(h2srv.port) as c:
        scope = unwrap(json.loads(c.get("/scope").body))
        assert "http.response.trailers" in scope["extensions"]
        r = c.get("/trailers")
        assert r.status == 200 and r.body == b"part1-part2" and r.ended
        # Both trailers messages, in one trailer HEADERS frame that ends the stream; names lowercased.
        assert r.trailers == [(b"x-digest", b"abc"), (b"x-count", b"2")]
        # A body message where the trailers were due: the app gets an error, the stream is reset.
        assert c.get("/trailers?bad=1").reset_code == 2
        assert c.get("/").status == 200
    assert "Expected ASGI message 'http.response.trailers', but got 'http.response.body'" in h2srv.log()


def test_trailers_not_offered_over_http1(h2srv: ServerProcess) -> None:
    r = httpx.get(h2srv.url + "/trailers", trust_env=False, timeout=5)
    assert r.status_code == 200 and r.text == "no trailers"


# ---- native routes over HTTP/2 ----


@pytest.fixture(scope="module")
def static_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("h2static")
    (d / "index.html").write_text("<h1>home</h1>")
    (d / "big.bin").write_bytes(os.urandom(1_500_000))
    return d


def test_native_routes_over_http2(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "native_app:app", *H2)
    with H2Client(srv.port) as c:
        plain = c.get("/plain")
        assert plain.status == 200 and plain.body == b"Hello, World!"
        created = c.get("/created")
        assert created.status == 201 and created.header(b"x-native") == b"yes"
        assert c.get("/old").status in (302, 307)
        r = c.response(c.request("POST", "/plain", body=b"x"))
        assert r.status == 405 and r.header(b"allow") is not None
        assert c.get("/file").body == Path("tests/python/apps/native_payload.py").read_bytes()
        metrics = c.get("/metrics").body.decode()
    assert "fasterapi_native_requests_total" in metrics or "native" in metrics


def test_native_static_files_over_http2(
    start_server: StartServer, static_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FA_STATIC_DIR", str(static_dir))
    srv = start_server("fasterapi", "static_app:app", *H2)
    with H2Client(srv.port) as c:
        big = c.get("/download", timeout=20)
        assert big.status == 200 and big.body == (static_dir / "big.bin").read_bytes()
        page = c.get("/assets/")
        assert page.status == 200 and page.body == b"<h1>home</h1>"
        part = c.get("/download", headers=[("range", "bytes=10-19")])
        assert part.status == 206 and part.body == (static_dir / "big.bin").read_bytes()[10:20]
        head = c.response(c.request("HEAD", "/download"))
        assert head.status == 200 and head.body == b"" and head.header(b"content-length") == b"1500000"


# ---- real clients: curl and httpx, FastAPI unchanged, HTTP/1.1 vs HTTP/2 ----


FASTAPI_REQUESTS: list[tuple[str, str, bytes | None]] = [
    ("GET", "/items/42?q=hello", None),
    ("GET", "/items/nope", None),
    ("POST", "/items", b'{"name": "x", "price": 2.5, "tags": ["a"]}'),
    ("POST", "/items", b'{"name": "x"}'),
    ("GET", "/sync/world", None),
    ("GET", "/stream?n=7", None),
    ("GET", "/missing", None),
    ("DELETE", "/items/1", None),
]


def test_fastapi_same_answers_over_http1_and_http2(start_server: StartServer) -> None:
    """The differential: an unchanged FastAPI app answers every request the same way over both protocols."""
    srv = start_server("fasterapi", "fastapi_app:app", *H2)
    with (
        httpx.Client(base_url=srv.url, http1=True, http2=False, trust_env=False, timeout=10) as one,
        httpx.Client(base_url=srv.url, http1=False, http2=True, trust_env=False, timeout=10) as two,
    ):
        for method, path, body in FASTAPI_REQUESTS:
            headers = {"content-type": "application/json"} if body else {}
            r1 = one.request(method, path, content=body, headers=headers)
            r2 = two.request(method, path, content=body, headers=headers)
            assert r1.http_version == "HTTP/1.1" and r2.http_version == "HTTP/2"
            assert (r2.status_code, r2.content) == (r1.status_code, r1.content), (method, path)
            drop = {"date", "transfer-encoding", "connection"}
            h1 = {k: v for k, v in r1.headers.items() if k not in drop}
            h2_ = {k: v for k, v in r2.headers.items() if k not in drop}
            assert h2_ == h1, (method, path)


def curl(*args: str) -> tuple[str, str]:
    """curl's body and its `-w` line ("<http version> <status>") for one request."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_version} %{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    body, meta = out.rsplit("\n", 1)
    return body, meta


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_http2_prior_knowledge_fastapi(start_server: StartServer) -> None:
    features = subprocess.run(["curl", "-V"], capture_output=True, text=True, check=True).stdout
    if "HTTP2" not in features:
        pytest.skip("this curl has no HTTP/2")
    srv = start_server("fasterapi", "fastapi_app:app", *H2)
    body, meta = curl("--http2-prior-knowledge", f"{srv.url}/items/5?q=curl")
    assert meta == "2 200" and json.loads(body) == {"item_id": 5, "q": "curl"}
    json_body = ("-H", "content-type: application/json", "-d", '{"name": "c", "price": 1.5}')
    body, meta = curl("--http2-prior-knowledge", *json_body, f"{srv.url}/items")
    assert meta == "2 201" and json.loads(body)["total"] == 3.0


# ---- TLS: ALPN h2 ----


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, Path]]:
    ca = trustme.CA()
    d = tmp_path_factory.mktemp("h2certs")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    for blob in cert.cert_chain_pems[1:]:
        blob.write_to_path(str(d / "cert.pem"), append=True)
    yield d / "cert.pem", d / "key.pem", d / "ca.pem"


def test_https_alpn_h2_with_httpx_and_fastapi(
    start_server: StartServer, tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = tls_files
    srv = start_server(
        "fasterapi", "fastapi_app:app", *H2, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)
    )
    ctx = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(http2=True, verify=ctx, trust_env=False, timeout=10) as client:
        r = client.get(f"https://localhost:{srv.port}/items/7?q=tls")
        assert r.http_version == "HTTP/2"
        assert r.json() == {"item_id": 7, "q": "tls"}
        r = client.post(f"https://localhost:{srv.port}/items", json={"name": "t", "price": 4})
        assert r.http_version == "HTTP/2" and r.status_code == 201 and r.json()["total"] == 8
    # An HTTP/1.1-only client on the same port still gets HTTP/1.1.
    r = httpx.get(f"https://localhost:{srv.port}/items/1", verify=ctx, trust_env=False, timeout=10)
    assert r.http_version == "HTTP/1.1" and r.status_code == 200


def test_https_scope_scheme_and_alpn_choice(
    start_server: StartServer, tls_files: tuple[Path, Path, Path]
) -> None:
    cert, key, ca = tls_files
    srv = start_server(
        "fasterapi", "raw_app:app", *H2, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)
    )
    with H2Client(srv.port, tls=ssl.create_default_context(cafile=str(ca))) as c:
        assert c.alpn == "h2"
        scope = unwrap(json.loads(c.get("/scope", scheme="https").body))
    assert scope["scheme"] == "https" and scope["http_version"] == "2"
    # Without --http2 the server does not select h2.
    plain = start_server("fasterapi", "raw_app:app", "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    import socket

    with socket.create_connection(("127.0.0.1", plain.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == "http/1.1"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_https_negotiates_h2(start_server: StartServer, tls_files: tuple[Path, Path, Path]) -> None:
    cert, key, ca = tls_files
    srv = start_server(
        "fasterapi", "fastapi_app:app", *H2, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)
    )
    body, meta = curl("--http2", "--cacert", str(ca), f"https://localhost:{srv.port}/items/3")
    assert meta == "2 200" and json.loads(body) == {"item_id": 3, "q": None}


# ---- graceful shutdown: GOAWAY, streams in progress finish ----


def test_graceful_shutdown_sends_goaway_and_finishes_streams(fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", "raw_app:app", *H2)
    c = H2Client(srv.port, timeout=10)
    try:
        sids = [c.request("GET", f"/slow?delay=1.0&id=g{i}") for i in range(3)]
        srv.wait_for_log("APP-SLOW-START g2")
        srv.signal(signal.SIGTERM)
        # Read as raw frames: the h2 library treats a GOAWAY as the end of the connection, while RFC 9113 6.8
        # lets the streams it names finish.
        frames = read_frames(c.sock, 10.0)
    finally:
        c.close()
    goaways = [f for f in frames if f.type == 0x7]
    assert len(goaways) == 1 and goaways[0].error_code == 0 and goaways[0].last_stream_id == sids[-1]
    first_goaway = frames.index(goaways[0])
    for sid in sids:
        stream = [f for f in frames[first_goaway:] if f.stream_id == sid]
        assert any(f.type == 0x1 for f in stream), f"stream {sid}: no response after the GOAWAY"
        body = b"".join(f.data for f in stream if f.type == 0x0)
        assert body == b"slow done" and "END_STREAM" in stream[-1].flags
    assert frames.closed, "the connection stays open after its last stream"
    assert (
        srv.wait(10) == -signal.SIGTERM
    )  # as uvicorn 0.54: the captured SIGTERM re-raised (test_shutdown.py)


def test_idle_connection_gets_goaway_at_keep_alive(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "raw_app:app", *H2, "--timeout-keep-alive", "1")
    with H2Client(srv.port) as c:
        assert c.get("/").status == 200
        start = time.monotonic()
        assert c.pump(lambda: c.closed, timeout=5)
        assert 0.5 < time.monotonic() - start < 3
        goaway = c.terminated()
        assert goaway is not None and goaway.error_code == 0


def test_requests_counted_in_stats(start_server: StartServer) -> None:
    srv = start_server("fasterapi", "native_app:app", *H2)
    with H2Client(srv.port) as c:
        for _ in range(5):
            assert c.get("/plain").status == 200
        text = c.get("/metrics").body.decode()
    line = next(ln for ln in text.splitlines() if ln.startswith("fasterapi_requests_total"))
    assert float(line.split()[-1]) >= 5


def test_many_clients_at_once(h2srv: ServerProcess) -> None:
    errors: list[str] = []

    def client(n: int) -> None:
        try:
            with H2Client(h2srv.port, timeout=10) as c:
                sids = [c.request("POST", "/echo", body=f"{n}-{i}".encode()) for i in range(20)]
                for i, sid in enumerate(sids):
                    r = c.response(sid)
                    if r.body != f"{n}-{i}".encode():
                        errors.append(f"{n}-{i}: {r}")
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []


def test_h2_library_events_are_clean(h2srv: ServerProcess) -> None:
    """Nothing the conforming client sees is a protocol complaint: no resets, no GOAWAY, settings
    acknowledged."""
    with H2Client(h2srv.port) as c:
        for _ in range(3):
            assert c.get("/").status == 200
    kinds = {type(e) for e in c.events}
    assert h2.events.StreamReset not in kinds and h2.events.ConnectionTerminated not in kinds
    assert h2.events.SettingsAcknowledged in kinds and h2.events.RemoteSettingsChanged in kinds


# ---- time and memory bounds per stream ----


def test_stalled_request_body_resets_only_its_stream(fresh_server: StartServer) -> None:
    """--timeout-request-body bounds each stream's body as it bounds HTTP/1.1's: a stream whose body stops
    arriving (HEADERS without END_STREAM, then nothing) is reset (CANCEL) and its app sees http.disconnect;
    the connection and its other streams go on."""
    srv = fresh_server("fasterapi", "raw_app:app", *H2, "--timeout-request-body", "1")
    with H2Client(srv.port, timeout=10) as c:
        stalled = c.request("POST", "/echo", end=False)
        start = time.monotonic()
        assert c.get("/").status == 200
        r = c.response(stalled, timeout=6)
        elapsed = time.monotonic() - start
        assert r.reset_code == 8 and 0.8 < elapsed < 4, (r, elapsed)
        assert c.get("/").status == 200 and not c.closed


def test_native_request_bodies_share_a_bounded_budget(start_server: StartServer) -> None:
    """Native routes buffer their request bodies. Over HTTP/2 a stream's window reopens only while the
    connection's native bodies stay within 1 MiB (the oldest upload always goes on, so one request always can
    finish): 40 uploads of 1 MiB each cannot make the server hold 40 MiB. Every request is answered once its
    body ends."""
    srv = start_server("fasterapi", "native_app:app", *H2)
    with H2Client(srv.port, timeout=10) as c:
        sids = [c.request("PUT", "/multi", end=False) for _ in range(40)]
        sent = dict.fromkeys(sids, 0)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for sid in sids:
                room = min(c.conn.local_flow_control_window(sid), c.conn.max_outbound_frame_size)
                n = min(room, (1 << 20) - 1 - sent[sid])
                if n > 0:
                    c.conn.send_data(sid, b"x" * n)
                    sent[sid] += n
            c.flush()
            c.read_once(0.05)
        total = sum(sent.values())
        # The budget, the oldest upload's own megabyte, and one initial window per stream.
        assert total <= 2 * (1 << 20) + 41 * 65535, f"{total} bytes taken by native routes"
        for sid in sids:
            c.conn.end_stream(sid)
        c.flush()
        assert [c.response(sid).status for sid in sids] == [200] * len(sids)
        assert not c.closed
