"""The project's benchmark suite: every scenario of docs/benchmarks.md ("The suite"), against every peer.

    python benchmarks/run_suite.py                      # full run (about 25 minutes on 2 cores)
    python benchmarks/run_suite.py --write-docs         # ... and update docs/benchmarks.md + chart
    python benchmarks/run_suite.py --smoke              # CI: seconds per scenario, no verdict on numbers
    python benchmarks/run_suite.py --scenarios raw_plaintext,idle_rss --peers uvicorn,granian
    python benchmarks/run_suite.py --scenarios none --micro --callgrind --write-docs   # micro sections only

Each scenario is one ``fasterapi-asgi bench`` run (servers pinned, warm-up, interleaved rounds,
medians of same-round ratios); results go to ``--out`` (one folder per scenario with bench.json,
bench.md and the raw wrk/server logs, plus suite.json and suite.md). Scenarios that need
something missing (native routes, nginx) are reported "not available", not failed. Exit code:
0 when every available scenario ran, 1 when one failed to run, 2 on a usage error.

Optional micro-level sections (docs/benchmarks.md, "Micro-benchmarks"): ``--micro`` builds and runs the C++
parse + route benchmark (benchmarks/micro, ``build/bench``), ``--callgrind`` runs
benchmarks/callgrind.py (instructions per raw ASGI request under valgrind). Their results go to
``micro/`` and ``callgrind/`` in ``--out``, to suite.md, and with --write-docs to their own block of
docs/benchmarks.md (so running them alone leaves the scenario table in place, and vice versa).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
APPS = ROOT / "benchmarks" / "apps"
sys.path.insert(0, str(ROOT))

from fasterapi_asgi.bench import chart, cli, runner, servers  # noqa: E402

SELF = "fasterapi-asgi"
ASGI_PEERS = ["uvicorn", "granian", "hypercorn", "fastpysgi"]
DOCS = ROOT / "docs" / "benchmarks.md"
DOCS_CHART = ROOT / "docs" / "benchmarks.png"
START_MARK = "<!-- suite-results:start -->"
END_MARK = "<!-- suite-results:end -->"
MICRO_START_MARK = "<!-- micro-results:start -->"
MICRO_END_MARK = "<!-- micro-results:end -->"
CLIENT_BOUND_MARK = "†"

BENCH_BUILD = ROOT / "build" / "bench"
MICRO_BINARY = BENCH_BUILD / "benchmarks" / "micro" / "fa_bench_parse_route"
MICRO_CONFIGURE = ["cmake", "-S", ".", "-B", "build/bench", "-G", "Ninja", "-DFA_BUILD_BENCH=ON",
                   "-DFA_BUILD_PYTHON=OFF", "-DCMAKE_BUILD_TYPE=Release"]  # fmt: skip
MICRO_BUILD = ["cmake", "--build", "build/bench", "-j2", "--target", "fa_bench_parse_route"]
MICRO_CASES = {
    "parse": "parse only, one request per parser call",
    "parse+route": "parse + route (20 routes, parameterised hit), one request per call",
    "pipelined16": "parse + route, 16 pipelined requests per call",
    "route": "route only (Router::match)",
}
CALLGRIND_SERVERS = ("uvicorn", "granian", "hypercorn")  # peers benchmarks/callgrind.py knows

# keep-alive idle timeouts raised so 10,000 idle connections stay open while RSS is read
IDLE_KEEPALIVE_ARGS = {
    "fasterapi-asgi": ["--timeout-keep-alive", "600"],
    "uvicorn": ["--timeout-keep-alive", "600"],
    "hypercorn": ["--keep-alive", "600"],
    # granian stops taking connections at its --backpressure limit (default: backlog = 1024)
    "granian": ["--backpressure", "20000"],
}


@dataclass
class Scenario:
    key: str
    title: str
    app: str = "raw_asgi:app"
    path: str = "/plaintext"
    method: str = "GET"
    body_file: str | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)
    pipeline: int = 1
    kind: str = "throughput"  # throughput | rate | idle
    native: bool = False
    reference: str = "uvicorn"
    target: str = ""
    exclude: tuple[str, ...] = ()
    why_excluded: str = ""


SCENARIOS = [
    Scenario("raw_plaintext", "raw ASGI plain text", target=">= 3x uvicorn, >= 1.3x granian"),
    Scenario("raw_json", "raw ASGI JSON", path="/json"),
    Scenario(
        "fastapi_get",
        "FastAPI JSON GET, path parameter",
        app="fastapi_app:app",
        path="/items/42?q=x",
        target=">= 1.8x uvicorn",
    ),  # fmt: skip
    Scenario(
        "fastapi_post_1k",
        "FastAPI POST, 1 KB pydantic body",
        app="fastapi_app:app",
        path="/items",
        method="POST",
        body_file="item_1k.json",
        headers=[("Content-Type", "application/json")],
        target=">= 1.5x uvicorn",
    ),
    Scenario(
        "fastapi_300_routes",
        "FastAPI, 300 routes, request to the last",
        app="fastapi_routes:app",
        path="/r299/items/5",
        target=">= 3x uvicorn",
    ),  # fmt: skip
    Scenario(
        "fastapi_middleware",
        'FastAPI GET behind @app.middleware("http")',
        app="fastapi_middleware:app",
        path="/items/42?q=x",
        target=">= 1.5x uvicorn",
    ),  # fmt: skip
    Scenario("stream_64k", "64 KB streamed response (16 chunks)", path="/stream"),
    Scenario(
        "native",
        "native route (C++)",
        app="native_app:app",
        native=True,
        reference="nginx",
        target=">= 1.1x nginx",
    ),  # fmt: skip
    Scenario(
        "native_pipeline16",
        "native route, 16-deep pipelining",
        app="native_app:app",
        native=True,
        pipeline=16,
        reference="nginx",
        target=">= 4x nginx",
    ),  # fmt: skip
    Scenario(
        "fixed_rate_latency",
        "p50/p99 at a fixed rate",
        kind="rate",
        target="p99 <= 0.5x uvicorn",
        exclude=("hypercorn",),
        why_excluded="h2load 1.52 counts hypercorn's `HTTP/1.1 200 ` status line (empty reason) as failed",
    ),
    Scenario("idle_rss", "RSS with idle keep-alive connections", kind="idle", target="<= 0.25x uvicorn"),
]


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def native_available() -> tuple[bool, str]:
    code = "from fasterapi_asgi import native; native.get; native.text"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=str(ROOT), timeout=60, check=False
    )
    if out.returncode == 0:
        return True, ""
    last = (out.stderr.strip().splitlines() or ["import failed"])[-1]
    return False, f"`from fasterapi_asgi import native` failed ({last})"


def versions(peers: list[str]) -> dict[str, str]:
    v: dict[str, str] = {}
    for name in peers:
        try:
            servers.check_server(name)
            v[name] = servers.server_version(name)
        except servers.ServerUnavailable:
            v[name] = "not installed"
    for dist in ("fastapi", "starlette", "pydantic", "uvloop", "httptools"):
        try:
            v[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            v[dist] = "not installed"
    for tool, argv in (("wrk", ["wrk", "-v"]), ("h2load", ["h2load", "--version"])):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            first = ((out.stdout + out.stderr).strip().splitlines() or ["?"])[0].split(" Copyright")[0]
            v[tool] = first.removeprefix(tool + " ").strip()
        except OSError:
            v[tool] = "not installed"
    v["python"] = platform.python_version()
    return v


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)
    return int(soft)


# -------------------------------------------------------------------------------------------- idle


def run_idle(
    names: list[str], count: int, out: Path, pinning: servers.Pinning, reference: str
) -> dict[str, Any]:
    """Start each server, hold ``count`` idle keep-alive connections, read the server's RSS."""
    workdir = out / "logs"
    workdir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        say(f"[idle_rss] {name}: starting")
        srv = servers.start_server(
            name,
            "raw_asgi:app",
            app_dir=APPS,
            workdir=workdir,
            pinning=pinning,
            extra_args=IDLE_KEEPALIVE_ARGS.get(name, []),
            probe_request=lambda p: servers.build_request("GET", "/plaintext", p),
            log_name=f"server-{name}.log",
        )
        client = None
        try:
            time.sleep(0.5)
            before = servers.tree_rss_kb(srv.pid)
            argv = pinning.load_prefix() + [
                sys.executable,
                str(ROOT / "benchmarks" / "idle_connections.py"),
                "--port",
                str(srv.port),
                "--count",
                str(count),
            ]
            client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert client.stdout is not None and client.stdin is not None
            line = client.stdout.readline().split()
            if len(line) != 3 or line[0] != "READY":
                raise runner.BenchError(f"idle client failed against {name}: {line}")
            opened, failed = int(line[1]), int(line[2])
            time.sleep(1.0)
            held = servers.tree_rss_kb(srv.pid)
            alive = srv.proc.poll() is None
            client.stdin.write("\n")
            client.stdin.flush()
            client.wait(60)
            rows[name] = {"rss_before_kb": before, "rss_kb": held, "opened": opened, "failed": failed,
                          "alive": alive}  # fmt: skip
            say(
                f"[idle_rss] {name}: {opened} connections held (failed {failed}): "
                f"RSS {before / 1024:.1f} MB -> {held / 1024:.1f} MB"
            )
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            if client is not None:
                for stream in (client.stdin, client.stdout):
                    if stream is not None:
                        stream.close()
            srv.stop()
    ref = rows.get(reference, {}).get("rss_kb")
    for r in rows.values():
        r["ratio"] = (r["rss_kb"] / ref) if ref else None
    data = {"connections": count, "reference": reference, "servers": rows}
    (out / "idle.json").write_text(json.dumps(data, indent=2) + "\n")
    return data


