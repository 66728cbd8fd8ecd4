"""fasterapi-asgi as a gunicorn worker class: gunicorn binds and supervises, each worker serves natively."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from harness import REPO_ROOT, free_port


@pytest.mark.timeout(60)
def test_gunicorn_worker_serves_and_stops_gracefully(tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "gunicorn.log"
    apps = str(REPO_ROOT / "tests/python/apps")
    worker = "fasterapi_asgi.workers.FasterAPIWorker"
    bind = f"127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "gunicorn",
        "-k",
        worker,
        "-w",
        "2",
        "-b",
        bind,
        "--chdir",
        apps,
        "raw_app:app",
    ]
    # gunicorn puts its working directory on sys.path: outside the checkout, its workers import the tests'
    # own copy of the package (the checkout's, or an installed wheel's).
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path
        )
    try:
        deadline = time.monotonic() + 20
        pids: set[int] = set()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=5) as client:
            while True:
                try:
                    r = client.get("/")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, log_path.read_text()
                    time.sleep(0.1)
            assert r.status_code == 200
            assert r.headers["server"] == "fasterapi-asgi"
            for _ in range(20):
                scope = httpx.get(f"http://127.0.0.1:{port}/scope", trust_env=False).json()
                assert scope["type"] == "http"
        # Two workers, each its own native server. The first may answer all of the above while the second is
        # still importing (seen under load on 2 cores): wait for the second's start line, within the deadline.
        while True:
            text = log_path.read_text()
            pids = {
                int(line.split("[")[-1].rstrip("]"))
                for line in text.splitlines()
                if "Started server process" in line
            }
            if len(pids) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(pids) == 2, text
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    text = log_path.read_text()
    assert code == 0, text
    assert text.count("Application shutdown complete.") == 2, text


@pytest.mark.timeout(60)
def test_gunicorn_tls_options_are_served_by_the_core(tmp_path: Path) -> None:
    """gunicorn's --certfile/--keyfile reach the worker's Config, as uvicorn's worker maps them."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    port = free_port()
    log_path = tmp_path / "gunicorn-tls.log"
    cmd = [sys.executable, "-m", "gunicorn", "-k", "fasterapi_asgi.workers.FasterAPIWorker", "-w", "1"]
    cmd += ["-b", f"127.0.0.1:{port}", "--chdir", str(REPO_ROOT / "tests/python/apps")]
    pem = str(tmp_path / "server.pem")
    cmd += ["--certfile", pem, "--keyfile", pem, "tls_app:app"]
    # gunicorn puts its working directory on sys.path: outside the checkout, its workers import the tests'
    # own copy of the package (the checkout's, or an installed wheel's).
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path
        )
    try:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        deadline = time.monotonic() + 20
        while True:
            try:
                r = httpx.get(f"https://localhost:{port}/scope", verify=ctx, trust_env=False, timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None, log_path.read_text()
                time.sleep(0.1)
        assert r.json()["scheme"] == "https"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
