"""Run one benchmark: every server in turn, interleaved rounds, warm-up, measured run, RSS."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import load, servers
from .report import BenchResult, RunRecord, server_cpu_per_request

Progress = Callable[[str], None]


class BenchError(RuntimeError):
    """A benchmark could not be run (missing tool, server failed to start, load generator failed)."""


@dataclass
class BenchConfig:
    app: str
    servers: list[str]
    path: str = "/"
    method: str = "GET"
    body: bytes | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 64
    threads: int = 1
    pipeline: int = 1
    rate: float | None = None
    warmup: int = 2
    rounds: int = 3
    duration: int = 10
    app_dir: Path = Path(".")
    server_args: dict[str, list[str]] = field(default_factory=dict)
    reference: str | None = None
    pin: bool = True
    workdir: Path | None = None
    startup_timeout: float = 30.0
    command_line: str = ""
    tls: bool = False  # the servers serve HTTPS (their TLS options are in server_args); the load is https://
    http2: bool = False  # the servers serve HTTP/2 (options in server_args); the load is h2load over h2
    streams: int = 10  # HTTP/2: concurrent streams per connection (h2load -m)

    def public(self) -> dict[str, object]:
        d = asdict(self)
        body = d.pop("body")
        d["body_bytes"] = len(body) if body is not None else 0
        d["app_dir"] = str(self.app_dir)
        d["workdir"] = str(self.workdir) if self.workdir else None
        d["headers"] = [list(h) for h in self.headers]
        return d


def required_tools(config: BenchConfig) -> list[tuple[str, str]]:
    """(executable, install command) pairs this configuration needs."""
    if config.rate is not None or config.http2:
        return [("h2load", load.H2LOAD_INSTALL)]
    return [("wrk", load.WRK_INSTALL)]


def check_prerequisites(config: BenchConfig, *, skip_missing: bool = False) -> tuple[list[str], list[str]]:
    """Raise :class:`BenchError` for a missing load generator; return (servers to run, notes).

    A missing server is an error unless ``skip_missing`` (then it is dropped with a note).
    """
    for exe, install in required_tools(config):
        if shutil.which(exe) is None:
            raise BenchError(f"the load generator {exe!r} is not installed; install it with: {install}")
    runnable, notes = [], []
    for name in config.servers:
        try:
            servers.check_server(name)
        except servers.ServerUnavailable as exc:
            if not skip_missing or name not in servers.SERVERS:
                raise BenchError(str(exc)) from None
            notes.append(f"skipped {exc}")
            continue
        runnable.append(name)
    if not runnable:
        raise BenchError("no server left to benchmark")
    return runnable, notes


def _tool_version(argv: Sequence[str]) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0].strip() if text else "unknown"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(config: BenchConfig, pinning: servers.Pinning) -> dict[str, object]:
    gen = (
        "h2load: " + _tool_version(["h2load", "--version"])
        if config.rate is not None
        else _tool_version(["wrk", "-v"])
    )
    pin = (
        f"server on CPU {pinning.server_cpu}, load generator on CPU {pinning.load_cpu}"
        if pinning.server_cpu is not None
        else pinning.note
    )
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "load_generator": gen,
        "pinning": pin,
    }


def _lua_path(config: BenchConfig, workdir: Path) -> Path:
    path = workdir / "request.lua"
    path.write_text(
        load.wrk_script(
            method=config.method, body=config.body, headers=config.headers, pipeline=config.pipeline
        )
    )
    return path


def _run_load(
    config: BenchConfig, port: int, duration: int, pinning: servers.Pinning, workdir: Path, tag: str
) -> load.LoadResult:
    url = f"{'https' if config.tls else 'http'}://{servers.HOST}:{port}{config.path}"
    log_file = workdir / f"h2load-{tag}.log"
    body_file = None  # h2load reads a request body from a file
    if config.body is not None and (config.http2 or config.rate is not None):
        body_file = workdir / "body.bin"
        body_file.write_bytes(config.body)
    if config.http2:
        cmd = pinning.load_prefix() + load.h2load_h2_command(
            url,
            duration_s=duration,
            connections=config.connections,
            threads=config.threads,
            streams=config.streams,
            log_file=str(log_file),
            headers=config.headers,
            body_file=str(body_file) if body_file else None,
        )
    elif config.rate is not None:
        cmd = pinning.load_prefix() + load.h2load_command(
            url,
            duration_s=duration,
            connections=config.connections,
            threads=config.threads,
            rate=config.rate,
            log_file=str(log_file),
            headers=config.headers,
            body_file=str(body_file) if body_file else None,
        )
    else:
        cmd = pinning.load_prefix() + load.wrk_command(
            url,
            duration_s=duration,
            connections=config.connections,
            threads=config.threads,
            script_path=str(_lua_path(config, workdir)),
        )
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise BenchError(f"load generator did not finish: {' '.join(cmd)}") from None
    text = out.stdout + out.stderr
    (workdir / f"load-{tag}.txt").write_text("$ " + " ".join(cmd) + "\n" + text)
    try:
        if config.http2:
            # Every server must really have spoken HTTP/2: a silent fallback to HTTP/1.1 would compare
            # protocols, not servers.
            spoken = load.h2load_protocol(text)
            if spoken not in ("h2", "h2c"):
                raise BenchError(f"the server did not speak HTTP/2 (h2load: application protocol {spoken})")
        if config.rate is not None or config.http2:
            log_text = Path(log_file).read_text() if Path(log_file).exists() else ""
            if config.http2:
                Path(log_file).unlink(missing_ok=True)  # one line per request: large, and read already
            return load.parse_h2load_output(text, log_text)
        return load.parse_wrk_output(text)
    except load.LoadParseError as exc:
        tool = cmd[len(pinning.load_prefix())]
        raise BenchError(f"{tool} failed (exit {out.returncode}): {exc}") from None


def _fmt_run(r: RunRecord) -> str:
    p50 = f"{r.p50_ms:.2f}" if r.p50_ms is not None else "-"
    p99 = f"{r.p99_ms:.2f}" if r.p99_ms is not None else "-"
    cpu = ""
    if r.server_core_busy is not None and r.load_core_busy is not None:
        cpu += f"  cores busy: server {r.server_core_busy:.0%}, load {r.load_core_busy:.0%}"
    if r.cpu_us_per_request is not None:
        cpu += f"  CPU {r.cpu_us_per_request:.2f} µs/req"
    return (
        f"{r.rps:>10,.0f} req/s  p50 {p50} ms  p99 {p99} ms  errors {r.errors}  "
        f"peak RSS {r.peak_rss_kb / 1024:.1f} MB{cpu}"
    )


def run_benchmark(config: BenchConfig, progress: Progress | None = None) -> BenchResult:
    """Run ``config``: for each round, for each server: start, warm up, measure, stop."""
    say = progress or (lambda _m: None)
    if config.pipeline > 1 and config.rate is not None:
        raise BenchError("--pipeline cannot be combined with --rate")
    if config.http2 and (config.rate is not None or config.pipeline > 1):
        raise BenchError(
            "--http2 measures maximum throughput: it cannot be combined with --rate or --pipeline"
        )
    if config.rate is not None and config.method not in ("GET", "POST"):
        raise BenchError("fixed-rate mode (h2load) supports GET, and POST with a body, only")
    if config.rate is not None and config.method == "POST" and config.body is None:
        raise BenchError("fixed-rate POST needs a body (--body or --body-file)")
    pinning = servers.choose_pinning(config.pin)
    workdir = servers.make_workdir(config.workdir)
    reference = config.reference or config.servers[0]
    if reference not in config.servers:
        raise BenchError(f"reference server {reference!r} is not among the servers run: {config.servers}")
    result = BenchResult(
        config={**config.public(), "reference": reference},
        environment=environment(config, pinning),
        servers=list(config.servers),
        reference=reference,
    )
    if config.rate is not None and "hypercorn" in config.servers:
        note = "h2load 1.52 counts hypercorn's `HTTP/1.1 200 ` status line (empty reason) as failed"
        result.notes.append(note)
        say(f"warning: {note}")
    if config.pipeline > 1:
        result.notes.append(
            "latency percentiles are not reported with --pipeline: wrk records one sample per batch"
        )
    if pinning.note:
        result.notes.append(pinning.note)
        say(f"warning: {pinning.note}")
    if pinning.server_cpu is None:
        result.notes.append(
            "not pinned: CPU µs/request is the server process tree's own CPU time (user + system), "
            "without kernel work done for it elsewhere; core busy % and the client-bound check need pinning"
        )
    for name in config.servers:
        result.versions[name] = servers.server_version(name)
        result.commands[name] = servers.SERVERS[name].description + (
            " " + " ".join(config.server_args.get(name, [])) if config.server_args.get(name) else ""
        )

    def probe(port: int) -> bytes:
        return servers.build_request(config.method, config.path, port, config.headers, config.body)

    total = config.rounds * len(config.servers)
    step = 0
    for rnd in range(1, config.rounds + 1):
        for name in config.servers:
            step += 1
            prefix = f"[{step}/{total}] round {rnd}/{config.rounds} {name}"
            say(f"{prefix}: starting")
            try:
                srv = servers.start_server(
                    name,
                    config.app,
                    app_dir=config.app_dir,
                    workdir=workdir,
                    pinning=pinning,
                    extra_args=config.server_args.get(name, []),
                    probe_request=probe,
                    startup_timeout_s=config.startup_timeout,
                    log_name=f"server-{name}-r{rnd}.log",
                    tls=config.tls,
                )
            except servers.ServerStartError as exc:
                raise BenchError(str(exc)) from None
            try:
                status = servers.http_probe(srv.port, probe(srv.port), tls=config.tls)
                if status >= 400:
                    msg = f"{name} answers {config.method} {config.path} with HTTP {status}"
                    say(f"warning: {msg}")
                    if msg not in result.notes:
                        result.notes.append(msg)
                if config.warmup > 0:
                    say(f"{prefix}: warm-up {config.warmup} s")
                    _run_load(config, srv.port, config.warmup, pinning, workdir, f"{name}-r{rnd}-warmup")
                say(f"{prefix}: measuring {config.duration} s")
                with (
                    servers.RssSampler(srv.pid) as rss,
                    servers.CpuWindow(srv.pid, pinning.server_cpu, pinning.load_cpu) as cpu,
                ):
                    lr = _run_load(config, srv.port, config.duration, pinning, workdir, f"{name}-r{rnd}")
                if srv.proc.poll() is not None:
                    raise BenchError(f"{name} died during the run; its log:\n{srv.log_tail()}")
            except OSError as exc:
                raise BenchError(f"{name}: {exc}; its log:\n{srv.log_tail()}") from None
            finally:
                srv.stop()
            cpu_us, cpu_source = server_cpu_per_request(
                lr.requests,
                server_core_busy=cpu.server_busy,
                window_s=cpu.window_s,
                tree_cpu_s=cpu.tree_cpu_s,
            )
            record = RunRecord(
                server=name,
                round=rnd,
                rps=lr.rps,
                p50_ms=lr.p50_ms if config.pipeline == 1 else None,
                p99_ms=lr.p99_ms if config.pipeline == 1 else None,
                requests=lr.requests,
                errors=lr.errors,
                non_2xx_3xx=lr.non_2xx_3xx,
                socket_errors=lr.socket_errors,
                peak_rss_kb=rss.peak_kb,
                duration_s=lr.duration_s,
                server_core_busy=cpu.server_busy,
                load_core_busy=cpu.load_busy,
                cpu_window_s=cpu.window_s,
                server_tree_cpu_s=cpu.tree_cpu_s,
                cpu_us_per_request=cpu_us,
                cpu_source=cpu_source,
            )
            result.runs.append(record)
            say(f"{prefix}: {_fmt_run(record)}")
    return result


def default_servers(against: Sequence[str]) -> list[str]:
    """fasterapi-asgi first, then the peers (duplicates dropped, order kept)."""
    out = ["fasterapi-asgi"]
    for name in against:
        if name and name not in out:
            out.append(name)
    return out