# ------------------------------------------------------------------------------------- micro-level


def _tail(text: str, n: int = 3) -> str:
    return " / ".join(text.strip().splitlines()[-n:])


def run_micro(out: Path, pinning: servers.Pinning, smoke: bool) -> dict[str, Any]:
    """Build (incrementally) and run the C++ parse + route benchmark; its JSON plus the command."""
    out.mkdir(parents=True, exist_ok=True)
    steps = [] if (BENCH_BUILD / "CMakeCache.txt").exists() else [MICRO_CONFIGURE]
    steps.append(MICRO_BUILD)
    for step in steps:
        say("[micro] $ " + shlex.join(step))
        proc = subprocess.run(step, cwd=str(ROOT), capture_output=True, text=True, timeout=1800, check=False)
        with (out / "build.log").open("a") as log:
            log.write(f"$ {shlex.join(step)}\n{proc.stdout}{proc.stderr}")
        if proc.returncode != 0:
            return {
                "status": "failed",
                "why": f"`{shlex.join(step)}` failed: {_tail(proc.stdout + proc.stderr)}",
            }
    bench_args = ["--iterations", "100000", "--runs", "3"] if smoke else []
    argv = pinning.server_prefix() + [str(MICRO_BINARY), *bench_args, "--json"]
    say("[micro] $ " + shlex.join(argv))
    proc = subprocess.run(argv, cwd=str(ROOT), capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        return {
            "status": "failed",
            "why": f"fa_bench_parse_route exited {proc.returncode}: {_tail(proc.stderr)}",
        }
    data = json.loads(proc.stdout)
    (out / "micro.json").write_text(json.dumps(data, indent=2) + "\n")
    shown = [
        a if a != str(MICRO_BINARY) else str(MICRO_BINARY.relative_to(ROOT)) for a in argv if a != "--json"
    ]
    command = " && ".join(shlex.join(c) for c in (MICRO_CONFIGURE, MICRO_BUILD)) + " && " + shlex.join(shown)
    return {"status": "ok", "result": data, "command": command}


def run_callgrind(out: Path, names: list[str], smoke: bool, no_pin: bool) -> dict[str, Any]:
    """benchmarks/callgrind.py for ``names`` (in a subprocess: one valgrind at a time, its own output)."""
    shown_out = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    argv = ["--servers", ",".join(names), "--out", str(shown_out)]
    if smoke:
        argv += ["--requests", "200", "--warmup", "20", "--runs", "1"]
    if no_pin:
        argv.append("--no-pin")
    say("[callgrind] $ python benchmarks/callgrind.py " + shlex.join(argv))
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "callgrind.py"), *argv],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        text=True,
        timeout=7200,
        check=False,
    )  # its progress goes straight to our stderr
    result = out / "callgrind.json"
    if proc.returncode == 2 or not result.exists():
        return {
            "status": "failed",
            "why": f"benchmarks/callgrind.py exited {proc.returncode} without results",
        }
    data = json.loads(result.read_text())
    entry: dict[str, Any] = {"status": "ok" if proc.returncode == 0 else "failed", "result": data}
    entry["markdown"] = (out / "callgrind.md").read_text()
    if proc.returncode != 0:
        entry["why"] = "; ".join(data.get("failed", [])) or f"exit code {proc.returncode}"
    return entry


