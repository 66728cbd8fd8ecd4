"""Instructions per raw ASGI request, per server, counted by valgrind's callgrind.

    python benchmarks/callgrind.py                       # fasterapi-asgi, uvicorn, granian; 2 runs each
    python benchmarks/callgrind.py --servers uvicorn --requests 500 --runs 1 --out /tmp/cg

Instruction counts do not depend on the machine's load, so unlike requests/s they are repeatable on a
shared 2-core box. For each server and run: start it under ``valgrind --tool=callgrind
--instr-atstart=no --trace-children=yes`` (every process and thread of the server is counted; callgrind
keeps one file per process with all its threads), wait until it answers, open ONE keep-alive connection
and send the warm-up requests, switch instrumentation on (``callgrind_control -i on`` for every process
of the server), send exactly N more sequential GET /plaintext requests on that connection (each
response read completely and checked), switch it off, dump, stop the server, and sum the ``totals:``
of every dump file of the run. Instructions per request = sum / N. Connection set-up, start-up and
shutdown are not counted; background timers of the server during the measured requests are.

Runs are interleaved (A B A B ...), one valgrind at a time. Results: ``--out`` gets callgrind.json,
callgrind.md and the dump files (``dumps/<server>-<run>/``, readable with callgrind_annotate). Exit
code 0 when every server ran, 1 when one failed or (with --strict) two runs of a server differ by more
than --tolerance, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "apps"
sys.path.insert(0, str(ROOT))

from fasterapi_asgi.bench import servers  # noqa: E402

DEFAULT_SERVERS = ["fasterapi-asgi", "uvicorn", "granian"]
KNOWN_SERVERS = ["fasterapi-asgi", "uvicorn", "granian", "hypercorn"]
APP = "raw_asgi:app"
PATH = "/plaintext"
TARGET = "<= 0.35x uvicorn"
TARGET_RATIO = 0.35


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ callgrind output files


class CallgrindFormatError(ValueError):
    """A file is not callgrind output or lacks the requested event."""


def _numbers(text: str) -> list[int]:
    return [int(tok) for tok in text.split()]


def parse_callgrind_total(text: str, event: str = "Ir") -> int:
    """The total of ``event`` in one callgrind output file.

    Uses the ``totals:`` line (written at the end of every dump); without one, the ``summary:`` line; without
    either, the sum of the self-cost lines (the inclusive cost line following each ``calls=`` line is skipped,
    as it repeats costs already counted in the callee).
    """
    events: list[str] | None = None
    positions = 1
    totals: list[int] | None = None
    summary: list[int] | None = None
    body_sum: list[int] | None = None
    skip_next = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("events:"):
            events = line.split(":", 1)[1].split()
            body_sum = [0] * len(events)
            continue
        if line.startswith("positions:"):
            positions = len(line.split(":", 1)[1].split()) or 1
            continue
        if line.startswith("totals:"):
            totals = _numbers(line.split(":", 1)[1])
            continue
        if line.startswith("summary:"):
            summary = _numbers(line.split(":", 1)[1])
            continue
        if line.startswith("calls="):
            skip_next = True
            continue
        if line[0].isdigit() or line[0] in "+-*":
            if skip_next:
                skip_next = False
                continue
            if body_sum is None:
                continue
            costs = line.split()[positions:]
            for i, tok in enumerate(costs[: len(body_sum)]):
                body_sum[i] += int(tok)
            continue
        skip_next = False
    if events is None:
        raise CallgrindFormatError("no 'events:' line: not a callgrind output file")
    if event not in events:
        raise CallgrindFormatError(f"event {event!r} not recorded (events: {' '.join(events)})")
    index = events.index(event)
    for values in (totals, summary):
        if values is not None:
            return values[index] if index < len(values) else 0
    assert body_sum is not None
    return body_sum[index]


_DUMP_NAME = re.compile(r"^callgrind\.out\.(\d+)(?:\.(\d+))?(?:-(\d+))?$")


def dump_files(directory: Path) -> list[Path]:
    """Every callgrind output file in ``directory``: ``callgrind.out.<pid>[.<dump>][-<thread>]``, sorted."""

    def key(p: Path) -> tuple[int, int, int]:
        m = _DUMP_NAME.match(p.name)
        assert m is not None
        return int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)

    return sorted((p for p in directory.iterdir() if _DUMP_NAME.match(p.name)), key=key)


def sum_dump_files(paths: Iterable[Path], event: str = "Ir") -> int:
    """Sum of ``event`` over the files; empty files (a process that never dumped) count 0."""
    total = 0
    for p in paths:
        text = p.read_text(errors="replace")
        if text.strip():
            total += parse_callgrind_total(text, event)
    return total


# --------------------------------------------------------------------------------------- results maths


@dataclass
class RunResult:
    server: str
    run: int
    requests: int
    instructions: int
    files: list[str] = field(default_factory=list)
    processes: int = 0
    seconds: float = 0.0

    @property
    def per_request(self) -> float:
        return per_request(self.instructions, self.requests)


def per_request(instructions: int, requests: int) -> float:
    if requests <= 0:
        raise ValueError("requests must be positive")
    return instructions / requests


def spread(values: Sequence[float]) -> float:
    """(max - min) / median: 0 for a single value."""
    if len(values) < 2:
        return 0.0
    med = statistics.median(values)
    return (max(values) - min(values)) / med if med else 0.0


def summarize(
    runs: Sequence[RunResult], reference: str = "uvicorn", tolerance: float = 0.02
) -> dict[str, Any]:
    """Per server: each run's instructions/request, the median, the spread and the ratio to ``reference``."""
    order: list[str] = []
    by_server: dict[str, list[float]] = {}
    for r in runs:
        if r.server not in by_server:
            order.append(r.server)
            by_server[r.server] = []
        by_server[r.server].append(r.per_request)
    medians = {name: statistics.median(v) for name, v in by_server.items()}
    ref = medians.get(reference)
    rows = []
    for name in order:
        values = by_server[name]
        s = spread(values)
        rows.append(
            {
                "server": name,
                "per_request": values,
                "median": medians[name],
                "spread": s,
                "repeatable": s <= tolerance,
                "ratio": medians[name] / ref if ref else None,
            }
        )
    return {"reference": reference, "tolerance": tolerance, "servers": rows}


