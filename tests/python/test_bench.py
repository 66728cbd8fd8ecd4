"""Tests for ``fasterapi-asgi bench`` (fasterapi_asgi/bench) and the suite's report helpers.

Parsing is tested on wrk/h2load output captured from real runs on this project's machine; the
maths, report formats and regression gate on fake results; and one short real run (1 s, against
uvicorn, plus fasterapi-asgi once its core is built) checks the whole path end to end. Nothing
here asserts on how fast anything is.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import PACKAGE_PARENT

from fasterapi_asgi.bench import chart, cli, gate, load, report, servers
from fasterapi_asgi.bench.report import BenchResult, RunRecord

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "benchmarks" / "apps"

# ------------------------------------------------------------------------ captured wrk 4.1.0 output

WRK_OK = """\
Running 1s test @ http://127.0.0.1:8765/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.46ms    1.83ms  12.74ms   87.97%
    Req/Sec    15.91k     3.02k   19.72k    63.64%
  Latency Distribution
     50%  623.00us
     75%    1.96ms
     90%    3.54ms
     99%   10.09ms
  17405 requests in 1.10s, 2.49MB read
Requests/sec:  15820.17
Transfer/sec:      2.26MB
"""

WRK_404 = """\
Running 1s test @ http://127.0.0.1:8766/missing
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   479.12us  347.18us   4.73ms   93.71%
    Req/Sec    36.13k     7.39k   42.72k    81.82%
  Latency Distribution
     50%  367.00us
     75%  457.00us
     90%  713.00us
     99%    2.22ms
  39540 requests in 1.10s, 5.92MB read
  Non-2xx or 3xx responses: 39540
Requests/sec:  35977.34
Transfer/sec:      5.39MB
"""

WRK_SOCKET_ERRORS = """\
Running 1s test @ http://127.0.0.1:8767/
  1 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   433.96us  222.00us   2.92ms   73.73%
    Req/Sec    10.65k     1.51k   13.30k    60.00%
  Latency Distribution
     50%  359.00us
     75%  536.00us
     90%  767.00us
     99%    1.07ms
  10570 requests in 1.00s, 412.89KB read
  Socket errors: connect 0, read 5286, write 0, timeout 0
Requests/sec:  10566.72
Transfer/sec:    412.76KB
"""

# 16-deep pipelining: wrk records one latency sample per batch, so its 99th percentile reads 0
WRK_PIPELINED_WITH_JSON = """\
Running 1s test @ http://127.0.0.1:42299/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    17.09ms    9.02ms  57.04ms   61.48%
    Req/Sec    33.73k     5.56k   40.74k    70.00%
  Latency Distribution
     50%   19.72ms
     75%   27.30ms
     90%   54.32ms
     99%    0.00us
  33542 requests in 1.00s, 4.80MB read
Requests/sec:  33456.69
Transfer/sec:      4.79MB
WRK_JSON {"requests": 33542, "duration_us": 1002550, "bytes": 5031300, "connect": 0, "read": 0, "write": 0, \
"status": 0, "timeout": 0, "p50_us": 19718, "p90_us": 54316, "p99_us": 0, "max_us": 57037}
"""

WRK_JSON_ERRORS = (
    'WRK_JSON {"requests": 0, "duration_us": 1004108, "bytes": 0, "connect": 0, "read": 67, "write": 51369, '
    '"status": 0, "timeout": 0, "p50_us": 0, "p90_us": 0, "p99_us": 0, "max_us": 0}\n'
)

WRK_REFUSED = "unable to connect to 127.0.0.1:8799 Connection refused\n"

H2LOAD_404 = """\
finished in 1.00s, 100.00 req/s, 15.33KB/s
requests: 100 total, 102 started, 100 done, 0 succeeded, 100 failed, 0 errored, 0 timeout
status codes: 0 2xx, 0 3xx, 100 4xx, 0 5xx
"""

H2LOAD_OK = """\
finished in 1.00s, 404.00 req/s, 59.18KB/s
requests: 404 total, 408 started, 404 done, 404 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 404 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 59.18KB (60600) total, 36.30KB (37168) headers (space savings 0.00%), 5.13KB (5252) data
                     min         max         mean         sd        +/- sd