def micro_markdown(suite: dict[str, Any]) -> str:
    """The micro-level sections of a suite run (empty when neither ran)."""
    lines: list[str] = []
    micro = suite.get("micro")
    if suite.get("command") and (micro is not None or suite.get("callgrind") is not None):
        lines += [f"Suite command: `{suite['command']}`.", ""]
    if micro is not None:
        lines += ["### Parse + route in C++ (ns per request)", ""]
        if micro["status"] != "ok":
            lines += [f"Failed: {micro['why']}", ""]
        else:
            data = micro["result"]
            lines += [
                f"`fa::RequestParser` + `fa::Router` on a {data['request_bytes']}-byte GET "
                f"(`GET /api/v1/items/12345?x=1`, 3 headers), {data['routes']} routes registered; median of "
                f"{data['runs']} runs of {data['iterations']:,} requests each (steady_clock), "
                f"run of {suite['date']}" + (" — SMOKE RUN" if suite["settings"]["smoke"] else "") + ".",
                "",
                "| case | ns/request (median) | min | max | requests/s on one core |",
                "|---|---:|---:|---:|---:|",
            ]
            for key, c in data["cases"].items():
                title = MICRO_CASES.get(key, key)
                lines.append(
                    f"| {title} | {c['median_ns']:.1f} | {c['min_ns']:.1f} | {c['max_ns']:.1f} "
                    f"| {1e9 / c['median_ns']:,.0f} |"
                )
            lines += ["", f"Reproduce: `{micro['command']}`", ""]
    cg = suite.get("callgrind")
    if cg is not None:
        lines += ["### Instructions per raw ASGI request (callgrind)", ""]
        if cg.get("markdown"):
            lines += [cg["markdown"].rstrip(), ""]
        if cg["status"] != "ok":
            lines += [f"Failed: {cg['why']}", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--smoke", action="store_true", help="CI mode: 1 s runs, 1 round, uvicorn + fasterapi-asgi only"
    )
    p.add_argument("--peers", default=",".join(ASGI_PEERS), help="peer servers for the ASGI scenarios")
    p.add_argument(
        "--scenarios", default="", help="comma-separated scenario keys (default: all; 'none': no scenario)"
    )
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument(
        "--rate", type=float, help="fixed rate for the latency scenario (default: half uvicorn's max)"
    )
    p.add_argument("--idle-connections", type=int, default=10_000)
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<timestamp>)")
    p.add_argument(
        "--write-docs", action="store_true", help="update docs/benchmarks.md and docs/benchmarks.png"
    )
    p.add_argument("--no-pin", action="store_true")
    p.add_argument("--micro", action="store_true", help="also run the C++ parse + route micro-benchmark")
    p.add_argument(
        "--callgrind", action="store_true", help="also count instructions per request under callgrind"
    )
    p.add_argument(
        "--no-self", action="store_true", help="leave fasterapi-asgi out (e.g. while its core is broken)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.smoke:
        args.duration, args.warmup, args.rounds = 1, 0, 1
        args.peers = "uvicorn"
        args.idle_connections = min(args.idle_connections, 200)
    keys = [k for k in args.scenarios.split(",") if k] or [s.key for s in SCENARIOS]
    if keys == ["none"]:
        keys = []
    unknown = set(keys) - {s.key for s in SCENARIOS}
    if unknown:
        say(
            f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(s.key for s in SCENARIOS)}"
        )
        return 2
    stamp = _dt.datetime.now(_dt.timezone.utc)
    out = (args.out or ROOT / "benchmarks" / "results" / stamp.strftime("%Y%m%d-%H%M%S")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    nofile = raise_nofile()

    peers = [p for p in args.peers.split(",") if p]
    missing_peers: list[str] = []
    available: list[str] = []
    for name in [SELF, *peers, "nginx"]:
        if name == SELF and args.no_self:
            missing_peers.append(f"{SELF} left out (--no-self)")
            continue
        try:
            servers.check_server(name)
            available.append(name)
        except servers.ServerUnavailable as exc:
            missing_peers.append(str(exc))
            say(f"warning: {exc}")
    has_self = SELF in available
    native_ok, native_why = (
        native_available()
        if has_self
        else (False, f"{SELF} is " + ("left out" if args.no_self else "not built"))
    )
    pinning = servers.choose_pinning(not args.no_pin)
    vers = versions(([] if args.no_self else [SELF]) + [*peers, "nginx"])
    say(f"suite: {len(keys)} scenario(s), peers {', '.join(n for n in available if n != 'nginx')}; out {out}")

    suite: dict[str, Any] = {
        "date": stamp.strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python benchmarks/run_suite.py " + shlex.join(argv),
        "machine": {
            "platform": platform.platform(),
            "cpu": runner.cpu_model(),
            "cpus": os.cpu_count(),
            "pinning": f"server CPU {pinning.server_cpu}, load CPU {pinning.load_cpu}"
            if pinning.server_cpu is not None
            else pinning.note,
            "nofile": nofile,
        },
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "rounds": args.rounds,
            "connections": args.connections,
            "smoke": args.smoke,
        },  # fmt: skip
        "versions": vers,
        "missing": missing_peers,
        "scenarios": [],
    }
    failures = 0
    uvicorn_max: float | None = None
    for sc in [s for s in SCENARIOS if s.key in keys]:
        entry: dict[str, Any] = {
            "key": sc.key,
            "title": sc.title,
            "target": sc.target,
            "reference": sc.reference,
        }
        suite["scenarios"].append(entry)
        if sc.native:
            names = [n for n in (SELF, "nginx") if n in available]
            if not native_ok or "nginx" not in available:
                entry["status"] = "not available"
                entry["why"] = native_why if not native_ok else "nginx is not installed"
                say(f"== {sc.key}: not available ({entry['why']})")
                continue
        else:
            names = [n for n in (SELF, *peers) if n in available and n not in sc.exclude]
            if any(n in peers for n in sc.exclude):
                entry["note"] = f"{', '.join(sc.exclude)} left out: {sc.why_excluded}"
        if sc.reference not in names:
            entry["status"] = "not available"
            entry["why"] = f"reference server {sc.reference} is not available"
            say(f"== {sc.key}: not available ({entry['why']})")
            continue
        say(f"== {sc.key}: {sc.title} ({', '.join(names)})")
        sdir = out / sc.key
        try:
            if sc.kind == "idle":
                data = run_idle(names, args.idle_connections, sdir, pinning, sc.reference)
                entry.update(status="ok", idle=data)
                continue
            rate = None
            if sc.kind == "rate":
                rate = args.rate or (round(uvicorn_max * 0.5, -1) if uvicorn_max else 1000.0)
                entry["rate"] = rate
            config = runner.BenchConfig(
                app=sc.app,
                servers=names,
                path=sc.path,
                method=sc.method,
                body=(APPS / sc.body_file).read_bytes() if sc.body_file else None,
                headers=list(sc.headers),
                connections=args.connections,
                pipeline=sc.pipeline,
                rate=rate,
                warmup=args.warmup,
                rounds=args.rounds,
                duration=args.duration,
                app_dir=APPS,
                reference=sc.reference,
                pin=not args.no_pin,
                workdir=sdir / "logs",
                command_line=_bench_command(sc, names, args, rate),
            )
            result = runner.run_benchmark(config, progress=say)
            cli.write_outputs(result, sdir, with_chart=False)
            entry.update(status="ok", result=result.to_dict())
            if sc.key == "raw_plaintext":
                uvicorn_max = next((s.rps for s in result.summaries() if s.server == "uvicorn"), None)
        except (runner.BenchError, servers.ServerStartError, OSError) as exc:
            failures += 1
            entry.update(status="failed", why=str(exc).splitlines()[0])
            say(f"== {sc.key}: FAILED: {exc}")

    if args.micro:
        say("== micro: C++ parse + route")
        suite["micro"] = run_micro(out / "micro", pinning, args.smoke)
    if args.callgrind:
        cg_names = [] if args.no_self else [SELF]
        for n in ("uvicorn", *peers):
            if n in CALLGRIND_SERVERS and n not in cg_names:
                cg_names.append(n)
        say(f"== callgrind: instructions per raw ASGI request ({', '.join(cg_names)})")
        suite["callgrind"] = run_callgrind(out / "callgrind", cg_names, args.smoke, args.no_pin)
    for section in ("micro", "callgrind"):
        if section in suite and suite[section]["status"] != "ok":
            failures += 1
            say(f"== {section}: FAILED: {suite[section]['why']}")

    (out / "suite.json").write_text(json.dumps(suite, indent=2) + "\n")
    md = suite_markdown(suite, [SELF, *peers, "nginx"]) if suite["scenarios"] else None
    micro_md = micro_markdown(suite) or None
    (out / "suite.md").write_text("\n".join(m for m in (md, micro_md) if m))
    if md is not None:
        ratios = chart_ratios(suite)
        note = chart.write_suite_chart(
            ratios,
            out / "suite.png",
            title=f"ratio to the reference, {suite['date']} (throughput: higher is better; p99, RSS: lower)",
            servers=[SELF, *peers, "nginx"],
        )
        if note:
            say(f"note: {note}")
    if args.write_docs:
        write_docs(md, out / "suite.png", micro_md)
    print("\n".join(m for m in (md, micro_md) if m))
    say(f"suite results: {out}")
    return 1 if failures else 0


