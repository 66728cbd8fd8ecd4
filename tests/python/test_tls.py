"""TLS served by the native core (--ssl-* options): HTTPS and WSS over real sockets, client certificates,
the options' uvicorn semantics, a differential against uvicorn with the same options, and hostile clients
(plain HTTP on the TLS port, stalled and abandoned handshakes, an untrusted CA)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from harness import REPO_ROOT, ServerProcess, fd_count, free_port

StartServer = Callable[..., ServerProcess]
APP = "tls_app:app"


@dataclass
class Certs:
    ca: trustme.CA
    ca_pem: Path
    chain: Path  # the server's certificate chain
    key: Path
    key_encrypted: Path  # the same key, encrypted with "secret"
    client_pem: Path  # a client certificate (and key) issued by the same CA


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    from cryptography.hazmat.primitives import serialization

    d = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    for i, blob in enumerate(server.cert_chain_pems):
        blob.write_to_path(str(d / "chain.pem"), append=i > 0)
    server.private_key_pem.write_to_path(str(d / "key.pem"))
    key = serialization.load_pem_private_key(server.private_key_pem.bytes(), password=None)
    (d / "key-encrypted.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    client = ca.issue_cert("client@example.com")
    client.private_key_and_cert_chain_pem.write_to_path(str(d / "client.pem"))
    return Certs(ca, d / "ca.pem", d / "chain.pem", d / "key.pem", d / "key-encrypted.pem", d / "client.pem")


def tls_flags(certs: Certs, *extra: str) -> tuple[str, ...]:
    return ("--ssl-certfile", str(certs.chain), "--ssl-keyfile", str(certs.key), *extra)


def client_context(certs: Certs, client_cert: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(certs.ca_pem))
    if client_cert:
        ctx.load_cert_chain(str(certs.client_pem))
    return ctx


def https(server: ServerProcess, path: str = "/scope") -> str:
    return f"https://localhost:{server.port}{path}"


def tls_connect(server: ServerProcess, ctx: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    return ctx.wrap_socket(raw, server_hostname="localhost")


@pytest.mark.parametrize("kind", ["fasterapi", "uvicorn"])
def test_https_request_and_scope(kind: str, certs: Certs, fresh_server: StartServer) -> None:
    srv = fresh_server(kind, APP, *tls_flags(certs))
    with httpx.Client(verify=client_context(certs), trust_env=False, timeout=10) as client:
        body = os.urandom(300_000)
        r = client.post(https(srv), content=body)
        assert r.status_code == 200, r.text
        assert r.json() == {
            "scheme": "https",
            "http_version": "1.1",
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        }
        # Keep-alive: more requests on the same TLS connection.
        for _ in range(3):
            assert client.get(https(srv)).json()["scheme"] == "https"
        big = client.get(https(srv, "/big?size=3000000"))
        assert big.status_code == 200
        assert len(big.content) == 3_000_000
        assert big.content[:512] == bytes(range(256)) * 2
    assert "running on https://127.0.0.1:" in srv.log().replace("Uvicorn", "fasterapi-asgi")


def test_alpn_offers_http11_and_tls13(certs: Certs, fresh_server: StartServer) -> None:
    srv = fresh_server("fasterapi", APP, *tls_flags(certs))
    ctx = client_context(certs)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(srv, ctx) as s:
        assert s.selected_alpn_protocol() == "http/1.1"
        assert s.version() == "TLSv1.3"
        s.sendall(b"GET /scope HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 ")
    assert b'"scheme": "https"' in data


def test_wss(certs: Certs, fresh_server: StartServer) -> None:
    from websockets.sync.client import connect

    srv = fresh_server("fasterapi", APP, *tls_flags(certs))
    with connect(f"wss://localhost:{srv.port}/ws", ssl=client_context(certs), open_timeout=5) as ws:
        assert json.loads(ws.recv(timeout=5)) == {"scheme": "wss"}
        for message in ("hello", "x" * 200_000, b"\x00\x01" * 50_000):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_password_protected_key(certs: Certs, fresh_server: StartServer) -> None:
    srv = fresh_server(
        "fasterapi",
        APP,
        "--ssl-certfile",
        str(certs.chain),
        "--ssl-keyfile",
        str(certs.key_encrypted),
        "--ssl-keyfile-password",
        "secret",
    )
    r = httpx.get(https(srv), verify=client_context(certs), trust_env=False, timeout=10)
    assert r.json()["scheme"] == "https"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fasterapi_asgi", APP, "--app-dir", "tests/python/apps", "--port", "0", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "case",
    ["wrong-password", "missing-cert", "key-without-cert", "bad-ciphers"],
)
def test_bad_tls_options_fail_with_one_line(case: str, certs: Certs) -> None:
    args = {
        "wrong-password": tls_flags(certs)[:2]
        + ("--ssl-keyfile", str(certs.key_encrypted), "--ssl-keyfile-password", "nope"),
        "missing-cert": ("--ssl-certfile", "/nonexistent/cert.pem"),
        "key-without-cert": ("--ssl-keyfile", str(certs.key)),
        "bad-ciphers": (*tls_flags(certs), "--ssl-ciphers", "NO-SUCH-CIPHER"),
    }[case]
    result = run_cli(*args)
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("ERROR:")]
    assert len(errors) == 1, result.stderr
    assert "Cannot set up the server:" in errors[0]
    assert "Traceback" not in result.stderr


def test_client_certificates_required(certs: Certs, fresh_server: StartServer) -> None:
    srv = fresh_server(
        "fasterapi", APP, *tls_flags(certs, "--ssl-cert-reqs", "2", "--ssl-ca-certs", str(certs.ca_pem))
    )
    ok = httpx.get(https(srv), verify=client_context(certs, client_cert=True), trust_env=False, timeout=10)
    assert ok.json()["scheme"] == "https"
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(https(srv), verify=client_context(certs), trust_env=False, timeout=10)
    # A certificate from another CA is refused too.
    other = trustme.CA().issue_cert("intruder@example.com")
    ctx = client_context(certs)
    with other.private_key_and_cert_chain_pem.tempfile() as path:
        ctx.load_cert_chain(path)
    with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
        httpx.get(https(srv), verify=ctx, trust_env=False, timeout=10)
    # The server is unharmed.
    again = httpx.get(https(srv), verify=client_context(certs, client_cert=True), trust_env=False, timeout=10)
    assert again.status_code == 200


def test_ciphers_and_version(certs: Certs, fresh_server: StartServer) -> None:
    cipher = "ECDHE-ECDSA-AES128-GCM-SHA256"  # trustme issues ECDSA keys
    srv = fresh_server("fasterapi", APP, *tls_flags(certs, "--ssl-ciphers", cipher))
    ctx = client_context(certs)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(srv, ctx) as s:
        assert s.version() == "TLSv1.2"
        assert s.cipher()[0] == cipher
    refused = client_context(certs)
    refused.maximum_version = ssl.TLSVersion.TLSv1_2
    refused.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with pytest.raises(ssl.SSLError):
        tls_connect(srv, refused).close()
    # Python's default minimum (TLS 1.2) holds: a TLS 1.1 client is refused.
    old = client_context(certs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # asking for TLS 1.1 is deprecated in Python too
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises(ssl.SSLError):
            tls_connect(srv, old).close()


def describe(kind: str, certs: Certs, fresh_server: StartServer, *flags: str) -> dict[str, object]:
    srv = fresh_server(kind, APP, *tls_flags(certs, *flags))
    ctx = client_context(certs, client_cert=True)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with tls_connect(srv, ctx) as s:
        session = {"version": s.version(), "cipher": s.cipher()[0]}
        s.sendall(
            b"POST /scope HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc"
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    session["status"] = head.split(b"\r\n")[0].decode()
    session["body"] = json.loads(body)
    return session


def test_same_tls_session_as_uvicorn(certs: Certs, fresh_server: StartServer) -> None:
    flags = ("--ssl-cert-reqs", "1", "--ssl-ca-certs", str(certs.ca_pem), "--ssl-ciphers", "ECDHE+AESGCM")
    ours = describe("fasterapi", certs, fresh_server, *flags)
    theirs = describe("uvicorn", certs, fresh_server, *flags)
    assert ours == theirs
    assert ours["body"]["scheme"] == "https"  # type: ignore[index]


def test_hostile_clients_close_only_their_connection(certs: Certs, fresh_server: StartServer) -> None:
    srv = fresh_server(
        "fasterapi", APP, *tls_flags(certs, "--timeout-request-header", "1", "--log-level", "debug")
    )
    ctx = client_context(certs)
    assert httpx.get(https(srv), verify=ctx, trust_env=False, timeout=10).status_code == 200
    baseline = fd_count(srv.proc.pid)

    # Plain HTTP on the TLS port: closed without an HTTP answer; logged at debug level.
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        reply = s.recv(65536)
        assert not reply.startswith(b"HTTP/")
    srv.wait_for_log("DEBUG:    TLS error: http request")

    # An untrusted client (does not know the CA): the handshake fails on its side; the server goes on.
    with pytest.raises(httpx.ConnectError):
        httpx.get(https(srv), verify=ssl.create_default_context(), trust_env=False, timeout=10)

    # A handshake that stalls after a partial ClientHello: closed after --timeout-request-header.
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    stalled.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    start = time.monotonic()
    assert stalled.recv(100) == b""
    assert 0.5 < time.monotonic() - start < 4
    stalled.close()
    srv.wait_for_log("TLS handshake timeout")

    # Clients that leave mid-handshake, many times over.
    for _ in range(100):
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(40))
        s.close()
    for _ in range(50):  # and after a full handshake, without a request
        tls_connect(srv, ctx).close()

    deadline = time.monotonic() + 5
    while fd_count(srv.proc.pid) > baseline and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(srv.proc.pid) <= baseline
    assert httpx.get(https(srv), verify=ctx, trust_env=False, timeout=10).json()["scheme"] == "https"
    assert srv.alive()


def test_ssl_context_factory_in_config(certs: Certs, tmp_path: Path) -> None:
    """uvicorn's Config(ssl_context_factory=...): the factory may adjust the default context."""
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(
        f"""
import ssl, sys
sys.path.insert(0, {str(REPO_ROOT / "tests/python/apps")!r})
from fasterapi_asgi.config import Config
from fasterapi_asgi.server import Server

def factory(config, default):
    ctx = default()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx

config = Config("tls_app:app", port={port}, ssl_certfile={str(certs.chain)!r}, ssl_keyfile={str(certs.key)!r},
                ssl_context_factory=factory)
Server(config).run()
"""
    )
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                url = f"https://localhost:{port}/scope"
                r = httpx.get(url, verify=client_context(certs), trust_env=False)
                break
            except httpx.ConnectError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        assert r.json()["scheme"] == "https"
        ctx = client_context(certs)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with pytest.raises(ssl.SSLError):
            socket_ = socket.create_connection(("127.0.0.1", port), timeout=5)
            ctx.wrap_socket(socket_, server_hostname="localhost").close()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def read_tls_responses(sock: ssl.SSLSocket, count: int) -> list[tuple[bytes, bytes]]:
    """`count` Content-Length responses read off one TLS socket in order: (head, body) each."""
    buf = b""
    responses = []
    for _ in range(count):
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(responses)} responses: {buf[:200]!r}"
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = int(
            next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length"))
        )
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk, f"closed in the body of response {len(responses) + 1}"
            buf += chunk
        responses.append((head, buf[:length]))
        buf = buf[length:]
    return responses