def _fmt_count(v: float) -> str:
    return f"{v:,.0f}"


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    ref = summary["reference"]
    lines = [
        f"Instructions per raw ASGI request (`GET {meta['path']}` on `{meta['app']}`, one keep-alive "
        f"connection, {meta['requests']:,} counted requests after {meta['warmup']:,} warm-up, all processes "
        f"and threads of the server), valgrind {meta['valgrind']}; {meta['date']}. Target: {TARGET}.",
        "",
        f"| server | instructions/request | runs | spread | ratio to {ref} |",
        "|---|---:|---|---:|---:|",
    ]
    for row in summary["servers"]:
        runs = ", ".join(_fmt_count(v) for v in row["per_request"])
        ratio = f"{row['ratio']:.3f}x" if row["ratio"] is not None else "-"
        flag = "" if row["repeatable"] else " (over tolerance)"
        lines.append(
            f"| {row['server']} | {_fmt_count(row['median'])} | {runs} | {row['spread'] * 100:.2f}%{flag} "
            f"| {ratio} |"
        )
    if meta.get("failed"):
        lines += ["", "Failed: " + "; ".join(meta["failed"])]
    if meta.get("versions"):
        lines += ["", "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + "."]
    lines += ["", f"Reproduce: `{meta['command']}`"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ the client


class KeepAliveClient:
    """Sequential HTTP/1.1 requests on one connection; every response is read completely and checked."""

    def __init__(self, port: int, path: str = PATH, timeout_s: float = 60.0) -> None:
        self.sock = socket.create_connection((servers.HOST, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host = f"{servers.HOST}:{port}"
        self.request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: callgrind\r\n\r\n".encode()
        self.buf = b""
        self.sent = 0

    def close(self) -> None:
        self.sock.close()

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"server closed the connection after {self.sent} requests")
        self.buf += chunk

    def one(self) -> None:
        self.sock.sendall(self.request)
        self.sent += 1
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = lines[0].split(b" ", 2)
        if len(status) < 2 or status[1] != b"200":
            raise ConnectionError(f"unexpected response to request {self.sent}: {lines[0]!r}")
        length = None
        for h in lines[1:]:
            name, _, value = h.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        if length is None:
            raise ConnectionError(f"response {self.sent} has no content-length (chunked is not read)")
        while len(self.buf) < length:
            self._fill()
        self.buf = self.buf[length:]

    def many(self, n: int) -> None:
        for _ in range(n):
            self.one()


# ------------------------------------------------------------------------------------------- running


def valgrind_version() -> str:
    try:
        out = subprocess.run(
            ["valgrind", "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return "not installed"
    return out.stdout.strip().removeprefix("valgrind-") or "unknown"


class _ValgrindPrefix(servers.Pinning):
    """A Pinning whose server prefix also starts the server under callgrind (servers.start_server's argv)."""

    def __init__(self, base: servers.Pinning, valgrind_argv: list[str]) -> None:
        super().__init__(base.server_cpu, base.load_cpu, base.note)
        self.valgrind_argv = valgrind_argv

    def server_prefix(self) -> list[str]:
        return super().server_prefix() + self.valgrind_argv


def server_extra_args(name: str, workdir: Path) -> list[str]:
    """Settings that let one connection carry every request of a run (hypercorn closes it after 1,000)."""
    if name == "hypercorn":
        conf = workdir / "hypercorn.toml"
        conf.write_text("keep_alive_max_requests = 100000000\nkeep_alive_timeout = 600\n")
        return ["--config", str(conf)]
    return []


def valgrind_argv(dump_dir: Path) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--trace-children=yes",
        f"--callgrind-out-file={dump_dir}/callgrind.out.%p",
    ]


def callgrind_control(args: Sequence[str], pids: Sequence[int], timeout_s: float) -> list[int]:
    """Run ``callgrind_control ARGS PID`` for each pid; returns the pids that answered OK."""
    ok = []
    for pid in pids:
        try:
            out = subprocess.run(
                ["callgrind_control", *args, str(pid)],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired:
            continue
        if out.returncode == 0 and "OK" in out.stdout:
            ok.append(pid)
    return ok


class RunFailed(RuntimeError):
    pass


def run_one(name: str, run: int, args: argparse.Namespace, out: Path, pinning: servers.Pinning) -> RunResult:
    dump_dir = out / "dumps" / f"{name}-{run}"
    if dump_dir.exists():
        shutil.rmtree(dump_dir)
    dump_dir.mkdir(parents=True)
    t0 = time.monotonic()
    srv = servers.start_server(
        name,
        args.app,
        app_dir=APPS,
        workdir=out / "logs",
        pinning=_ValgrindPrefix(pinning, valgrind_argv(dump_dir)),
        extra_args=server_extra_args(name, out / "logs"),
        probe_request=lambda p: servers.build_request("GET", args.path, p),
        startup_timeout_s=args.startup_timeout,
        log_name=f"server-{name}-{run}.log",
    )
    client: KeepAliveClient | None = None
    try:
        client = KeepAliveClient(srv.port, path=args.path, timeout_s=args.request_timeout)
        client.many(args.warmup)
        time.sleep(0.5)  # let the server settle (a worker still finishing start-up work, etc.)
        pids = servers.process_tree(srv.pid)
        on = callgrind_control(["-i", "on"], pids, args.request_timeout)
        if not on:
            raise RunFailed(f"{name}: callgrind_control -i on reached none of the processes {pids}")
        client.many(args.requests)
        off = callgrind_control(["-i", "off"], on, args.request_timeout)
        dumped = callgrind_control(["-d"], on, args.request_timeout)
        if sorted(off) != sorted(on) or sorted(dumped) != sorted(on):
            raise RunFailed(
                f"{name}: callgrind_control reached {on} for -i on but {off} / {dumped} for off / dump"
            )
    finally:
        if client is not None:
            client.close()
        srv.stop(timeout_s=args.startup_timeout)
    files = dump_files(dump_dir)
    total = sum_dump_files(files)
    if total <= 0:
        raise RunFailed(f"{name}: no instructions counted (files: {[f.name for f in files]})")
    return RunResult(
        server=name,
        run=run,
        requests=args.requests,
        instructions=total,
        files=[str(f.relative_to(out)) for f in files],
        processes=len(on),
        seconds=round(time.monotonic() - t0, 1),
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help=f"of {', '.join(KNOWN_SERVERS)}")
    p.add_argument(
        "--app", default=APP, help=f"app in benchmarks/apps (default {APP}; native_app:app for a route)"
    )
    p.add_argument("--path", default=PATH, help=f"GET path (default {PATH})")
    p.add_argument("--requests", type=int, default=2000, help="counted requests per run (default 2000)")
    p.add_argument("--warmup", type=int, default=200, help="uncounted requests first (default 200)")
    p.add_argument("--runs", type=int, default=2, help="runs per server, interleaved (default 2)")
    p.add_argument("--reference", default="uvicorn")
    p.add_argument("--tolerance", type=float, default=0.02, help="max spread between runs (default 0.02)")
    p.add_argument("--strict", action="store_true", help="exit 1 when a server's runs exceed --tolerance")
    p.add_argument("--startup-timeout", type=float, default=300.0, help="seconds (valgrind is slow)")
    p.add_argument("--request-timeout", type=float, default=120.0, help="seconds per socket operation")
    p.add_argument("--no-pin", action="store_true", help="do not pin the server to one CPU")
    p.add_argument(
        "--out", type=Path, help="results folder (default benchmarks/results/callgrind-<timestamp>)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # A fixed string-hash seed for the servers (inherited through the environment): dict probe sequences
    # depend on it; with a random seed one build's count moved by ~1% between processes (2026-12-01).
    os.environ.setdefault("PYTHONHASHSEED", "0")
    names = list(dict.fromkeys(n for n in args.servers.split(",") if n))
    unknown = [n for n in names if n not in KNOWN_SERVERS]
    if unknown or not names or args.requests < 1 or args.runs < 1 or args.warmup < 0:
        say(f"bad arguments (servers must be among {', '.join(KNOWN_SERVERS)}; counts positive)")
        return 2
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            say(f"{tool} is not installed; install it with: apt-get install -y valgrind")
            return 2
    stamp = _dt.datetime.now(_dt.timezone.utc)
    out = (args.out or ROOT / "benchmarks" / "results" / f"callgrind-{stamp:%Y%m%d-%H%M%S}").resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    pinning = servers.choose_pinning(not args.no_pin)

    failed: list[str] = []
    available = []
    for name in names:
        try:
            servers.check_server(name)
            available.append(name)
        except servers.ServerUnavailable as exc:
            failed.append(str(exc))
            say(f"warning: {exc}")
    results: list[RunResult] = []
    broken: set[str] = set()
    for run in range(1, args.runs + 1):
        for name in available:
            if name in broken:
                continue
            say(
                f"[callgrind] {name} run {run}/{args.runs}: "
                f"{args.warmup} warm-up + {args.requests} counted requests"
            )
            try:
                r = run_one(name, run, args, out, pinning)
            except (RunFailed, servers.ServerStartError, OSError) as exc:
                broken.add(name)
                failed.append(f"{name}: {str(exc).splitlines()[0]}")
                say(f"[callgrind] {name} FAILED: {exc}")
                continue
            results.append(r)
            say(
                f"[callgrind] {name} run {run}: {r.instructions:,} instructions in {len(r.files)} "
                f"file(s) from {r.processes} process(es) = {r.per_request:,.0f}/request ({r.seconds:.0f} s)"
            )
    summary = summarize([r for r in results if r.server not in broken], args.reference, args.tolerance)
    versions = {n: servers.server_version(n) for n in available}
    meta = {
        "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/callgrind.py " + " ".join(argv),
        "app": args.app,
        "path": args.path,
        "requests": args.requests,
        "warmup": args.warmup,
        "runs": args.runs,
        "valgrind": valgrind_version(),
        "versions": versions,
        "failed": failed,
        "target": TARGET,
    }
    detail = [{**asdict(r), "per_request": r.per_request} for r in results]
    data = {**meta, "summary": summary, "runs_detail": detail}
    (out / "callgrind.json").write_text(json.dumps(data, indent=2) + "\n")
    md = markdown(summary, meta)
    (out / "callgrind.md").write_text(md)
    print(md)
    say(f"callgrind results: {out}")
    if failed:
        return 1
    if args.strict and not all(row["repeatable"] for row in summary["servers"]):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