def _bench_command(sc: Scenario, names: list[str], args: argparse.Namespace, rate: float | None) -> str:
    parts = ["fasterapi-asgi", "bench", sc.app, "--app-dir", "benchmarks/apps", "--path", sc.path]
    parts += ["--only", ",".join(names), "--reference", sc.reference, "--duration", str(args.duration)]
    parts += [
        "--warmup",
        str(args.warmup),
        "--rounds",
        str(args.rounds),
        "--connections",
        str(args.connections),
    ]
    if sc.method != "GET":
        parts += ["--method", sc.method]
    if sc.body_file:
        parts += ["--body-file", f"benchmarks/apps/{sc.body_file}"]
    for n, v in sc.headers:
        parts += ["--header", f"{n}: {v}"]
    if sc.pipeline > 1:
        parts += ["--pipeline", str(sc.pipeline)]
    if rate:
        parts += ["--rate", f"{rate:g}"]
    return shlex.join(parts)


# ---------------------------------------------------------------------------------------- reports


def _cell(entry: dict[str, Any], server: str) -> str:
    if entry.get("idle"):
        row = entry["idle"]["servers"].get(server)
        if not row:
            return ""
        ratio = f" ({row['ratio']:.2f}x)" if row.get("ratio") is not None else ""
        return f"{row['rss_kb'] / 1024:.1f} MB{ratio}"
    res = entry.get("result")
    if not res:
        return ""
    summary = {s["server"]: s for s in res["summary"]}
    s = summary.get(server)
    if not s:
        return ""
    if entry.get("rate"):
        p99 = f"{s['p99_ms']:.2f} ms" if s.get("p99_ms") is not None else "-"
        ratio = f" ({s['p99_ratio']:.2f}x)" if s.get("p99_ratio") is not None else ""
        return f"p99 {p99}{ratio}"
    mark = CLIENT_BOUND_MARK if s.get("client_bound") else ""
    parts = [f"{s['ratio']:.2f}x"] if s.get("ratio") is not None else []
    if _client_bound(entry) and s.get("cpu_ratio") is not None:
        parts.append(f"CPU/req {s['cpu_ratio']:.2f}x")
    ratio = f" ({'; '.join(parts)})" if parts else ""
    return f"{s['rps']:,.0f}{mark}{ratio}"