time for request:       68us      1.68ms       439us       169us    88.37%
"""


def test_wrk_time_units() -> None:
    assert load.parse_wrk_time_ms("623.00us") == pytest.approx(0.623)
    assert load.parse_wrk_time_ms("1.96ms") == pytest.approx(1.96)
    assert load.parse_wrk_time_ms("1.00s") == pytest.approx(1000.0)
    assert load.parse_wrk_time_ms("2.00m") == pytest.approx(120_000.0)
    with pytest.raises(load.LoadParseError):
        load.parse_wrk_time_ms("fast")


def test_parse_wrk_text_ok() -> None:
    r = load.parse_wrk_output(WRK_OK)
    assert r.requests == 17405
    assert r.rps == pytest.approx(15820.17)
    assert r.duration_s == pytest.approx(1.10)
    assert r.p50_ms == pytest.approx(0.623)
    assert r.p99_ms == pytest.approx(10.09)
    assert (r.non_2xx_3xx, r.socket_errors, r.errors) == (0, 0, 0)


def test_parse_wrk_text_non_2xx_and_socket_errors() -> None:
    r = load.parse_wrk_output(WRK_404)
    assert r.non_2xx_3xx == 39540 and r.socket_errors == 0 and r.errors == 39540
    assert r.p99_ms == pytest.approx(2.22)
    s = load.parse_wrk_output(WRK_SOCKET_ERRORS)
    assert s.non_2xx_3xx == 0 and s.socket_errors == 5286 and s.errors == 5286
    assert s.p50_ms == pytest.approx(0.359)


def test_parse_wrk_prefers_json_line_and_drops_missing_percentiles() -> None:
    r = load.parse_wrk_output(WRK_PIPELINED_WITH_JSON)
    assert r.requests == 33542
    assert r.rps == pytest.approx(33542 / 1.00255)
    assert r.p50_ms == pytest.approx(19.718)
    assert r.p99_ms is None  # 0 with a non-zero max: unknown, not instantaneous
    # the text fallback reaches the same conclusion for the 0.00us line
    text_only = WRK_PIPELINED_WITH_JSON.split("WRK_JSON")[0]
    assert load.parse_wrk_output(text_only).p99_ms is None
    e = load.parse_wrk_output(WRK_JSON_ERRORS)
    assert e.requests == 0 and e.socket_errors == 67 + 51369 and e.rps == 0


def test_parse_wrk_failures() -> None:
    with pytest.raises(load.LoadParseError, match="could not connect"):
        load.parse_wrk_output(WRK_REFUSED)
    with pytest.raises(load.LoadParseError, match="unrecognised"):
        load.parse_wrk_output("Usage: wrk <options> <url>\n")


def test_parse_h2load() -> None:
    log = "1795674349878488\t200\t594\n1795674349878482\t200\t809\n1795674349878474\t200\t949\n"
    r = load.parse_h2load_output(H2LOAD_OK, log)
    assert r.requests == 404 and r.rps == pytest.approx(404.0) and r.errors == 0
    assert r.p50_ms == pytest.approx(0.809) and r.p99_ms == pytest.approx(0.949)
    bad = load.parse_h2load_output(H2LOAD_404, "1\t404\t989\n2\t404\t1013\n")
    assert bad.non_2xx_3xx == 100 and bad.socket_errors == 0
    with pytest.raises(load.LoadParseError):
        load.parse_h2load_output("nothing", "")


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert load.percentile(values, 50) == 50.0
    assert load.percentile(values, 99) == 99.0
    assert load.percentile(values, 100) == 100.0
    assert load.percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        load.percentile([], 50)


def test_lua_script_escapes_and_pipelines() -> None:
    assert load.lua_string('a"b\\c\n') == '"a\\034b\\092c\\010"'
    script = load.wrk_script(
        method="POST", body=b'{"x": 1}', headers=[("Content-Type", "application/json")], pipeline=16
    )
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = "{\\034x\\034: 1}"' in script
    assert 'wrk.headers["Content-Type"] = "application/json"' in script
    assert "local depth = 16" in script and "request = function() return batch end" in script
    assert load.JSON_MARKER.strip() in script
    plain = load.wrk_script()
    assert "request = function" not in plain and "wrk.body" not in plain


def test_load_commands() -> None:
    cmd = load.wrk_command(
        "http://127.0.0.1:1/x", duration_s=3, connections=10, threads=1, script_path="s.lua"
    )
    assert cmd == ["wrk", "-t1", "-c10", "-d3s", "--latency", "-s", "s.lua", "http://127.0.0.1:1/x"]
    h2 = load.h2load_command(
        "http://127.0.0.1:1/", duration_s=2, connections=4, threads=1, rate=1000, log_file="l",
        headers=[("A", "b")], body_file="body",
    )  # fmt: skip
    assert "--h1" in h2 and "--rps=250" in h2 and "-D2" in h2 and "--log-file=l" in h2
    assert h2[h2.index("-H") + 1] == "A: b" and h2[h2.index("-d") + 1] == "body"


# --------------------------------------------------------------------------------- argument handling


def _args(*argv: str) -> tuple[object, list[str]]:
    return cli.build_parser().parse_args(list(argv)), list(argv)


def test_defaults_put_fasterapi_first() -> None:
    args, argv = _args("main:app", "--path", "items/1", "--against", "uvicorn,granian,uvicorn")
    config = cli.config_from_args(args, argv)  # type: ignore[arg-type]
    assert config.servers == ["fasterapi-asgi", "uvicorn", "granian"]
    assert config.path == "/items/1"
    assert (config.duration, config.rounds, config.warmup, config.connections, config.pipeline) == (
        10,
        3,
        2,
        64,
        1,
    )
    assert config.method == "GET" and config.body is None and config.rate is None
    assert config.command_line.startswith("fasterapi-asgi bench main:app")


def test_options_reach_the_config(tmp_path: Path) -> None:
    body = tmp_path / "b.json"
    body.write_bytes(b'{"a": 1}')
    args, argv = _args(
        "main:app", "--only", "uvicorn,granian", "--method", "post", "--body-file", str(body),
        "--header", "X-A: 1", "--header", "Content-Type: application/json", "--connections", "8",
        "--threads", "2", "--pipeline", "4", "--duration", "5s", "--warmup", "0", "--rounds", "1",
        "--app-dir", str(tmp_path), "--server-arg", "uvicorn:--timeout-keep-alive 30",
        "--server-arg", "all:--foo", "--reference", "granian",
    )  # fmt: skip
    c = cli.config_from_args(args, argv)  # type: ignore[arg-type]
    assert c.servers == ["uvicorn", "granian"] and c.reference == "granian"
    assert c.method == "POST" and c.body == b'{"a": 1}'
    assert c.headers == [("X-A", "1"), ("Content-Type", "application/json")]
    assert (c.connections, c.threads, c.pipeline, c.duration, c.warmup, c.rounds) == (8, 2, 4, 5, 0, 1)
    assert c.app_dir == tmp_path.resolve()
    assert c.server_args["uvicorn"] == ["--timeout-keep-alive", "30", "--foo"]
    assert c.server_args["granian"] == ["--foo"]


@pytest.mark.parametrize(
    "argv",
    [
        [],  # no APP
        ["main:app", "--only", "nosuch"],
        ["main:app", "--against", "uvicorn", "--only", "uvicorn"],
        ["main:app", "--header", "no-colon"],
        ["main:app", "--duration", "0"],
        ["main:app", "--duration", "1.5"],
        ["main:app", "--rounds", "x"],
        ["main:app", "--rate", "-5"],
        ["main:app", "--server-arg", "nosuch:--x"],
        ["main:app", "--body", "a", "--body-file", "f"],
        ["main:app", "--max-regression", "5%"],  # needs --baseline
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "--against" in out and "--max-regression" in out and "--rate" in out


def test_missing_wrk_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no wrk, no h2load
    assert cli.main(["main:app", "--only", "uvicorn", "--out", str(tmp_path / "o")]) == 2
    assert "apt-get install -y wrk" in capsys.readouterr().err
    assert cli.main(["main:app", "--only", "uvicorn", "--rate", "100", "--out", str(tmp_path / "o")]) == 2
    assert "apt-get install -y nghttp2-client" in capsys.readouterr().err


def test_missing_peer_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = servers._module_available
    monkeypatch.setattr(servers, "_module_available", lambda m: m != "granian" and real(m))
    monkeypatch.setattr(servers.shutil, "which", lambda exe: f"/usr/bin/{exe}")  # pretend wrk is there
    assert cli.main(["main:app", "--only", "uvicorn,granian", "--out", str(tmp_path)]) == 2
    assert "pip install granian" in capsys.readouterr().err
    with pytest.raises(servers.ServerUnavailable, match="pip install granian"):
        servers.check_server("granian")


# --------------------------------------------------------------------------------- maths & reports


def _fake(runs: list[tuple[str, int, float]], servers_: list[str], p99: float = 1.0) -> BenchResult:
    return BenchResult(
        config={
            "app": "main:app",
            "path": "/",
            "method": "GET",
            "connections": 64,
            "duration": 10,
            "rounds": 3,
        },
        environment={"date": "2026-01-01 00:00 UTC", "cpu": "test cpu", "cpus": 2},
        servers=servers_,
        reference=servers_[0],
        versions={s: "1.0" for s in servers_},
        runs=[
            RunRecord(
                server=s,
                round=r,
                rps=v,
                p50_ms=0.5,
                p99_ms=p99 * (2 if s != servers_[0] else 1),
                requests=int(v * 10),
                errors=0,
                peak_rss_kb=1024 * r,
            )  # fmt: skip
            for s, r, v in runs
        ],
    )


def test_median_of_same_round_ratios() -> None:
    # round ratios b/a: 2.0, 1.0, 1.5 -> median 1.5; ratio of medians would be 200/100 = 2.0
    result = _fake(
        [("a", 1, 100), ("b", 1, 200), ("a", 2, 300), ("b", 2, 300), ("a", 3, 50), ("b", 3, 75)], ["a", "b"]
    )
    a, b = result.summaries()
    assert a.ratio == 1.0 and a.rps == 100
    assert b.rps == 200
    assert b.ratio == pytest.approx(1.5)
    assert b.p99_ratio == pytest.approx(2.0)
    assert b.peak_rss_kb == 3 * 1024 and b.rounds == 3
    assert report.median([3.0, 1.0, 2.0, 10.0]) == 2.5 and report.median([]) is None
    assert report.same_round_ratios(result.runs, "b", "a") == pytest.approx([2.0, 1.0, 1.5])


def test_ratio_skips_rounds_missing_a_server() -> None:
    result = _fake([("a", 1, 100), ("b", 1, 150), ("b", 2, 999)], ["a", "b"])
    assert report.same_round_ratios(result.runs, "b", "a") == [1.5]


def test_json_roundtrip_and_markdown(tmp_path: Path) -> None:
    result = _fake([("fasterapi-asgi", 1, 30000), ("uvicorn", 1, 10000)], ["fasterapi-asgi", "uvicorn"])
    result.notes.append("a note")
    path = tmp_path / "bench.json"
    report.write_json(result, path)
    data = json.loads(path.read_text())
    assert data["schema"] == report.SCHEMA_VERSION and data["servers"] == ["fasterapi-asgi", "uvicorn"]
    assert {s["server"]: s["ratio"] for s in data["summary"]} == {"fasterapi-asgi": 1.0, "uvicorn": 1 / 3}
    back = report.load_json(path)
    assert back.runs == result.runs and back.reference == "fasterapi-asgi"
    md = report.markdown_report(result)
    assert "| server | version | req/s | x fasterapi-asgi | p50 ms | p99 ms | errors | peak RSS MB |" in md
    assert "| fasterapi-asgi | 1.0 | 30,000 | 1.00x |" in md
    assert "| uvicorn | 1.0 | 10,000 | 0.33x |" in md
    assert "> a note" in md
    table = report.console_table(result)
    assert table.splitlines()[0].startswith("server") and "0.33x" in table
    with pytest.raises(ValueError):
        BenchResult.from_dict({"nothing": 1})


def test_fixed_rate_table_shows_p99_ratio() -> None:
    result = _fake([("a", 1, 1000), ("b", 1, 1000)], ["a", "b"], p99=3.0)
    result.config["rate"] = 1000
    head, rows = report.table_rows(result)
    assert head[3] == "p99 x a"
    assert rows[1][3] == "2.00x"


def test_outputs_and_github_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("previous step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    result = _fake([("fasterapi-asgi", 1, 30000), ("uvicorn", 1, 10000)], ["fasterapi-asgi", "uvicorn"])
    notes = cli.write_outputs(result, tmp_path / "out")
    assert (tmp_path / "out" / "bench.json").exists() and (tmp_path / "out" / "bench.md").exists()
    text = summary.read_text()
    assert text.startswith("previous step\n") and "| uvicorn | 1.0 | 10,000 | 0.33x |" in text
    png = tmp_path / "out" / "bench.png"
    if chart.matplotlib_available():
        assert notes == [] and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert notes == [chart.MISSING_NOTE] and not png.exists()


# -------------------------------------------------------------------------------------- server cpu

PROC_STAT_0 = """\
cpu  211067 0 59646 265236 976 0 17862 118 0 0
cpu0 1000 10 500 8000 100 5 300 20 40 0
cpu1 2000 0 700 6000 50 0 200 0 0 0
intr 123456 0 0
ctxt 987654
"""
# 1 s later at 100 ticks/s: cpu0 user +40, system +20, softirq +30, idle +8, iowait +2 (guest +7 is
# already inside user); cpu1 user +60, system +30, softirq +7, idle +3
PROC_STAT_1 = """\
cpu  211267 0 59696 265247 978 0 17899 118 0 0
cpu0 1040 10 520 8008 102 5 330 20 47 0
cpu1 2060 0 730 6003 50 0 207 0 0 0
intr 123999 0 0
"""


def test_proc_stat_delta_busy_fraction() -> None:
    before, after = servers.parse_proc_stat(PROC_STAT_0), servers.parse_proc_stat(PROC_STAT_1)
    assert set(before) == {0, 1}  # the aggregate "cpu" line and other lines are not cores
    assert before[0] == servers.CoreTimes(busy=1000 + 10 + 500 + 5 + 300 + 20, total=1835 + 8100)
    # busy = user + nice + system + irq + softirq + steal; idle and iowait are not; guest not twice
    assert servers.busy_fraction(before[0], after[0]) == pytest.approx(90 / 100)
    assert servers.busy_fraction(before[1], after[1]) == pytest.approx(97 / 100)
    assert servers.busy_fraction(before[0], before[0]) is None  # no ticks elapsed
    assert servers.busy_fraction(None, after[0]) is None and servers.busy_fraction(before[0], None) is None
    # old kernels print fewer columns
    assert servers.parse_proc_stat("cpu3 10 0 5 100\n") == {3: servers.CoreTimes(busy=15, total=115)}


def test_process_cpu_ticks_and_window_on_own_process() -> None:
    data = b"4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 123 45 6 7 20 0 1 0 99 1000 200"
    assert servers.parse_pid_cpu_ticks(data) == 123 + 45
    with servers.CpuWindow(os.getpid(), server_cpu=0, load_cpu=None) as window:
        end = time.monotonic() + 0.15
        while time.monotonic() < end:  # burn a little CPU in this process
            pass
    assert window.window_s >= 0.15
    assert window.tree_cpu_s is not None and window.tree_cpu_s > 0
    assert window.load_busy is None  # not pinned: not measured
    if os.path.exists("/proc/stat"):
        assert window.server_busy is not None and 0.0 <= window.server_busy <= 1.0


def test_cpu_us_per_request_maths() -> None:
    # pinned: 92% of a 10 s window over 1,150,000 requests = 8 µs each, from the core
    us, source = report.server_cpu_per_request(
        1_150_000, server_core_busy=0.92, window_s=10.0, tree_cpu_s=7.5
    )
    assert us == pytest.approx(8.0) and source == report.CPU_SOURCE_CORE
    # unpinned: the process tree's own CPU time
    us, source = report.server_cpu_per_request(100_000, server_core_busy=None, window_s=10.0, tree_cpu_s=2.5)
    assert us == pytest.approx(25.0) and source == report.CPU_SOURCE_TREE
    assert report.server_cpu_per_request(0, server_core_busy=0.9, window_s=1.0, tree_cpu_s=1.0) == (None, "")
    assert report.server_cpu_per_request(10, server_core_busy=None, window_s=1.0, tree_cpu_s=None) == (
        None,
        "",
    )


def test_client_bound_rule() -> None:
    assert report.is_client_bound(0.92, 0.99)  # the measured native-route case
    assert report.is_client_bound(0.50, 0.95)  # the threshold itself counts as saturated
    assert not report.is_client_bound(0.98, 0.99)  # nginx: both saturated, server-bound enough
    assert not report.is_client_bound(0.95, 1.0)
    assert not report.is_client_bound(0.60, 0.94)  # neither saturated (e.g. latency-bound)
    assert not report.is_client_bound(None, 1.0) and not report.is_client_bound(0.5, None)


def _with_cpu(result: BenchResult, cpu: dict[str, tuple[float, float, float]]) -> BenchResult:
    """Set (server core busy, load core busy, µs/request) on every run of each named server."""
    for r in result.runs:
        server_busy, load_busy, us = cpu[r.server]
        r.server_core_busy, r.load_core_busy, r.cpu_us_per_request = server_busy, load_busy, us
        r.cpu_window_s, r.server_tree_cpu_s, r.cpu_source = 10.0, 1.0, report.CPU_SOURCE_CORE
    return result


def test_cpu_fields_in_json_markdown_and_console(tmp_path: Path) -> None:
    names = ["fasterapi-asgi", "nginx"]
    result = _fake([("fasterapi-asgi", 1, 127000), ("nginx", 1, 131000)], names)
    result.reference = "nginx"
    _with_cpu(result, {"fasterapi-asgi": (0.92, 0.995, 7.25), "nginx": (0.98, 0.99, 7.48)})
    fa, ng = result.summaries()
    assert fa.client_bound and not ng.client_bound
    assert fa.cpu_ratio == pytest.approx(7.25 / 7.48) and ng.cpu_ratio == 1.0
    assert result.client_bound_servers() == ["fasterapi-asgi"]

    path = tmp_path / "bench.json"
    report.write_json(result, path)
    data = json.loads(path.read_text())
    run = data["runs"][0]
    assert run["server_core_busy"] == 0.92 and run["load_core_busy"] == 0.995
    assert run["cpu_us_per_request"] == 7.25 and run["cpu_source"] == "server core"
    assert run["cpu_window_s"] == 10.0 and run["server_tree_cpu_s"] == 1.0
    summary = {s["server"]: s for s in data["summary"]}
    assert summary["fasterapi-asgi"]["client_bound"] is True and summary["nginx"]["client_bound"] is False
    assert summary["fasterapi-asgi"]["cpu_ratio"] == pytest.approx(0.969, abs=1e-3)
    assert report.load_json(path).runs == result.runs

    md = report.markdown_report(result)
    assert "| server core busy % | load core busy % | CPU µs/req | CPU/req x nginx |" in md
    assert "| fasterapi-asgi | 1.0 | 127,000 † | 0.97x |" in md
    assert "| 92.0 | 99.5 | 7.25 | 0.97x |" in md
    assert "| nginx | 1.0 | 131,000 | 1.00x |" in md and "| 98.0 | 99.0 | 7.48 | 1.00x |" in md
    assert "† **client-bound**" in md and "requests/s compares the client" in md
    assert "busy time of the server's pinned core" in md
    table = report.console_table(result)
    assert "127,000 *" in table and "CPU µs/req" in table and "131,000 *" not in table
    assert report.client_bound_warning(result) == (report.CLIENT_BOUND_WARNING + " (fasterapi-asgi)")

    # fixed-rate runs are never called client-bound (the rate, not the client, limits them)
    result.config["rate"] = 1000
    assert result.client_bound_servers() == [] and report.client_bound_warning(result) is None


def test_results_without_cpu_data_still_load_and_render() -> None:
    old = _fake([("a", 1, 100), ("b", 1, 50)], ["a", "b"]).to_dict()
    for r in old["runs"]:  # a bench.json written before the CPU columns existed
        for key in ("server_core_busy", "load_core_busy", "cpu_window_s", "server_tree_cpu_s"):
            del r[key]
        del r["cpu_us_per_request"], r["cpu_source"]
    back = BenchResult.from_dict(old)
    a, b = back.summaries()
    assert b.cpu_us_per_request is None and b.cpu_ratio is None and not b.client_bound
    md = report.markdown_report(back)
    assert "| b | 1.0 | 50 | 0.50x |" in md and "| - | - | - | - |" in md
    assert "client-bound" not in md and "CPU µs/req =" not in md


# ------------------------------------------------------------------------------------------- gate


def test_parse_fraction() -> None:
    assert gate.parse_fraction("5%") == pytest.approx(0.05)
    assert gate.parse_fraction("0.05") == pytest.approx(0.05)
    assert gate.parse_fraction("5") == pytest.approx(0.05)
    assert gate.parse_fraction("0%") == 0.0
    for bad in ("five", "150%", "-1%"):
        with pytest.raises(ValueError):
            gate.parse_fraction(bad)


def test_gate_pass_and_fail() -> None:
    names = ["fasterapi-asgi", "uvicorn"]
    base = _fake([("fasterapi-asgi", 1, 10000), ("uvicorn", 1, 5000)], names)
    slower = _fake([("fasterapi-asgi", 1, 9400), ("uvicorn", 1, 5000)], names)  # -6%
    within = _fake([("fasterapi-asgi", 1, 9600), ("uvicorn", 1, 5000)], names)  # -4%
    out = gate.check_regression(slower, base, max_regression=0.05, server="fasterapi-asgi")
    assert not out.passed and "REGRESSION" in out.message and out.change == pytest.approx(-0.06)
    assert gate.check_regression(within, base, max_regression=0.05, server="fasterapi-asgi").passed
    faster = _fake([("fasterapi-asgi", 1, 20000), ("uvicorn", 1, 5000)], names)
    assert gate.check_regression(faster, base, max_regression=0.0, server="fasterapi-asgi").passed


def test_gate_on_ratio_and_missing_servers() -> None:
    names = ["fasterapi-asgi", "uvicorn"]
    base = _fake([("fasterapi-asgi", 1, 10000), ("uvicorn", 1, 5000)], names)
    base.reference = "uvicorn"
    # absolute rps fell 50% (slower machine) but the ratio to uvicorn held: the ratio gate passes
    now = _fake([("fasterapi-asgi", 1, 5000), ("uvicorn", 1, 2500)], names)
    now.reference = "uvicorn"
    assert not gate.check_regression(now, base, max_regression=0.05, server="fasterapi-asgi").passed
    assert gate.check_regression(
        now, base, max_regression=0.05, server="fasterapi-asgi", metric="ratio"
    ).passed
    other = _fake([("uvicorn", 1, 5000)], ["uvicorn"])
    out = gate.check_regression(now, other, max_regression=0.05, server="fasterapi-asgi")
    assert not out.passed and "baseline has no result for fasterapi-asgi" in out.message


def test_bad_baseline_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert cli.main(["main:app", "--baseline", str(bad)]) == 2
    assert "cannot use the baseline" in capsys.readouterr().err
    assert cli.main(["main:app", "--baseline", str(tmp_path / "missing.json")]) == 2


# ------------------------------------------------------------------------------------ servers & rss


def test_server_commands_use_fastest_documented_settings(tmp_path: Path) -> None:
    uv = servers.SERVERS["uvicorn"].build("main:app", 9000, tmp_path)
    assert uv[1:4] == ["-m", "uvicorn", "main:app"]
    for flag in ("--no-access-log", "uvloop", "httptools"):
        assert flag in uv
    gr = servers.SERVERS["granian"].build("main:app", 9000, tmp_path)
    assert gr[gr.index("--interface") + 1] == "asgi" and gr[gr.index("--workers") + 1] == "1"
    assert "--no-access-log" in gr and gr[-1] == "main:app"
    hc = servers.SERVERS["hypercorn"].build("main:app", 9000, tmp_path)
    assert hc[hc.index("-k") + 1] == "uvloop" and hc[hc.index("-b") + 1] == "127.0.0.1:9000"
    me = servers.SERVERS["fasterapi-asgi"].build("main:app", 9000, tmp_path)
    assert me[1:4] == ["-m", "fasterapi_asgi", "main:app"] and "--no-access-log" in me
    ng = servers.SERVERS["nginx"].build("main:app", 9000, tmp_path)
    conf = Path(ng[ng.index("-c") + 1]).read_text()
    assert "listen 127.0.0.1:9000" in conf and "worker_processes 1;" in conf and "access_log off;" in conf
    assert 'return 200 "Hello, World!"' in conf


def test_pinning_and_rss_of_own_process_tree() -> None:
    off = servers.choose_pinning(False)
    assert off.server_prefix() == [] and "disabled" in off.note
    on = servers.choose_pinning(True)
    if on.server_cpu is not None:
        assert on.server_prefix() == ["taskset", "-c", str(on.server_cpu)] and on.load_cpu != on.server_cpu
    else:
        assert on.note
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in servers.process_tree(os.getpid())
        assert servers.tree_rss_kb(os.getpid()) > servers.rss_kb(os.getpid()) > 0
    finally:
        child.kill()
        child.wait()


# ----------------------------------------------------------------------------------------- suite


def _load_suite(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("run_suite", ROOT / "benchmarks" / "run_suite.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "run_suite", module)  # dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the suite prepends the repository root
    spec.loader.exec_module(module)
    return module


def test_suite_report_marks_unavailable_scenarios(monkeypatch: pytest.MonkeyPatch) -> None:
    suite_mod = _load_suite(monkeypatch)
    keys = [s.key for s in suite_mod.SCENARIOS]
    assert keys == [
        "raw_plaintext", "raw_json", "fastapi_get", "fastapi_post_1k", "fastapi_300_routes",
        "fastapi_middleware", "stream_64k", "native", "native_pipeline16", "fixed_rate_latency", "idle_rss",
    ]  # fmt: skip
    fake = _fake([("fasterapi-asgi", 1, 30000), ("uvicorn", 1, 10000)], ["fasterapi-asgi", "uvicorn"])
    suite = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python benchmarks/run_suite.py",
        "machine": {"cpu": "cpu", "cpus": 2, "pinning": "server CPU 0, load CPU 1"},
        "settings": {"rounds": 3, "duration": 10, "connections": 64, "smoke": False},
        "versions": {"uvicorn": "0.54.0"},
        "missing": [],
        "scenarios": [
            {"key": "raw_plaintext", "title": "raw ASGI plain text", "reference": "uvicorn", "target": "t",
             "status": "ok", "result": {**fake.to_dict(), "summary": [
                 {**s, "ratio": s["rps"] / 10000} for s in fake.to_dict()["summary"]]}},
            {"key": "native", "title": "native route (C++)", "reference": "nginx", "target": ">= 1.1x nginx",
             "status": "not available", "why": "no native"},
            {"key": "idle_rss", "title": "idle", "reference": "uvicorn", "target": "", "status": "ok",
             "idle": {"connections": 10000, "reference": "uvicorn", "servers": {
                 "uvicorn": {"rss_kb": 102400, "ratio": 1.0},
                 "fasterapi-asgi": {"rss_kb": 20480, "ratio": 0.2}}}},
        ],
    }  # fmt: skip
    md = suite_mod.suite_markdown(suite, ["fasterapi-asgi", "uvicorn", "granian"])
    assert "| scenario | fasterapi-asgi | uvicorn | ratio to | target |" in md
    assert "| raw ASGI plain text | 30,000 (3.00x) | 10,000 (1.00x) | uvicorn | t |" in md
    assert "not available: no native" in md
    assert "| RSS, 10,000 idle keep-alive connections | 20.0 MB (0.20x) | 100.0 MB (1.00x) |" in md
    ratios = suite_mod.chart_ratios(suite)
    assert ratios["raw_plaintext"] == {"fasterapi-asgi": 3.0, "uvicorn": 1.0}
    assert "native" not in ratios and ratios["idle_rss"]["fasterapi-asgi"] == 0.2
    assert "client-bound" not in md and "CPU/req" not in md


def test_suite_report_shows_cpu_ratio_for_client_bound_scenarios(monkeypatch: pytest.MonkeyPatch) -> None:
    suite_mod = _load_suite(monkeypatch)
    names = ["fasterapi-asgi", "nginx"]
    native = _fake([("fasterapi-asgi", 1, 127000), ("nginx", 1, 131000)], names)
    native.reference = "nginx"
    _with_cpu(native, {"fasterapi-asgi": (0.92, 0.995, 7.25), "nginx": (0.98, 0.99, 7.48)})
    raw = _fake([("fasterapi-asgi", 1, 30000), ("nginx", 1, 10000)], names)
    raw.reference = "nginx"
    _with_cpu(raw, {"fasterapi-asgi": (1.0, 0.6, 30.0), "nginx": (1.0, 0.3, 90.0)})
    suite = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python benchmarks/run_suite.py",
        "machine": {"cpu": "cpu", "cpus": 2, "pinning": "server CPU 0, load CPU 1"},
        "settings": {"rounds": 1, "duration": 10, "connections": 64, "smoke": False},
        "versions": {},
        "missing": [],
        "scenarios": [
            {"key": "native", "title": "native route (C++)", "reference": "nginx", "target": "t",
             "status": "ok", "result": native.to_dict()},
            {"key": "raw", "title": "raw", "reference": "nginx", "target": "t",
             "status": "ok", "result": raw.to_dict()},
        ],
    }  # fmt: skip
    md = suite_mod.suite_markdown(suite, names)
    # the client-bound scenario gets the CPU/req ratio in every cell, the other scenario does not
    assert "| native route (C++) | 127,000† (0.97x; CPU/req 0.97x) | 131,000 (1.00x; CPU/req 1.00x) |" in md
    assert "| raw | 30,000 (3.00x) | 10,000 (1.00x) |" in md
    assert "† client-bound" in md and "**CPU/req**" in md and "lower is better" in md


# ------------------------------------------------------------------------------------ real smoke run


def _smoke_servers() -> list[str]:
    """uvicorn always; fasterapi-asgi first once its native core is built (then it must work)."""
    try:
        built = importlib.util.find_spec("fasterapi_asgi._core") is not None
    except (ImportError, ValueError):
        built = False
    return ["fasterapi-asgi", "uvicorn"] if built else ["uvicorn"]


def _run_bench(out: Path, baseline: Path, names: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [
        sys.executable, "-m", "fasterapi_asgi.bench", "raw_asgi:app", "--app-dir", str(APPS),
        "--path", "/plaintext", "--only", ",".join(names), "--duration", "1", "--rounds", "1",
        "--warmup", "0", "--connections", "8", "--out", str(out),
        "--baseline", str(baseline), "--max-regression", "5%",
    ]  # fmt: skip
    return _bench_subprocess(argv)


def _bench_subprocess(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run the bench CLI of the package under test, without a GitHub step summary to append to."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(PACKAGE_PARENT), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("GITHUB_STEP_SUMMARY", None)
    return subprocess.run(
        argv, capture_output=True, text=True, cwd=str(ROOT), env=env, timeout=100, check=False
    )


def test_real_smoke_run_and_gate(tmp_path: Path) -> None:
    names = _smoke_servers()
    first = names[0]
    baseline = tmp_path / "baseline.json"
    impossible = _fake([(n, 1, 1e12) for n in names], names)
    report.write_json(impossible, baseline)

    proc = _run_bench(tmp_path / "out", baseline, names)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # every server is slower than 10^12 req/s
    assert f"REGRESSION: {first} req/s" in proc.stdout
    assert "round 1/1" in proc.stderr and "measuring 1 s" in proc.stderr  # progress while running
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert data["servers"] == names and [r["server"] for r in data["runs"]] == names
    for run in data["runs"]:
        assert run["requests"] > 0 and run["rps"] > 0, run
        assert run["errors"] == 0, run
        assert run["p50_ms"] is not None and run["p99_ms"] >= run["p50_ms"]
        assert run["peak_rss_kb"] > 1024  # a Python server is more than 1 MB
        assert run["cpu_us_per_request"] > 0 and run["cpu_window_s"] >= 1.0, run
        assert run["cpu_source"] in ("server core", "server process tree"), run
    md = (tmp_path / "out" / "bench.md").read_text()
    assert f"| {first} |" in md and "x " + first in md
    assert "1.00x" in proc.stdout  # the console table, the first server against itself
    assert "CPU µs/req" in proc.stdout and "CPU µs/req" in md

    # the same run against a baseline it easily beats passes the gate
    report.write_json(_fake([(n, 1, 1.0) for n in names], names), baseline)
    proc = _run_bench(tmp_path / "out2", baseline, names)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "regression gate passed" in proc.stdout


def test_tls_smoke_run(tmp_path: Path) -> None:
    """--tls: each server gets its own TLS options, wrk loads https:// (a real 1 s run, uvicorn as peer)."""
    import trustme

    cert = trustme.CA().issue_cert("127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    for i, blob in enumerate(cert.cert_chain_pems):
        blob.write_to_path(str(tmp_path / "chain.pem"), append=i > 0)
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "fasterapi_asgi.bench", "raw_asgi:app", "--app-dir", str(APPS),
        "--path", "/plaintext", "--only", "fasterapi-asgi,uvicorn", "--duration", "1", "--rounds", "1",
        "--warmup", "0", "--connections", "8", "--out", str(out), "--no-chart",
        "--tls", f"{tmp_path / 'chain.pem'}:{tmp_path / 'key.pem'}",
    ]  # fmt: skip
    proc = _bench_subprocess(argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "bench.json").read_text())
    for run in data["runs"]:
        assert run["requests"] > 0 and run["errors"] == 0, run
    load_logs = "".join(p.read_text() for p in (out / "logs").rglob("load-*.txt"))
    assert "https://127.0.0.1:" in load_logs
    server_logs = "".join(p.read_text() for p in (out / "logs").rglob("server-*.log"))
    assert server_logs.count("--ssl-certfile") == 2


