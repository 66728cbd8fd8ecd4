"""Results: per-round records, medians and same-round ratios, and the JSON / markdown / console forms."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1

# a run is client-bound when the load generator's core is at least this busy and the server's is not
CLIENT_BOUND_BUSY = 0.95
CPU_SOURCE_CORE = "server core"
CPU_SOURCE_TREE = "server process tree"
CLIENT_BOUND_WARNING = "load generator saturated: requests/s compares the client; use CPU µs/request"


@dataclass
class RunRecord:
    """One measured run: one server, one round."""

    server: str
    round: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    requests: int
    errors: int
    non_2xx_3xx: int = 0
    socket_errors: int = 0
    peak_rss_kb: int = 0
    duration_s: float = 0.0
    # CPU over the measured window (warm-up excluded); busy = fraction of the pinned core's ticks
    # that were not idle or iowait (None when unpinned or /proc is unavailable)
    server_core_busy: float | None = None
    load_core_busy: float | None = None
    cpu_window_s: float | None = None
    server_tree_cpu_s: float | None = None  # utime + stime of the server's process tree
    cpu_us_per_request: float | None = None
    cpu_source: str = ""  # CPU_SOURCE_CORE, CPU_SOURCE_TREE or "" (not measured)


@dataclass
class ServerSummary:
    server: str
    version: str
    command: str
    rounds: int
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    peak_rss_kb: int
    ratio: float | None  # median over rounds of (rps / reference rps of the same round)
    p99_ratio: float | None  # median over rounds of (p99 / reference p99 of the same round)
    server_core_busy: float | None = None  # medians over rounds
    load_core_busy: float | None = None
    cpu_us_per_request: float | None = None
    cpu_ratio: float | None = None  # median of same-round (CPU µs/request / the reference's): lower wins
    cpu_source: str = ""
    client_bound: bool = False  # throughput mode: load core >= CLIENT_BOUND_BUSY, server core below it


@dataclass
class BenchResult:
    config: dict[str, Any]
    environment: dict[str, Any]
    servers: list[str]
    reference: str
    versions: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    runs: list[RunRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def summaries(self) -> list[ServerSummary]:
        return summarize(
            self.runs,
            self.servers,
            self.reference,
            self.versions,
            self.commands,
            fixed_rate=bool(self.config.get("rate")),
        )

    def client_bound_servers(self) -> list[str]:
        return [s.server for s in self.summaries() if s.client_bound]

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "tool": "fasterapi-asgi bench",
            "config": self.config,
            "environment": self.environment,
            "servers": self.servers,
            "reference": self.reference,
            "versions": self.versions,
            "commands": self.commands,
            "notes": self.notes,
            "runs": [asdict(r) for r in self.runs],
            "summary": [asdict(s) for s in self.summaries()],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        if not isinstance(data, dict) or "runs" not in data or "servers" not in data:
            raise ValueError("not a fasterapi-asgi bench JSON file (no 'servers'/'runs')")
        known = set(RunRecord.__dataclass_fields__)
        return cls(
            config=dict(data.get("config", {})),
            environment=dict(data.get("environment", {})),
            servers=list(data["servers"]),
            reference=str(data.get("reference") or data["servers"][0]),
            versions=dict(data.get("versions", {})),
            commands=dict(data.get("commands", {})),
            runs=[RunRecord(**{k: v for k, v in r.items() if k in known}) for r in data["runs"]],
            notes=list(data.get("notes", [])),
        )


def median(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return float(statistics.median(vals)) if vals else None


def server_cpu_per_request(
    requests: int,
    *,
    server_core_busy: float | None,
    window_s: float | None,
    tree_cpu_s: float | None,
) -> tuple[float | None, str]:
    """Server CPU µs per request and where it came from.

    Pinned: (busy fraction of the server's core x window seconds) / requests, which counts the
    kernel work (softirq, loopback TCP) done on that core too. Unpinned: the server process tree's
    own user + system time / requests.
    """
    if requests <= 0:
        return None, ""
    if server_core_busy is not None and window_s:
        return server_core_busy * window_s / requests * 1e6, CPU_SOURCE_CORE
    if tree_cpu_s is not None:
        return tree_cpu_s / requests * 1e6, CPU_SOURCE_TREE
    return None, ""


def is_client_bound(
    server_core_busy: float | None, load_core_busy: float | None, threshold: float = CLIENT_BOUND_BUSY
) -> bool:
    """The load generator's core saturated while the server's did not: req/s measures the client."""
    if server_core_busy is None or load_core_busy is None:
        return False
    return load_core_busy >= threshold and server_core_busy < threshold


def same_round_ratios(
    runs: Sequence[RunRecord], server: str, reference: str, metric: str = "rps"
) -> list[float]:
    """``metric(server) / metric(reference)`` for every round where both have a positive value."""
    by_round: dict[int, dict[str, RunRecord]] = {}
    for r in runs:
        by_round.setdefault(r.round, {})[r.server] = r
    out = []
    for rnd in sorted(by_round):
        pair = by_round[rnd]
        if server in pair and reference in pair:
            num, den = getattr(pair[server], metric), getattr(pair[reference], metric)
            if num is not None and den:
                out.append(num / den)
    return out


def summarize(
    runs: Sequence[RunRecord],
    servers: Sequence[str],
    reference: str,
    versions: dict[str, str] | None = None,
    commands: dict[str, str] | None = None,
    *,
    fixed_rate: bool = False,
) -> list[ServerSummary]:
    out = []
    for name in servers:
        mine = [r for r in runs if r.server == name]
        if not mine:
            continue
        server_busy = median([r.server_core_busy for r in mine if r.server_core_busy is not None])
        load_busy = median([r.load_core_busy for r in mine if r.load_core_busy is not None])
        sources = sorted({r.cpu_source for r in mine if r.cpu_source})
        out.append(
            ServerSummary(
                server=name,
                version=(versions or {}).get(name, ""),
                command=(commands or {}).get(name, ""),
                rounds=len(mine),
                rps=median([r.rps for r in mine]) or 0.0,
                p50_ms=median([r.p50_ms for r in mine if r.p50_ms is not None]),
                p99_ms=median([r.p99_ms for r in mine if r.p99_ms is not None]),
                errors=sum(r.errors for r in mine),
                peak_rss_kb=max(r.peak_rss_kb for r in mine),
                ratio=median(same_round_ratios(runs, name, reference, "rps")),
                p99_ratio=median(same_round_ratios(runs, name, reference, "p99_ms")),
                server_core_busy=server_busy,
                load_core_busy=load_busy,
                cpu_us_per_request=median(
                    [r.cpu_us_per_request for r in mine if r.cpu_us_per_request is not None]
                ),
                cpu_ratio=median(same_round_ratios(runs, name, reference, "cpu_us_per_request")),
                cpu_source=", ".join(sources),
                client_bound=not fixed_rate and is_client_bound(server_busy, load_busy),
            )
        )
    return out


# ------------------------------------------------------------------------------------------ formats


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _mb(kb: int) -> str:
    return f"{kb / 1024:.1f}" if kb else "-"


def _pct(fraction: float | None) -> str:
    return "-" if fraction is None else f"{fraction * 100:.1f}"


def table_rows(result: BenchResult, client_bound_mark: str = " *") -> tuple[list[str], list[list[str]]]:
    """In throughput mode the ratio column is req/s over the reference's; in fixed-rate mode it is
    p99 latency over the reference's (lower is better). The CPU columns close the row; the req/s of
    a client-bound server carries ``client_bound_mark``."""
    ref = result.reference
    fixed_rate = bool(result.config.get("rate"))
    ratio_head = f"p99 x {ref}" if fixed_rate else f"x {ref}"
    head = ["server", "version", "req/s", ratio_head, "p50 ms", "p99 ms", "errors", "peak RSS MB"]
    head += ["server core busy %", "load core busy %", "CPU µs/req", f"CPU/req x {ref}"]
    rows = []
    for s in result.summaries():
        rows.append(
            [
                s.server,
                s.version or "-",
                f"{s.rps:,.0f}" + (client_bound_mark if s.client_bound else ""),
                _fmt(s.p99_ratio if fixed_rate else s.ratio, ".2f", "x"),
                _fmt(s.p50_ms, ".2f"),
                _fmt(s.p99_ms, ".2f"),
                str(s.errors),
                _mb(s.peak_rss_kb),
                _pct(s.server_core_busy),
                _pct(s.load_core_busy),
                _fmt(s.cpu_us_per_request, ".2f"),
                _fmt(s.cpu_ratio, ".2f", "x"),
            ]
        )
    return head, rows


def client_bound_warning(result: BenchResult) -> str | None:
    """The warning printed after the table when a server's run was client-bound, else None."""
    names = result.client_bound_servers()
    if not names:
        return None
    return f"{CLIENT_BOUND_WARNING} ({', '.join(names)})"


def cpu_legend(result: BenchResult) -> str | None:
    """How the CPU columns were measured, or None when they were not."""
    sources = {s.cpu_source for s in result.summaries() if s.cpu_source}
    if not sources:
        return None
    if sources == {CPU_SOURCE_CORE}:
        how = "busy time of the server's pinned core (softirq included)"
    elif sources == {CPU_SOURCE_TREE}:
        how = (
            "CPU time of the server's process tree (user + system; not pinned, so kernel work done "
            "for it in other contexts is left out)"
        )
    else:
        how = "mixed sources: " + ", ".join(sorted(sources))
    return (
        f"CPU µs/req = server CPU per completed request over the measured window: {how}. "
        f"Busy % = share of the core's time not idle or in iowait. CPU/req x {result.reference}: "
        "lower is better."
    )


def console_table(result: BenchResult) -> str:
    head, rows = table_rows(result)
    if any(s.client_bound for s in result.summaries()):  # keep the req/s digits aligned
        for r in rows:
            r[2] = r[2] if r[2].endswith(" *") else r[2] + "  "
    widths = [max(len(c) for c in col) for col in zip(head, *rows, strict=True)]
    right = set(range(2, len(head)))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(head), sep, *(line(r) for r in rows)])


