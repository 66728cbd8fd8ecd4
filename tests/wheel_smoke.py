"""Smoke test of an installed fasterapi-asgi: serve examples/hello.py on a free port, check the answer.

cibuildwheel's test-command (pyproject.toml, [tool.cibuildwheel]) runs it against each freshly built wheel:

    python tests/wheel_smoke.py examples

It fails (non-zero exit, with the server's output) when the native core does not import, the server does not
answer within 30 s, the answer is not hello.py's, or SIGTERM does not stop the server within 10 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPECTED = b"Hello, world!"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    with socket.create_connection(("127.0.0.1", port), timeout=2.0) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: wheel_smoke.py EXAMPLES_DIR", file=sys.stderr)
        return 2
    examples = Path(argv[0]).resolve()
    # The extension module must come from the installed wheel: a pure-Python import alone proves nothing.
    import fasterapi_asgi._core as core

    print(f"native core: {core.__file__}")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "server.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fasterapi_asgi", "hello:app", "--app-dir", str(examples)]
                + ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                cwd=tmp,  # not the source tree: the installed package is what runs
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        try:
            deadline = time.monotonic() + 30.0
            answer: tuple[int, bytes] | None = None
            while answer is None:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text()}")
                try:
                    answer = get(port)
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"server not answering after 30 s:\n{log.read_text()}") from None
                    time.sleep(0.1)
            if answer != (200, EXPECTED):
                raise SystemExit(f"unexpected answer {answer!r}:\n{log.read_text()}")
            print(f"GET / -> {answer[0]} {answer[1].decode()}")
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    output = log.read_text()
                    raise SystemExit(f"server did not stop within 10 s of SIGTERM:\n{output}") from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