def _client_bound(entry: dict[str, Any]) -> bool:
    """Some server's run in this scenario saturated the load generator's core, not its own."""
    res = entry.get("result")
    return bool(res) and any(s.get("client_bound") for s in res["summary"])


def suite_markdown(suite: dict[str, Any], order: list[str]) -> str:
    used = [n for n in order if any(_cell(e, n) for e in suite["scenarios"])]
    head = ["scenario", *used, "ratio to", "target"]
    lines = [
        f"Run of {suite['date']} on {suite['machine']['cpu']} ({suite['machine']['cpus']} CPUs, "
        f"{suite['machine']['pinning']}); {suite['settings']['rounds']} interleaved round(s) of "
        f"{suite['settings']['duration']} s, {suite['settings']['connections']} connections"
        + (" — SMOKE RUN, numbers not meaningful" if suite["settings"]["smoke"] else "")
        + ".",
        "",
        "Cells: median requests/s (ratio to the reference, median of same-round ratios); fixed-rate row: "
        "p99 latency (lower is better); idle row: server RSS with the connections held.",
        "",
    ]
    if any(_client_bound(e) for e in suite["scenarios"]):
        lines += [
            f"{CLIENT_BOUND_MARK} client-bound: wrk's core was at least 95% busy while that server's core "
            "was not, so its requests/s measures the load generator, not the server. Rows with such a run "
            "also give **CPU/req**: the server's CPU µs per request (busy time of its pinned core, softirq "
            "included, over the measured window, divided by the requests completed) as a ratio to the "
            "reference's, median of same-round ratios; lower is better, and it is the fairer comparison "
            "there.",
            "",
        ]
    lines += [
        "| " + " | ".join(head) + " |",
        "|---|" + "---:|" * len(used) + "---|---|",
    ]
    for e in suite["scenarios"]:
        title = e["title"]
        if e.get("rate"):
            title += f" ({e['rate']:g} req/s)"
        if e.get("idle"):
            title = f"RSS, {e['idle']['connections']:,} idle keep-alive connections"
        if e.get("status") != "ok":
            cells = [f"{e.get('status')}: {e.get('why', '')}"] + [""] * (len(used) - 1) if used else []
        else:
            cells = [_cell(e, n) or "-" for n in used]
        lines.append("| " + " | ".join([title, *cells, e["reference"], e.get("target", "")]) + " |")
    notes = [f"{e['title']}: {e['note']}" for e in suite["scenarios"] if e.get("note")]
    if notes:
        lines += [""] + [f"Note — {n}." for n in notes]
    v = suite["versions"]
    lines += [
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "",
        f"Reproduce: `{suite['command']}` (per-scenario `fasterapi-asgi bench` commands are in each "
        "scenario's bench.md).",
    ]
    if suite["missing"]:
        lines += ["", "Not run: " + "; ".join(suite["missing"])]
    return "\n".join(lines) + "\n"


