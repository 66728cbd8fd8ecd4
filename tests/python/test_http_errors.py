"""Bad input and failing apps: each answered clearly, and the server keeps serving.

Differential where uvicorn (httptools) behaves as issue 2 requires; ``fasterapi`` tests where it
does not: uvicorn has no header-section or URL limits (it serves 256 KiB headers, and answers 400
for URLs over 64 KiB only because its URL parser overflows), and answers 400 rather than 501 to an
unknown Transfer-Encoding (and even accepts ``gzip, chunked``, passing the body on undecoded).
"""

from __future__ import annotations

import httpx
import pytest
from conftest import StartServer
from harness import HEADER_SECTION_TOO_LARGE, URL_TOO_LONG, RawClient, ServerProcess, request

pytestmark = pytest.mark.timeout(30)

HELLO = b"hello, world"


def assert_still_serving(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url) as client:
        r = client.get("/")
        assert (r.status_code, r.content) == (200, HELLO)


def bad_request_exchange(server: ServerProcess, raw: bytes) -> tuple[int, bytes]:
    """Send a bad request followed by a good one; return the status and anything after the response.

    The server must answer the bad request, close, and never answer the request behind it.
    """
    with RawClient(server.port) as c:
        c.send_tolerant(raw + request("GET", "/"))
        r = c.read_response()
        assert "close" in (r.header("connection") or "").lower(), r.head
        rest = c.read_to_eof(5)
    assert b"HTTP/1." not in rest, f"a request behind a bad one was answered: {rest!r}"
    return r.status, rest


BAD_REQUESTS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no-colon-header": b"GET / HTTP/1.1\r\nHost: x\r\nbad header line\r\n\r\n",
    "ctl-in-header-name": b"GET / HTTP/1.1\r\nHost: x\r\nBad\x01Name: x\r\n\r\n",
    "nul-in-header-value": b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x00b\r\n\r\n",
    "ctl-in-url": b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: x\r\nX-Header : v\r\n\r\n",
    "bad-chunk-size": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"zz\r\nabc\r\n0\r\n\r\n",
}

SMUGGLING = {
    "cl-and-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    "te-and-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
    b"3\r\nabc\r\n0\r\n\r\n",
    "conflicting-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 4\r\n\r\nabcd",
    "cl-not-a-number": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\nabc",
    "cl-negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\nabc",
    "cl-plus-sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl-huge": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\nabc",
}


@pytest.mark.parametrize("raw", list(BAD_REQUESTS.values()), ids=list(BAD_REQUESTS))
def test_malformed_request_400(server: ServerProcess, raw: bytes) -> None:
    status, _ = bad_request_exchange(server, raw)
    assert status == 400
    assert_still_serving(server)


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_request_smuggling_rejected_400(server: ServerProcess, raw: bytes) -> None:
    status, _ = bad_request_exchange(server, raw)
    assert status == 400
    assert_still_serving(server)


