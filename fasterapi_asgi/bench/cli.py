"""``fasterapi-asgi bench``: compare servers on your own app, and gate CI on regressions.

Exit codes: 0 done (and the gate, if any, passed); 1 the regression gate failed; 2 usage error, a
missing tool or server, or a server that did not start.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from . import chart, gate, report, runner, servers

EPILOG = """\
examples:
  fasterapi-asgi bench main:app --path /items/1 --against uvicorn,granian --duration 10
  fasterapi-asgi bench main:app --path /items --method POST --body-file item.json \\
      --header 'content-type: application/json'
  fasterapi-asgi bench main:app --rate 2000 --against uvicorn           # p50/p99 at a fixed rate
  fasterapi-asgi bench main:app --out bench --baseline old/bench.json --max-regression 5%

servers: {servers}. fasterapi-asgi always runs first unless --only is given.
Exit codes: 0 ok, 1 regression gate failed, 2 usage error / missing tool or server / start failure.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def _seconds(text: str) -> int:
    """Whole seconds (wrk's resolution); accepts '10' or '10s'."""
    t = text.strip().lower()
    if t.endswith("s"):
        t = t[:-1]
    return _positive_int(t)


def _warmup_seconds(text: str) -> int:
    t = text.strip().lower()
    if t.endswith("s"):
        t = t[:-1]
    return _non_negative_int(t)


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("the rate must be positive")
    return value


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip() or any(c in text for c in "\r\n\0"):
        raise argparse.ArgumentTypeError(f"expected 'Name: value', got {text!r}")
    return name.strip(), value.strip()


def _server_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in servers.SERVERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown server {unknown[0]!r}; known: {', '.join(servers.SERVERS)}"
        )
    return names