def chart_ratios(suite: dict[str, Any]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for e in suite["scenarios"]:
        if e.get("status") != "ok":
            continue
        row: dict[str, float] = {}
        if e.get("idle"):
            for name, r in e["idle"]["servers"].items():
                if r.get("ratio"):
                    row[name] = r["ratio"]
        else:
            for s in e["result"]["summary"]:
                value = s["p99_ratio"] if e.get("rate") else s["ratio"]
                if value is not None:
                    row[s["server"]] = value
        out[e["key"]] = row
    return out


def replace_block(text: str, start: str, end: str, block: str, heading: str = "") -> str:
    """``text`` with the part between the ``start`` and ``end`` markers replaced (appended when missing)."""
    if start not in text or end not in text:
        text += f"\n{heading}{start}\n{end}\n"
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    return f"{head}{start}\n{block}{end}{tail}"


def write_docs(md: str | None, png: Path, micro_md: str | None = None) -> None:
    text = DOCS.read_text() if DOCS.exists() else f"# Benchmarks\n\n{START_MARK}\n{END_MARK}\n"
    if md is not None:
        block = md
        if png.exists():
            DOCS_CHART.write_bytes(png.read_bytes())
            block += f"\n![ratio of each server to the scenario's reference]({DOCS_CHART.name})\n"
        text = replace_block(text, START_MARK, END_MARK, block)
    if micro_md:
        text = replace_block(text, MICRO_START_MARK, MICRO_END_MARK, micro_md, "## Micro-benchmarks\n\n")
    DOCS.write_text(text)
    say(f"updated {DOCS}" + (f" and {DOCS_CHART}" if md is not None and png.exists() else ""))


if __name__ == "__main__":
    raise SystemExit(main())