def te_request(path: str, te: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {te}\r\n\r\n3\r\nabc\r\n0\r\n\r\n".encode()


@pytest.mark.parametrize("te", ["gzip", "chunked, gzip"])
def test_unframeable_transfer_encoding_rejected(server: ServerProcess, te: str) -> None:
    # chunked is not the final coding: the body length cannot be determined (RFC 9112 6.3).
    status, _ = bad_request_exchange(server, te_request("/echo", te))
    assert status in (400, 501)
    assert_still_serving(server)


@pytest.mark.parametrize("te", ["gzip", "gzip, chunked", "br, chunked"])
def test_unknown_transfer_encoding_501(fasterapi: ServerProcess, te: str) -> None:
    # uvicorn answers 400 to "gzip" and accepts "gzip, chunked" (passing the gzip body on as is).
    status, _ = bad_request_exchange(fasterapi, te_request("/te-probe", te))
    assert status == 501
    assert_still_serving(fasterapi)


def test_header_section_too_large_431(fasterapi: ServerProcess) -> None:
    line = b"X-Filler-%06d: " + b"v" * 990 + b"\r\n"
    count = HEADER_SECTION_TOO_LARGE // len(line % 0) + 1
    raw = b"GET /huge-headers HTTP/1.1\r\nHost: x\r\n" + b"".join(line % i for i in range(count)) + b"\r\n"
    status, _ = bad_request_exchange(fasterapi, raw)
    assert status == 431
    assert_still_serving(fasterapi)


def test_single_huge_header_431(fasterapi: ServerProcess) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * HEADER_SECTION_TOO_LARGE + b"\r\n\r\n"
    status, _ = bad_request_exchange(fasterapi, raw)
    assert status == 431
    assert_still_serving(fasterapi)


def test_url_too_long_414(fasterapi: ServerProcess) -> None:
    raw = b"GET /" + b"u" * URL_TOO_LONG + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, _ = bad_request_exchange(fasterapi, raw)
    assert status == 414
    assert_still_serving(fasterapi)


def test_bad_input_logged_as_uvicorn_does(start_server: StartServer) -> None:
    """WARNING "Invalid HTTP request received." as uvicorn; what was wrong and the request line at DEBUG."""
    srv = start_server("fasterapi", "raw_app:app", "--log-level", "debug")
    status, _ = bad_request_exchange(srv, SMUGGLING["cl-and-te"].replace(b"/echo", b"/smuggle-probe"))
    assert status == 400
    log = srv.wait_for_log("POST /smuggle-probe")
    assert "WARNING:  Invalid HTTP request received.\n" in log
    assert "DEBUG:    Invalid HTTP request (400: " in log
    raw = b"POST /te-logged HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    status, _ = bad_request_exchange(srv, raw)
    assert status == 501
    srv.wait_for_log("POST /te-logged")


def test_app_raises_before_start_500(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("GET", "/raise-before"))
        r = c.read_response()
        assert r.status == 500
        assert r.body == b"Internal Server Error"
        assert "close" in (r.header("connection") or "").lower()
        assert c.wait_closed(3)
        port = c.local_port
    log = server.wait_for_log(f'127.0.0.1:{port} - "GET /raise-before HTTP/1.1" 500')
    assert "Exception in ASGI application" in log
    assert "APP-RAISED-BEFORE-START" in log
    assert_still_serving(server)


def test_head_app_raises_before_start_500_without_body(server: ServerProcess) -> None:
    """No body for HEAD, ever: not even on the server's own 500 (uvicorn sends none)."""
    with RawClient(server.port) as c:
        c.send(request("HEAD", "/raise-before"))
        r = c.read_response("HEAD")
        assert r.status == 500
        assert c.wait_closed(3)
        assert c.buf == b"", f"bytes after the head of a HEAD response: {bytes(c.buf)!r}"
    assert_still_serving(server)


def test_refused_head_then_500_goes_out(fasterapi: ServerProcess) -> None:
    """A head refused by send() (two Content-Lengths) leaves nothing behind: the server's 500 goes out."""
    with RawClient(fasterapi.port) as c:
        c.send(request("GET", "/two-cl"))
        r = c.read_response()
        assert r.status == 500
        assert r.body == b"Internal Server Error"
        assert c.wait_closed(3)
    fasterapi.wait_for_log("Invalid Content-Length header in response.")
    assert_still_serving(fasterapi)


@pytest.mark.parametrize("code", [100, 103, 101])
def test_informational_final_status_is_a_500(fasterapi: ServerProcess, code: int) -> None:
    """A 1xx cannot be the final response: the client gets a 500 (not an endless wait), and it is logged."""
    with RawClient(fasterapi.port, timeout=5) as c:
        c.send(request("GET", f"/status?code={code}"))
        r = c.read_response()
        assert r.status == 500
    fasterapi.wait_for_log("Informational status codes (1xx) cannot be the final response status.")
    assert_still_serving(fasterapi)


def test_app_raises_after_start_closes(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("GET", "/raise-after") + request("GET", "/"))
        _, status, _, headers, _ = c.read_head()
        assert status == 200
        rest = c.read_to_eof(5)
        assert rest == b"partial", "declared 100 bytes, sent 7, then raised: the stream must just end"
    server.wait_for_log("APP-RAISED-AFTER-START")
    assert_still_serving(server)


def test_app_returns_without_response_500(server: ServerProcess) -> None:
    with RawClient(server.port) as c:
        c.send(request("GET", "/no-response"))
        r = c.read_response()
        assert r.status == 500
        assert c.wait_closed(3)
        port = c.local_port
    server.wait_for_log(f'127.0.0.1:{port} - "GET /no-response HTTP/1.1" 500')
    assert_still_serving(server)
