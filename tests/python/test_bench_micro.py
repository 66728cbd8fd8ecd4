"""The micro-level benchmark tooling: benchmarks/callgrind.py's parsing and maths, its keep-alive client,
and the micro sections of benchmarks/run_suite.py. No valgrind and no C++ build needed: callgrind output
is synthetic text, the client talks to a tiny socket server in a thread."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(monkeypatch: pytest.MonkeyPatch, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)  # dataclasses look their module up
    monkeypatch.setattr(sys, "path", list(sys.path))  # the scripts prepend the repository root
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def cg(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return _load(monkeypatch, "callgrind")


# A dump as callgrind writes it: header, self costs per (compressed) position, a call with its inclusive cost.
DUMP = """\
# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 4242
cmd:  python3 -m uvicorn raw_asgi:app
part: 1

desc: I1 cache:
positions: line
events: Ir
summary: 0

ob=(1) /usr/bin/python3.11
fl=(1) ???
fn=(1) _PyEval_EvalFrameDefault
0 700
+2 50
cfn=(2) PyObject_Call
calls=3 0
0 1000
fn=(2)
0 250

totals: 1000
"""


def test_total_comes_from_the_totals_line(cg: ModuleType) -> None:
    assert cg.parse_callgrind_total(DUMP) == 1000
    two_events = DUMP.replace("events: Ir", "events: Dr Ir").replace("totals: 1000", "totals: 7 1000")
    assert cg.parse_callgrind_total(two_events) == 1000
    assert cg.parse_callgrind_total(two_events, "Dr") == 7


def test_summary_then_cost_lines_are_the_fallbacks(cg: ModuleType) -> None:
    no_totals = DUMP.replace("totals: 1000\n", "")
    assert cg.parse_callgrind_total(no_totals) == 0  # the (here zero) summary line wins over the body
    body_only = no_totals.replace("summary: 0\n", "")
    # self costs 700 + 50 + 250; the inclusive 1000 after calls= is not counted again
    assert cg.parse_callgrind_total(body_only) == 1000
    # two position columns ("instr line"): the cost starts at the third token
    two_pos = body_only.replace("positions: line", "positions: instr line")
    two_pos = (
        two_pos.replace("0 700", "0x10 3 700").replace("+2 50", "+4 * 50").replace("0 250", "0x20 9 250")
    )
    two_pos = two_pos.replace("0 1000", "0x14 4 1000")
    assert cg.parse_callgrind_total(two_pos) == 1000


def test_bad_input_is_reported(cg: ModuleType) -> None:
    with pytest.raises(cg.CallgrindFormatError, match="not a callgrind output"):
        cg.parse_callgrind_total("hello\nworld\n")
    with pytest.raises(cg.CallgrindFormatError, match="'Dr' not recorded"):
        cg.parse_callgrind_total(DUMP, "Dr")


def test_dump_files_of_a_run_are_found_and_summed(cg: ModuleType, tmp_path: Path) -> None:
    # granian-like run: supervisor (idle) + worker with one explicit dump, plus the exit dumps
    (tmp_path / "callgrind.out.10").write_text(DUMP.replace("totals: 1000", "totals: 0"))
    (tmp_path / "callgrind.out.10.1").write_text(DUMP.replace("totals: 1000", "totals: 5"))
    (tmp_path / "callgrind.out.9.1").write_text(DUMP.replace("totals: 1000", "totals: 123456"))
    (tmp_path / "callgrind.out.9").write_text(DUMP.replace("totals: 1000", "totals: 44"))
    (tmp_path / "callgrind.out.11").write_text("")  # a process killed before it could write
    (tmp_path / "callgrind.out.9.1-02").write_text(DUMP)  # --separate-threads=yes naming
    (tmp_path / "server.log").write_text("not a dump")
    (tmp_path / "callgrind.out.9.txt").write_text("annotated, not a dump")
    files = cg.dump_files(tmp_path)
    assert [f.name for f in files] == [
        "callgrind.out.9", "callgrind.out.9.1", "callgrind.out.9.1-02", "callgrind.out.10",
        "callgrind.out.10.1", "callgrind.out.11",
    ]  # fmt: skip
    assert cg.sum_dump_files(files) == 44 + 123456 + 1000 + 0 + 5 + 0


def test_ratio_and_repeatability_maths(cg: ModuleType) -> None:
    assert cg.per_request(66_000_000, 2000) == 33_000
    with pytest.raises(ValueError):
        cg.per_request(1, 0)
    assert cg.spread([100.0]) == 0.0
    assert cg.spread([99.0, 101.0]) == pytest.approx(0.02)
    run = cg.RunResult
    runs = [
        run("fasterapi-asgi", 1, 2000, 66_000_000),
        run("uvicorn", 1, 2000, 228_000_000),
        run("granian", 1, 1000, 74_000_000),
        run("fasterapi-asgi", 2, 2000, 66_400_000),
        run("uvicorn", 2, 2000, 227_000_000),
        run("granian", 2, 1000, 80_000_000),
    ]
    summary = cg.summarize(runs, reference="uvicorn", tolerance=0.02)
    rows = {r["server"]: r for r in summary["servers"]}
    assert [r["server"] for r in summary["servers"]] == ["fasterapi-asgi", "uvicorn", "granian"]
    assert rows["uvicorn"]["median"] == 113_750 and rows["uvicorn"]["ratio"] == 1.0
    assert rows["fasterapi-asgi"]["per_request"] == [33_000, 33_200]
    assert rows["fasterapi-asgi"]["ratio"] == pytest.approx(33_100 / 113_750)
    assert rows["fasterapi-asgi"]["repeatable"] and rows["uvicorn"]["repeatable"]
    assert rows["granian"]["median"] == 77_000 and not rows["granian"]["repeatable"]  # 6,000 / 77,000 > 2%
    no_ref = cg.summarize(runs[:1], reference="uvicorn")
    assert no_ref["servers"][0]["ratio"] is None

    meta = {
        "date": "2026-01-01 00:00 UTC", "command": "python benchmarks/callgrind.py", "app": "raw_asgi:app",
        "path": "/plaintext", "requests": 2000, "warmup": 200, "valgrind": "3.19.0",
        "versions": {"uvicorn": "0.54.0"}, "failed": ["hypercorn: it broke"],
    }  # fmt: skip
    md = cg.markdown(summary, meta)
    assert "| server | instructions/request | runs | spread | ratio to uvicorn |" in md
    assert "| fasterapi-asgi | 33,100 | 33,000, 33,200 | 0.60% | 0.291x |" in md
    assert "| granian | 77,000 | 74,000, 80,000 | 7.79% (over tolerance) | 0.677x |" in md
    assert "Failed: hypercorn: it broke" in md and "Target: <= 0.35x uvicorn" in md


def _serve(listener: socket.socket, responses: list[bytes], closed_after: int | None) -> None:
    """Answer each request on one connection with the next response (sent in two pieces)."""
    conn, _ = listener.accept()
    with conn:
        buf = b""
        for i, response in enumerate(responses):
            if closed_after is not None and i == closed_after:
                return
            while b"\r\n\r\n" not in buf:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                buf += chunk
            _, _, buf = buf.partition(b"\r\n\r\n")
            half = len(response) // 2
            conn.sendall(response[:half])
            conn.sendall(response[half:])


def _client_against(cg: ModuleType, responses: list[bytes], closed_after: int | None = None):  # type: ignore[no-untyped-def]
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    thread = threading.Thread(target=_serve, args=(listener, responses, closed_after), daemon=True)
    thread.start()
    client = cg.KeepAliveClient(listener.getsockname()[1], timeout_s=10)
    return client, thread, listener


OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!"


def test_client_reads_every_response_on_one_connection(cg: ModuleType) -> None:
    client, thread, listener = _client_against(cg, [OK] * 5)
    try:
        client.many(5)
        assert client.sent == 5 and client.buf == b""
    finally:
        client.close()
        thread.join(10)
        listener.close()


@pytest.mark.parametrize(
    ("responses", "closed_after", "message"),
    [
        (
            [OK, b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"],
            None,
            "unexpected response",
        ),
        ([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"], None, "no content-length"),
        ([OK, OK, OK], 2, "closed the connection after 3 requests"),
    ],
)
def test_client_fails_loudly(
    cg: ModuleType, responses: list[bytes], closed_after: int | None, message: str
) -> None:
    client, thread, listener = _client_against(cg, responses, closed_after)
    try:
        with pytest.raises(ConnectionError, match=message):
            client.many(len(responses))
    finally:
        client.close()
        thread.join(10)
        listener.close()


def test_usage_errors_exit_2(cg: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert cg.main(["--servers", "nginx"]) == 2
    assert cg.main(["--servers", "uvicorn", "--requests", "0"]) == 2
    assert "bad arguments" in capsys.readouterr().err


def test_valgrind_prefix_wraps_the_server_command(cg: ModuleType, tmp_path: Path) -> None:
    base = cg.servers.Pinning(0, 1)
    prefix = cg._ValgrindPrefix(base, cg.valgrind_argv(tmp_path)).server_prefix()
    assert prefix[:3] == ["taskset", "-c", "0"]
    assert prefix[3:7] == ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes"]
    assert prefix[7] == f"--callgrind-out-file={tmp_path}/callgrind.out.%p"
    assert cg.server_extra_args("uvicorn", tmp_path) == []
    hyper = cg.server_extra_args("hypercorn", tmp_path)
    assert hyper[0] == "--config" and "keep_alive_max_requests" in Path(hyper[1]).read_text()


# ---------------------------------------------------------------------------------- run_suite sections


def test_suite_micro_sections_markdown_and_docs_block(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    suite_mod = _load(monkeypatch, "run_suite")
    suite = {
        "date": "2026-01-01 00:00 UTC",
        "command": "python benchmarks/run_suite.py --scenarios none --micro --callgrind",
        "settings": {"smoke": False},
        "micro": {
            "status": "ok",
            "command": "cmake ... && build/bench/benchmarks/micro/fa_bench_parse_route",
            "result": {"request_bytes": 98, "routes": 20, "iterations": 1000000, "runs": 7, "cases": {
                "parse": {"median_ns": 200.0, "min_ns": 190.0, "max_ns": 250.5},
                "parse+route": {"median_ns": 400.0, "min_ns": 390.0, "max_ns": 420.0}}},
        },
        "callgrind": {"status": "failed", "why": "granian: broke", "markdown": "| server | x |\n"},
    }  # fmt: skip
    md = suite_mod.micro_markdown(suite)
    assert "98-byte GET" in md and "20 routes" in md and "median of 7 runs of 1,000,000 requests" in md
    assert "| parse only, one request per parser call | 200.0 | 190.0 | 250.5 | 5,000,000 |" in md
    assert "| parse + route (20 routes, parameterised hit), one request per call | 400.0 |" in md
    assert "### Instructions per raw ASGI request (callgrind)" in md and "| server | x |" in md
    assert "Failed: granian: broke" in md
    assert md.startswith(
        "Suite command: `python benchmarks/run_suite.py --scenarios none --micro --callgrind`."
    )
    assert suite_mod.micro_markdown({"date": "d", "settings": {"smoke": True}}) == ""

    text = "# B\n\n<!-- suite-results:start -->\nold table\n<!-- suite-results:end -->\ntail\n"
    once = suite_mod.replace_block(
        text, suite_mod.MICRO_START_MARK, suite_mod.MICRO_END_MARK, "v1\n", "## M\n\n"
    )
    assert once.endswith("## M\n\n<!-- micro-results:start -->\nv1\n<!-- micro-results:end -->\n")
    assert "old table" in once  # the scenario block is left alone
    twice = suite_mod.replace_block(
        once, suite_mod.MICRO_START_MARK, suite_mod.MICRO_END_MARK, "v2\n", "## M\n\n"
    )
    assert twice.count("## M") == 1 and "v1" not in twice and "v2" in twice
    replaced = suite_mod.replace_block(twice, suite_mod.START_MARK, suite_mod.END_MARK, "new table\n")
    assert "old table" not in replaced and "new table" in replaced and "v2" in replaced and "tail" in replaced

    args = suite_mod.build_parser().parse_args(["--scenarios", "none", "--micro", "--callgrind"])
    assert args.micro and args.callgrind and args.scenarios == "none"