def test_pipelined_requests_over_tls_are_each_answered(
    certs: Certs, fresh_server: StartServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Responses are flushed while the pipelined requests behind them are still being parsed (a native static
    file read into the TLS writer in steps; a large body an app sends, by reference): the ciphertext on its
    way out must never overwrite the plaintext of the requests still to be parsed."""
    directory = tmp_path / "static"
    directory.mkdir()
    data = os.urandom(200_000)
    (directory / "big.bin").write_bytes(data)
    monkeypatch.setenv("FA_STATIC_DIR", str(directory))
    static = fresh_server("fasterapi", "static_app:app", *tls_flags(certs))
    app = fresh_server("fasterapi", APP, *tls_flags(certs))
    pattern = (bytes(range(256)) * 256 * 2)[:100_000]
    cases = [
        (static, ["/assets/big.bin"] * 3, [data] * 3),
        (app, ["/big?size=100000", "/big?size=100000", "/big?size=100000"], [pattern] * 3),
    ]
    for srv, paths, bodies in cases:
        with tls_connect(srv, client_context(certs)) as sock:
            sock.settimeout(10)
            sock.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode() for p in paths))
            responses = read_tls_responses(sock, len(paths))
        assert [head.split(b"\r\n")[0] for head, _ in responses] == [b"HTTP/1.1 200 OK"] * len(paths)
        assert [hashlib.sha256(body).hexdigest() for _, body in responses] == [
            hashlib.sha256(b).hexdigest() for b in bodies
        ]
        assert "Invalid HTTP request" not in srv.log()


def test_stale_openssl_error_on_the_loop_thread_does_not_close_connections(
    certs: Certs, fresh_server: StartServer
) -> None:
    """Another OpenSSL user on the loop thread (the app through Python's ssl or hashlib, a database driver)
    may leave an error on the thread's queue; the core's next TLS read must not take it for its own and close
    the connection."""
    srv = fresh_server("fasterapi", APP, *tls_flags(certs))
    with tls_connect(srv, client_context(certs)) as sock:
        sock.settimeout(10)
        paths = ["/stale-openssl-error", "/scope", "/scope"]
        answers = []
        for path in paths:  # one after the other on the same connection: the next read finds the stale error
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
            ((head, body),) = read_tls_responses(sock, 1)
            assert head.startswith(b"HTTP/1.1 200"), head
            answers.append(json.loads(body))
    assert answers[0] == {"left": True}
    assert [a["scheme"] for a in answers[1:]] == ["https", "https"]
