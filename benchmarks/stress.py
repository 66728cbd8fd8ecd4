"""Stress scenarios against a server on loopback, each bounded in count and time, printing figures and
failing (exit 1) when memory or descriptors grow where they must not.

    python benchmarks/stress.py --server fasterapi-asgi            # every scenario, full size
    python benchmarks/stress.py --server uvicorn --only soak,idle  # the same against uvicorn
    python benchmarks/stress.py --smoke                            # CI size, both servers

Scenarios:
- soak: N mixed requests (GET small, POST 1 KB echo, GET 64 KB) on 32 keep-alive connections; RSS and open
  sockets at the start, at a quarter and at the end. Fails when RSS grows by more than 10% + 8 MB after the
  first quarter (warm-up) or sockets grow.
- idle: K keep-alive connections after one request each, held idle: RSS per connection. Fails above 16 KB.
- disconnects: C clients start a streamed response and vanish mid-stream; then RSS, open sockets and a normal
  request. Fails when sockets stay above the start or the server stops answering.
- slow: slow clients (a head one byte at a time, a body that stops, a client that never reads) beside a
  normal client; reports the normal client's worst latency and how many slow connections were cut off.
  Fails when the normal client is not served.
- pipeline: one connection pipelines 300 requests for 1 MB each and never reads: RSS growth (fails > 64 MB).

Only fasterapi-asgi's failures set the exit status; uvicorn's figures are there for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "benchmarks" / "apps"
SERVERS = ("fasterapi-asgi", "uvicorn")
SIZES = {
    "full": {"soak": 1_000_000, "idle": 10_000, "disconnects": 2_000, "slow": 20, "pipeline": 300},
    "smoke": {"soak": 20_000, "idle": 500, "disconnects": 200, "slow": 5, "pipeline": 300},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def sockets(self) -> int:
        """The server's open sockets (listener and connections). Other descriptors are left out: libuv opens
        its io_uring or eventfd lazily, which would read as growth."""
        base = f"/proc/{self.proc.pid}/fd"
        count = 0
        for name in os.listdir(base):
            try:
                count += os.readlink(f"{base}/{name}").startswith("socket:")
            except OSError:
                pass
        return count

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start(name: str, log: Path) -> Server:
    port = free_port()
    common = ["stress_app:app", "--host", "127.0.0.1", "--port", str(port), "--app-dir", str(APP_DIR)]
    common += ["--no-access-log", "--log-level", os.environ.get("STRESS_LOG_LEVEL", "warning")]
    if name == "fasterapi-asgi":
        argv = [
            sys.executable,
            "-m",
            "fasterapi_asgi",
            *common,
            "--timeout-request-header",
            "2",
            "--timeout-request-body",
            "2",
            "--timeout-send",
            "2",
        ]
    else:
        argv = [sys.executable, "-m", "uvicorn", *common, "--loop", "uvloop", "--http", "httptools"]
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return Server(name, port, proc)
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{name} did not start; see {log}")


# ---- a small HTTP/1.1 client -------------------------------------------------------------------------------


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def get(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


def post(path: str, body: bytes) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


async def one_request(port: int, raw: bytes, timeout: float = 10) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        status, _ = await asyncio.wait_for(read_response(reader), timeout)
        return status
    finally:
        writer.close()


@dataclass
class Outcome:
    scenario: str
    figures: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)


# ---- scenarios ---------------------------------------------------------------------------------------------


async def soak(srv: Server, total: int) -> Outcome:
    out = Outcome("soak")
    mix = [get("/plaintext"), post("/echo", b"b" * 1024), get("/big?65536")]
    conns = 32
    per_conn = total // conns
    marks: dict[str, tuple[float, int]] = {"start": (srv.rss_mb(), srv.sockets())}
    done = 0
    errors = 0

    async def worker(i: int) -> None:
        nonlocal done, errors
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        for n in range(per_conn):
            writer.write(mix[(i + n) % 3])
            status, _ = await read_response(reader)
            errors += status != 200
            done += 1
            if done == total // 4 and "quarter" not in marks:
                marks["quarter"] = (srv.rss_mb(), srv.sockets())
        writer.close()

    t0 = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(conns)))
    elapsed = time.monotonic() - t0
    await asyncio.sleep(0.5)
    marks["end"] = (srv.rss_mb(), srv.sockets())
    q = marks.get("quarter", marks["start"])
    out.figures = {
        "requests": f"{done:,} in {elapsed:.0f} s",
        "RSS MB start/quarter/end": f"{marks['start'][0]:.1f} / {q[0]:.1f} / {marks['end'][0]:.1f}",
        "sockets start/end": f"{marks['start'][1]} / {marks['end'][1]}",
        "errors": str(errors),
    }
    if marks["end"][0] > q[0] * 1.10 + 8:
        out.failures.append(f"RSS grew after warm-up: {q[0]:.1f} -> {marks['end'][0]:.1f} MB")
    if marks["end"][1] > marks["start"][1] + 2:
        out.failures.append(f"sockets grew: {marks['start'][1]} -> {marks['end'][1]}")
    if errors:
        out.failures.append(f"{errors} non-200 answers")
    return out


async def idle(srv: Server, count: int) -> Outcome:
    out = Outcome("idle")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, count + 512)), hard))
    before = srv.rss_mb()
    sem = asyncio.Semaphore(200)
    writers: list[asyncio.StreamWriter] = []

    async def open_one() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(get("/plaintext"))
            await read_response(reader)
            writers.append(writer)

    results = await asyncio.gather(*(open_one() for _ in range(count)), return_exceptions=True)
    failed = sum(1 for r in results if isinstance(r, BaseException))
    await asyncio.sleep(1)
    held = srv.rss_mb()
    per_conn_kb = (held - before) * 1024 / max(1, len(writers))
    for w in writers:
        w.close()
    out.figures = {
        "connections": f"{len(writers):,} ({failed} failed)",
        "RSS MB before/held": f"{before:.1f} / {held:.1f}",
        "KB per idle connection": f"{per_conn_kb:.1f}",
    }
    if per_conn_kb > 16:
        out.failures.append(f"{per_conn_kb:.1f} KB per idle connection")
    if failed > count // 100:
        out.failures.append(f"{failed} connections failed")
    return out


async def disconnects(srv: Server, count: int) -> Outcome:
    out = Outcome("disconnects")
    start_sockets, start_rss = srv.sockets(), srv.rss_mb()
    sem = asyncio.Semaphore(100)

    async def vanish() -> None:
        async with sem:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(get("/stream"))
            await reader.readuntil(b"tick\n")
            writer.transport.abort()  # RST, mid-stream

    await asyncio.gather(*(vanish() for _ in range(count)), return_exceptions=True)
    await asyncio.sleep(3)  # the streams' own 2 s, then their tasks end
    end_sockets, end_rss = srv.sockets(), srv.rss_mb()
    status = await one_request(srv.port, get("/plaintext"))
    out.figures = {
        "clients gone mid-stream": f"{count:,}",
        "sockets start/end": f"{start_sockets} / {end_sockets}",
        "RSS MB start/end": f"{start_rss:.1f} / {end_rss:.1f}",
        "served after": str(status),
    }
    if end_sockets > start_sockets + 2:
        out.failures.append(f"sockets left open: {start_sockets} -> {end_sockets}")
    if status != 200:
        out.failures.append("not serving afterwards")
    return out


async def slow(srv: Server, count: int) -> Outcome:
    """Slow clients hold their sockets open for 10 s; the server's own descriptors then tell how many of their
    connections it still keeps (a bound closes them on the server side; the clients do not notice)."""
    out = Outcome("slow")
    start_sockets, before = srv.sockets(), srv.rss_mb()
    # The bounds are 2 s of no progress; a loaded machine (CI) may still see the kernel take more of a 10 MB
    # response for a few seconds, which counts as progress, so the count is taken well after.
    hold = 10.0
    socks: list[socket.socket] = []

    def connect() -> socket.socket:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # Before connect, so the advertised window is small from the start.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", srv.port))
        s.setblocking(False)
        socks.append(s)
        return s

    async def slow_head() -> None:
        s = connect()
        for b in get("/plaintext")[:-1]:  # never completes the head
            try:
                s.send(bytes([b]))
            except OSError:
                return
            await asyncio.sleep(0.3)

    async def slow_body() -> None:
        connect().send(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")

    async def non_reader() -> None:
        connect().send(get("/big?10000000"))

    worst = 0.0
    served = 0
    stop = asyncio.Event()

    async def normal() -> None:
        nonlocal worst, served
        while not stop.is_set():
            t = time.monotonic()
            status = await one_request(srv.port, get("/plaintext"), timeout=5)
            worst = max(worst, time.monotonic() - t)
            served += status == 200
            await asyncio.sleep(0.05)

    normal_task = asyncio.ensure_future(normal())
    await asyncio.gather(*(f() for _ in range(count) for f in (slow_head, slow_body, non_reader)))
    await asyncio.sleep(hold)
    stop.set()
    await normal_task  # its own connections closed (server side too) before counting
    await asyncio.sleep(1)
    held = srv.sockets() - start_sockets
    for s in socks:
        s.close()
    out.figures = {
        "slow clients (head, body, non-reader)": f"{count} of each",
        f"connections the server still held after {hold:.0f} s": f"{held} of {3 * count}",
        "normal client: served, worst latency": f"{served}, {worst * 1000:.0f} ms",
        "RSS MB before/during": f"{before:.1f} / {srv.rss_mb():.1f}",
    }
    if served == 0 or worst > 2:
        out.failures.append("the normal client was not served promptly")
    if srv.name == "fasterapi-asgi" and held > 0:
        out.failures.append(f"{held} slow connections still held past the time bounds")
    return out


async def pipeline(srv: Server, count: int) -> Outcome:
    out = Outcome("pipeline")
    before = srv.rss_mb()
    sock = socket.create_connection(("127.0.0.1", srv.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(b"".join(get("/big?1000000") for _ in range(count)))
    await asyncio.sleep(3)
    grown = srv.rss_mb() - before
    sock.close()
    status = await one_request(srv.port, get("/plaintext"))
    out.figures = {
        "pipelined 1 MB requests, never read": str(count),
        "RSS growth MB": f"{grown:.1f}",
        "served after": str(status),
    }
    if grown > 64:
        out.failures.append(f"RSS grew by {grown:.0f} MB")
    return out


SCENARIOS = {"soak": soak, "idle": idle, "disconnects": disconnects, "slow": slow, "pipeline": pipeline}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", action="append", choices=SERVERS, help="repeatable (default: both)")
    p.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    p.add_argument("--smoke", action="store_true", help="CI sizes")
    p.add_argument("--out", default="build/stress", help="server logs")
    args = p.parse_args(argv)
    sizes = SIZES["smoke" if args.smoke else "full"]
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = False
    rows: list[str] = []
    for server_name in args.server or list(SERVERS):
        for scenario in names:
            srv = start(server_name, out_dir / f"{server_name}-{scenario}.log")
            try:
                result = asyncio.run(SCENARIOS[scenario](srv, sizes[scenario]))
            finally:
                srv.stop()
            figures = "; ".join(f"{k}: {v}" for k, v in result.figures.items())
            verdict = "FAIL " + "; ".join(result.failures) if result.failures else "ok"
            # uvicorn has no time bounds: its failures are reported, not counted against this server.
            if result.failures and server_name == "fasterapi-asgi":
                failed = True
            rows.append(f"| {server_name} | {scenario} | {figures} | {verdict} |")
            print(rows[-1], flush=True)
    print("\n| server | scenario | figures | verdict |\n|---|---|---|---|\n" + "\n".join(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