def _server_arg(text: str) -> tuple[str, list[str]]:
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or (name not in servers.SERVERS and name != "all"):
        raise argparse.ArgumentTypeError(
            f"expected NAME:ARGS with NAME one of {', '.join(servers.SERVERS)} or 'all', got {text!r}"
        )
    try:
        return name, shlex.split(rest)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot split {rest!r}: {exc}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="fasterapi-asgi bench",
        description="Serve APP with fasterapi-asgi and peer servers in turn (pinned, warmed up, interleaved "
        "rounds), drive each with wrk, and report requests/s, p50/p99 latency, errors, peak RSS, server "
        "CPU per request, whether the load generator saturated, and the ratio of each server to the first.",
        epilog=EPILOG.format(servers=", ".join(servers.SERVERS)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("app", metavar="APP", help="the ASGI app as module:attribute, e.g. main:app")
    p.add_argument("--path", default="/", help="request path, with query string if any (default /)")
    p.add_argument("--method", default="GET", type=str.upper, help="HTTP method (default GET)")
    body = p.add_mutually_exclusive_group()
    body.add_argument("--body", help="request body (text)")
    body.add_argument("--body-file", type=Path, help="request body read from a file")
    p.add_argument(
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="request header (repeat)",
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--against",
        type=_server_list,
        default=["uvicorn"],
        metavar="S1,S2",
        help="peers to compare with fasterapi-asgi (default uvicorn)",
    )
    who.add_argument(
        "--only",
        type=_server_list,
        metavar="S1,S2",
        help="run exactly these servers, in this order (ratio to the first)",
    )
    p.add_argument("--reference", help="server the ratios are computed against (default: the first)")
    p.add_argument(
        "--connections", "-c", type=_positive_int, default=64, help="open connections (default 64)"
    )
    p.add_argument(
        "--threads", "-t", type=_positive_int, default=1, help="load generator threads (default 1)"
    )
    p.add_argument(
        "--pipeline", type=_positive_int, default=1, help="HTTP/1.1 pipelining depth (wrk Lua script)"
    )
    p.add_argument(
        "--rate",
        type=_rate,
        help="fixed total request rate (req/s) for latency percentiles; uses h2load --h1 --rps "
        "(apt-get install -y nghttp2-client) since wrk cannot hold a fixed rate",
    )
    p.add_argument(
        "--duration", "-d", type=_seconds, default=10, help="measured seconds per run (default 10)"
    )
    p.add_argument(
        "--warmup", type=_warmup_seconds, default=2, help="warm-up seconds before each run (default 2)"
    )
    p.add_argument("--rounds", type=_positive_int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--app-dir", type=Path, default=Path("."), help="directory the app is imported from (default .)"
    )
    p.add_argument(
        "--server-arg",
        action="append",
        type=_server_arg,
        default=[],
        metavar="NAME:ARGS",
        help="extra command-line arguments for one server (or 'all'), e.g. 'uvicorn:--timeout-keep-alive 30'",
    )
    p.add_argument(
        "--tls",
        metavar="CERTFILE:KEYFILE",
        help="serve and load over HTTPS with this certificate chain and key (PEM; PKCS#8 key for granian); "
        "each server gets its own TLS options. With --header 'Connection: close' every request is a new TLS "
        "connection (handshakes/s)",
    )
    p.add_argument(
        "--http2",
        action="store_true",
        help="serve and load over HTTP/2 (h2c by prior knowledge; ALPN h2 with --tls): h2load with --streams "
        "streams on each of --connections connections; each server gets its own HTTP/2 options",
    )
    p.add_argument(
        "--streams",
        type=_positive_int,
        default=10,
        help="HTTP/2: concurrent streams per connection (h2load -m; default 10)",
    )
    p.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="output directory (default bench-results)"
    )
    p.add_argument("--baseline", type=Path, help="bench.json of an earlier run to compare with (CI gate)")
    p.add_argument(
        "--max-regression",
        default=None,
        help="allowed slowdown against --baseline, e.g. 5%% (default 5%% when --baseline is given)",
    )
    p.add_argument(
        "--gate-metric",
        choices=("rps", "ratio"),
        default="rps",
        help="what the gate compares: the first server's req/s (default) or its ratio to --reference",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin server and load generator with taskset")
    p.add_argument("--no-chart", action="store_true", help="do not write the PNG chart")
    p.add_argument(
        "--skip-missing", action="store_true", help="skip peers that are not installed instead of failing"
    )
    p.add_argument(
        "--startup-timeout", type=float, default=30.0, help="seconds to wait for a server to answer"
    )
    return p


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> runner.BenchConfig:
    names = args.only if args.only else runner.default_servers(args.against)
    if not names:
        raise runner.BenchError("no server to run")
    body: bytes | None = None
    if args.body is not None:
        body = args.body.encode()
    elif args.body_file is not None:
        try:
            body = args.body_file.read_bytes()
        except OSError as exc:
            raise runner.BenchError(f"cannot read --body-file: {exc}") from None
    server_args: dict[str, list[str]] = {}
    for name, extra in args.server_arg:
        targets = list(servers.SERVERS) if name == "all" else [name]
        for t in targets:
            server_args.setdefault(t, []).extend(extra)
    if args.tls is not None:
        cert, sep, key = args.tls.partition(":")
        if not sep or not Path(cert).is_file() or not Path(key).is_file():
            raise runner.BenchError(f"--tls {args.tls}: expected CERTFILE:KEYFILE, two existing files")
        for name in names:
            tls_args = servers.TLS_ARGS.get(name)
            if tls_args is None:
                raise runner.BenchError(f"--tls: the harness does not know how {name} serves TLS")
            cert_path, key_path = str(Path(cert).resolve()), str(Path(key).resolve())
            server_args.setdefault(name, []).extend(tls_args(cert_path, key_path))
    if args.http2:
        for name in names:
            h2_args = servers.HTTP2_ARGS.get(name)
            if h2_args is None:
                raise runner.BenchError(f"--http2: the harness does not know how {name} serves HTTP/2")
            server_args.setdefault(name, []).extend(h2_args)
    app_dir = args.app_dir.resolve()
    if not app_dir.is_dir():
        raise runner.BenchError(f"--app-dir {args.app_dir} is not a directory")
    if args.reference and args.reference not in names:
        raise runner.BenchError(f"--reference {args.reference} is not among the servers: {', '.join(names)}")
    return runner.BenchConfig(
        app=args.app,
        servers=names,
        path=args.path if args.path.startswith("/") else "/" + args.path,
        method=args.method,
        body=body,
        headers=list(args.header),
        connections=args.connections,
        threads=args.threads,
        pipeline=args.pipeline,
        rate=args.rate,
        warmup=args.warmup,
        rounds=args.rounds,
        duration=args.duration,
        app_dir=app_dir,
        server_args=server_args,
        reference=args.reference,
        pin=not args.no_pin,
        workdir=(args.out / "logs").resolve(),
        startup_timeout=args.startup_timeout,
        command_line="fasterapi-asgi bench " + shlex.join(argv),
        tls=args.tls is not None,
        http2=args.http2,
        streams=args.streams,
    )


def write_outputs(result: report.BenchResult, out: Path, *, with_chart: bool = True) -> list[str]:
    """bench.json, bench.md, bench.png in ``out``; $GITHUB_STEP_SUMMARY appended. Returns notes."""
    notes: list[str] = []
    out.mkdir(parents=True, exist_ok=True)
    if with_chart:
        note = chart.write_chart(result, out / "bench.png")
        if note:
            notes.append(note)
    report.write_json(result, out / "bench.json")
    md = report.markdown_report(result)
    (out / "bench.md").write_text(md)
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        try:
            with open(summary, "a") as fh:
                fh.write(md + "\n")
        except OSError as exc:
            notes.append(f"could not append to $GITHUB_STEP_SUMMARY ({summary}): {exc}")
    return notes


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help -> 0, usage error -> 2
        return int(exc.code) if isinstance(exc.code, int) else 2
    max_regression: float | None = None
    if args.max_regression is not None and args.baseline is None:
        parser.print_usage(sys.stderr)
        _say("fasterapi-asgi bench: error: --max-regression needs --baseline")
        return 2
    baseline = None
    if args.baseline is not None:
        try:
            max_regression = gate.parse_fraction(args.max_regression or "5%")
            baseline = report.load_json(args.baseline)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            _say(f"fasterapi-asgi bench: error: cannot use the baseline {args.baseline}: {exc}")
            return 2
    try:
        config = config_from_args(args, argv)
        names, notes = runner.check_prerequisites(config, skip_missing=args.skip_missing)
        for n in notes:
            _say(f"warning: {n}")
        config.servers = names
        if config.reference and config.reference not in names:
            raise runner.BenchError(f"the reference server {config.reference} is not available")
        _say(
            f"benchmarking {config.method} {config.path} on {config.app}: {', '.join(names)}; "
            f"{config.rounds} round(s) x {config.duration} s, warm-up {config.warmup} s, "
            f"{config.connections} connections"
            + (f", fixed rate {config.rate:g} req/s" if config.rate else "")
        )
        result = runner.run_benchmark(config, progress=_say)
        result.notes.extend(notes)
    except runner.BenchError as exc:
        _say(f"fasterapi-asgi bench: error: {exc}")
        return 2
    except KeyboardInterrupt:
        _say("fasterapi-asgi bench: interrupted")
        return 130
    for n in write_outputs(result, args.out, with_chart=not args.no_chart):
        _say(f"note: {n}")
    print()
    print(report.console_table(result))
    warning = report.client_bound_warning(result)
    if warning:
        print(f"* warning: {warning}")
    for n in result.notes:
        print(f"note: {n}")
    written = [args.out / n for n in ("bench.json", "bench.md", "bench.png") if (args.out / n).exists()]
    print("\nresults: " + ", ".join(str(w) for w in written))
    if baseline is not None and max_regression is not None:
        outcome = gate.check_regression(
            result, baseline, max_regression=max_regression, server=result.servers[0], metric=args.gate_metric
        )
        print(outcome.message)
        if not outcome.passed:
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