def test_tls_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["main:app", "--tls", "nocolon", "--out", str(tmp_path)]) == 2
    both = f"{__file__}:{__file__}"
    assert cli.main(["main:app", "--only", "nginx", "--tls", both, "--out", str(tmp_path)]) == 2
    assert "does not know how nginx serves TLS" in capsys.readouterr().err


def test_http2_load_command_and_protocol() -> None:
    cmd = load.h2load_h2_command(
        "http://127.0.0.1:1/", duration_s=2, connections=4, threads=1, streams=25, log_file="l",
        headers=[("A", "b")], body_file="body",
    )  # fmt: skip
    assert "--h1" not in cmd and "-c4" in cmd and "-m25" in cmd and "-D2" in cmd and "--log-file=l" in cmd
    assert cmd[cmd.index("-H") + 1] == "A: b" and cmd[cmd.index("-d") + 1] == "body"
    assert load.h2load_protocol("TLS Protocol: TLSv1.3\nApplication protocol: h2c\n") == "h2c"
    assert load.h2load_protocol("Application protocol: http/1.1\n") == "http/1.1"
    assert load.h2load_protocol("no such line") is None


def test_http2_option_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["main:app", "--only", "nginx", "--http2", "--out", str(tmp_path)]) == 2
    assert "does not know how nginx serves HTTP/2" in capsys.readouterr().err
    assert cli.main(["main:app", "--http2", "--rate", "100", "--out", str(tmp_path), "--skip-missing"]) == 2
    assert "cannot be combined with --rate" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_http2_smoke_run(tmp_path: Path) -> None:
    """--http2: each server gets its HTTP/2 options, h2load drives h2c with several streams per connection,
    and the run records that the server spoke HTTP/2 (a real 1 s run, granian as the peer when installed)."""
    names = ["fasterapi-asgi"] + (["granian"] if importlib.util.find_spec("granian") else [])
    out = tmp_path / "out"
    argv = [
        sys.executable, "-m", "fasterapi_asgi.bench", "raw_asgi:app", "--app-dir", str(APPS),
        "--path", "/plaintext", "--only", ",".join(names), "--duration", "1", "--rounds", "1",
        "--warmup", "0", "--connections", "4", "--streams", "20", "--http2", "--out", str(out), "--no-chart",
    ]  # fmt: skip
    proc = _bench_subprocess(argv)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "bench.json").read_text())
    assert data["config"]["http2"] is True and data["config"]["streams"] == 20
    for run in data["runs"]:
        assert run["requests"] > 0 and run["errors"] == 0, run
    load_logs = "".join(p.read_text() for p in (out / "logs").rglob("load-*.txt"))
    assert "Application protocol: h2c" in load_logs and "-m20" in load_logs
    server_logs = "".join(p.read_text() for p in (out / "logs").rglob("*.log"))
    assert "--http2" in server_logs