def markdown_table(result: BenchResult) -> str:
    head, rows = table_rows(result, client_bound_mark=" †")
    out = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---:" if i > 1 else "---" for i in range(len(head))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def markdown_report(result: BenchResult, title: str = "fasterapi-asgi bench") -> str:
    c, env = result.config, result.environment
    mode = f"fixed rate {c.get('rate')} req/s (h2load)" if c.get("rate") else "max throughput (wrk)"
    lines = [
        f"### {title}: `{c.get('method', 'GET')} {c.get('path', '/')}` on `{c.get('app', '')}`",
        "",
        f"{env.get('date', '')} · {mode} · {c.get('connections')} connections · "
        f"{c.get('duration')} s x {c.get('rounds')} interleaved rounds "
        f"(median; ratio = median of same-round ratios to {result.reference})"
        + (f" · pipeline {c['pipeline']}" if c.get("pipeline", 1) > 1 else ""),
        "",
        markdown_table(result),
        "",
    ]
    if result.client_bound_servers():
        lines += [
            f"† **client-bound**: the load generator's core was at least {CLIENT_BOUND_BUSY:.0%} busy "
            "while the server's was not, so requests/s compares the client; use CPU µs/req.",
            "",
        ]
    legend = cpu_legend(result)
    if legend:
        lines += [legend, ""]
    lines += [
        f"Machine: {env.get('cpu', '?')}, {env.get('cpus', '?')} CPUs, {env.get('platform', '?')}; "
        f"Python {env.get('python', '?')}; {env.get('load_generator', '')}; "
        f"pinning: {env.get('pinning', '?')}.",
    ]
    if c.get("command_line"):
        lines += ["", f"Reproduce: `{c['command_line']}`"]
    if result.notes:
        lines += [""] + [f"> {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")


def load_json(path: Path) -> BenchResult:
    return BenchResult.from_dict(json.loads(path.read_text()))
