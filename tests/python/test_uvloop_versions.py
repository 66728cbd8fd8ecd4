"""The supported uvloop range: every release in it that PyPI has, against the installed core.

The core is compiled against one libuv release's headers (the uvloop sdist that CMakeLists.txt pins as
FA_UVLOOP_VERSION) and runs on the libuv inside whichever uvloop is installed. What must match is what the
compiled code bakes in (the sizes of the libuv types it allocates, the offsets of the fields it touches, enum
values, the prototypes of the functions in its table) and the libuv behaviour it relies on. The start-up check
(csrc/core/uv_api.cc) accepts exactly the libuv versions of FA_UV_PROVEN_LIBUV (uv_api.h), then compares
libuv's own uv_loop_size(), uv_handle_size() and uv_req_size() with the compiled sizes. These tests are the
proof behind that list (docs/architecture.md has the table):

- the layout probe (tests/uv_abi/layout_probe.cc) compiled against each release's vendored libuv headers
  prints the same as against the build's headers, and the table's prototypes read the same;
- the server, started with each release's wheel first on PYTHONPATH, binds that release's libuv and serves
  (the default loop on every release, --loop asyncio on one release of each libuv version);
- uvloop 0.17.0, just below the range, is refused at start-up with a one-line message naming the range, and so
  are stand-in libuvs (built here, bound through the real ``_core.libuv_bind``) of other versions or sizes;
- the range in pyproject.toml is FA_UVLOOP_REQUIREMENT, and PyPI has no release in it that the list lacks.

Fetched once into build/uvloop-releases (of each sdist only libuv's include directory; wheels per Python).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from harness import APP_DIR, REPO_ROOT, RawClient, ServerProcess, free_port, request, wait_accepting
from packaging.specifiers import SpecifierSet
from packaging.version import Version

pytestmark = pytest.mark.timeout(120)

UV_API_H = (REPO_ROOT / "csrc/core/uv_api.h").read_text()
PROBE_SRC = REPO_ROOT / "tests/uv_abi/layout_probe.cc"
CACHE = REPO_ROOT / "build/uvloop-releases"
PY_TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def _macro(name: str) -> str:
    start = UV_API_H.index(f"#define {name}")
    return UV_API_H[start : UV_API_H.index("\n\n", start)]


def _match(pattern: str, text: str) -> str:
    found = re.search(pattern, text)
    assert found is not None, pattern
    return found.group(1)


def _proven() -> dict[str, str]:
    """uvloop release -> the libuv version it vendors, from FA_UV_PROVEN_LIBUV (what start-up accepts)."""
    found = re.findall(r'X\((\d+), (\d+), (\d+), "([^"]+)"\)', _macro("FA_UV_PROVEN_LIBUV"))
    return {rel: f"{a}.{b}.{c}" for a, b, c, rels in found for rel in rels.split(", ")}


PROVEN = _proven()
RELEASES = sorted(PROVEN, key=Version)
# The newest release below the range: its libuv 1.43.0 gives the same layout (the probe agrees) but its
# uv_backend_timeout() ignores pending watcher changes, so under --loop asyncio a new connection's first
# request hung. Start-up must refuse it.
BELOW_RANGE, BELOW_RANGE_LIBUV = "0.17.0", "1.43.0"
LIBUV_OF = {**PROVEN, BELOW_RANGE: BELOW_RANGE_LIBUV}
REQUIREMENT = _match(r'#define FA_UVLOOP_REQUIREMENT "([^"]+)"', UV_API_H)
TABLE = re.findall(r"X\((uv_\w+)\)", _macro("FA_UV_FUNCTIONS"))
BUILD_UVLOOP = _match(r'set\(FA_UVLOOP_VERSION "([^"]+)"\)', (REPO_ROOT / "CMakeLists.txt").read_text())
# The handle and request types whose sizes the start-up check asks libuv for, as the probe names them.
HANDLE_TYPES = {
    "UV_HANDLE": "uv_handle_t",
    "UV_STREAM": "uv_stream_t",
    "UV_TCP": "uv_tcp_t",
    "UV_NAMED_PIPE": "uv_pipe_t",
    "UV_TIMER": "uv_timer_t",
    "UV_PREPARE": "uv_prepare_t",
    "UV_POLL": "uv_poll_t",
}
REQ_TYPES = {"UV_REQ": "uv_req_t", "UV_WRITE": "uv_write_t"}
CALLBACKS = ("uv_alloc_cb", "uv_read_cb", "uv_write_cb", "uv_connection_cb", "uv_close_cb", "uv_poll_cb")
CALLBACKS += ("uv_timer_cb", "uv_prepare_cb")


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def _failure(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("WARNING: Location")]
    return " / ".join(lines[-3:])[-400:]


def _publish(tmp: Path, final: Path) -> None:
    """Move a finished download into the cache (another pytest process may have won the race)."""
    try:
        tmp.rename(final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)


def _fetch_headers(release: str, tools: Path) -> Path | str:
    """libuv's include directory from uvloop `release`'s sdist, or why it could not be had."""
    final = CACHE / "libuv-include" / release
    if final.is_dir():
        return final
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        # pip prepares an sdist's metadata before saving it; without build isolation (which would install
        # Cython) that needs setuptools with bdist_wheel (>= 70.1), put first on the path from `tools`.
        env = dict(os.environ, PYTHONPATH=str(tools))
        args = ("download", "-q", "--no-deps", "--no-binary", "uvloop", "--no-build-isolation")
        proc = _pip(*args, f"uvloop=={release}", "-d", tmp, env=env)
        tarball = Path(tmp) / f"uvloop-{release}.tar.gz"
        if not tarball.exists():
            return f"pip download uvloop=={release} (sdist) failed: {_failure(proc)}"
        prefix = f"uvloop-{release}/vendor/libuv/include/"
        with tarfile.open(tarball) as tf:
            members = [m for m in tf.getmembers() if m.name.startswith(prefix)]
            tf.extractall(tmp, members=members, filter="data")
        _publish(Path(tmp) / prefix, final)
    return final


def _fetch_wheel(release: str) -> Path | str:
    """A directory holding uvloop `release` installed from its wheel for this Python, or why there is none."""
    final = CACHE / PY_TAG / release
    if final.is_dir():
        return final
    with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
        target = Path(tmp) / "site"
        args = ("install", "-q", "--no-deps", "--only-binary", ":all:", "--no-compile", "--target")
        proc = _pip(*args, str(target), f"uvloop=={release}")
        if proc.returncode != 0:
            return f"no uvloop=={release} wheel for {PY_TAG} could be installed: {_failure(proc)}"
        _publish(target, final)
    return final


@pytest.fixture(scope="session")
def releases() -> dict[tuple[str, str], Path | str]:
    """("headers"|"wheel", release) -> fetched directory or the reason it is missing; fetched in parallel."""
    (CACHE / PY_TAG).mkdir(parents=True, exist_ok=True)
    (CACHE / "libuv-include").mkdir(parents=True, exist_ok=True)
    all_headers = [BELOW_RANGE, *RELEASES, BUILD_UVLOOP]
    tools = CACHE / "tools"
    if not tools.is_dir() and not all((CACHE / "libuv-include" / r).is_dir() for r in all_headers):
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            proc = _pip("install", "-q", "--no-deps", "--target", f"{tmp}/t", "setuptools>=70.1")
            if proc.returncode == 0:
                _publish(Path(tmp) / "t", tools)
    jobs = {("headers", r): (_fetch_headers, (r, tools)) for r in all_headers}
    jobs.update({("wheel", r): (_fetch_wheel, (r,)) for r in [BELOW_RANGE, *RELEASES]})
    with ThreadPoolExecutor(max_workers=6) as pool:
        futures = {key: pool.submit(fn, *args) for key, (fn, args) in jobs.items()}
        return {key: f.result() for key, f in futures.items()}


def _need(found: Path | str) -> Path:
    if isinstance(found, str):
        pytest.skip(found)
    return found


# --- the range itself ---------------------------------------------------------------------------------------


def test_pyproject_requires_exactly_the_proven_range() -> None:
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    declared = re.findall(r'^\s*"(uvloop[^;"]*)', pyproject, flags=re.M)
    assert declared == [REQUIREMENT], (
        "pyproject.toml's uvloop dependency must be FA_UVLOOP_REQUIREMENT (uv_api.h)"
    )
    spec = SpecifierSet(REQUIREMENT.removeprefix("uvloop"))
    assert all(Version(r) in spec for r in RELEASES)
    assert BUILD_UVLOOP in PROVEN, (
        "the build's headers must be a proven release (uv_api.cc static_asserts it)"
    )


@functools.cache
def _on_pypi() -> list[str]:
    """uvloop's releases on the package index (pre-releases excluded), oldest first."""
    proc = _pip("index", "versions", "uvloop")
    match = re.search(r"Available versions: (.*)", proc.stdout)
    if proc.returncode != 0 or match is None:
        pytest.skip(f"pip index versions uvloop failed: {_failure(proc)}")
    return sorted(match.group(1).split(", "), key=Version)


def test_every_release_in_range_on_pypi_is_proven() -> None:
    spec = SpecifierSet(REQUIREMENT.removeprefix("uvloop"))
    in_range = [v for v in _on_pypi() if Version(v) in spec]
    assert in_range == RELEASES, f"PyPI's uvloop releases in {REQUIREMENT} vs FA_UV_PROVEN_LIBUV"


def test_no_newer_uvloop_waits_for_proof() -> None:
    """Skipped (a note in the summary, not a failure) once PyPI has a uvloop newer than the range."""
    newer = [v for v in _on_pypi() if Version(v) > Version(RELEASES[-1])]
    if newer:
        pytest.skip(
            f"uvloop {', '.join(newer)} on PyPI, outside {REQUIREMENT}: prove it with this file and extend "
            "FA_UV_PROVEN_LIBUV (docs/architecture.md, 'Supported uvloop releases')"
        )


# --- layout: each release's headers against the build's -----------------------------------------------------


def _probe(include: Path, out_dir: Path) -> dict[str, str]:
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) to build the layout probe")
    exe = out_dir / "probe"
    compile_cmd = [cxx, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-I", str(include), str(PROBE_SRC)]
    built = subprocess.run([*compile_cmd, "-o", str(exe)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, f"layout probe does not compile against {include}:\n{built.stderr[-3000:]}"
    lines = subprocess.run([exe], check=True, capture_output=True, text=True).stdout.splitlines()
    return dict(line.rsplit(" ", 1) for line in lines)


def _declarations(include: Path) -> dict[str, str | None]:
    """The prototype of each function in the core's table and of each callback it passes, as in uv.h."""
    text = re.sub(r"/\*.*?\*/", "", (include / "uv.h").read_text(), flags=re.S)
    out: dict[str, str | None] = {}
    for name in TABLE:
        m = re.search(r"UV_EXTERN[^;{}]*?\b" + name + r"\s*\([^;]*\)\s*;", text)
        out[name] = " ".join(m.group(0).split()) if m else None
    for name in CALLBACKS:
        m = re.search(r"typedef[^;]*\(\*" + name + r"\)\s*\([^;]*\)\s*;", text)
        out[name] = " ".join(m.group(0).split()) if m else None
    return out


@pytest.fixture(scope="session")
def build_layout(
    releases: dict[tuple[str, str], Path | str], tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, str], dict[str, str | None]]:
    include = _need(releases[("headers", BUILD_UVLOOP)])
    layout = _probe(include, tmp_path_factory.mktemp("probe-build"))
    from fasterapi_asgi import _core

    v = _core.LIBUV_HEADER_VERSION
    assert layout["version"] == f"{v >> 16}.{(v >> 8) & 0xFF}.{v & 0xFF}", (
        "the core was built with other headers"
    )
    decls = _declarations(include)
    assert None not in decls.values(), decls
    return layout, decls


@pytest.mark.parametrize("release", [BELOW_RANGE, *RELEASES])
def test_layout_probe_agrees(
    release: str,
    releases: dict[tuple[str, str], Path | str],
    build_layout: tuple[dict[str, str], dict[str, str | None]],
    tmp_path: Path,
) -> None:
    include = _need(releases[("headers", release)])
    layout = _probe(include, tmp_path)
    assert layout.pop("version") == LIBUV_OF[release], (
        "FA_UV_PROVEN_LIBUV names another libuv for this release"
    )
    expected = dict(build_layout[0])
    expected.pop("version")
    assert layout == expected
    assert _declarations(include) == build_layout[1]


# --- the server on each release -----------------------------------------------------------------------------


Serve = Callable[..., ServerProcess]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    started: list[ServerProcess] = []

    def start(site: Path, *flags: str, wait: bool = True) -> ServerProcess:
        port = free_port()
        log_path = tmp_path / f"server-{port}.log"
        cmd = [sys.executable, "-m", "fasterapi_asgi", "uvloop_version_app:app", "--app-dir", APP_DIR]
        cmd += ["--host", "127.0.0.1", "--port", str(port), *flags]
        # PYTHONPATH comes before site-packages: this release's uvloop is the one imported.
        env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(site))
        with log_path.open("wb") as log:
            proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
        server = ServerProcess("fasterapi", "uvloop_version_app:app", flags, port, log_path, proc)
        started.append(server)
        if wait:
            wait_accepting(server)
        return server

    yield start
    for server in started:
        server.stop()


# The default loop on every release; --loop asyncio (the core's own uv_loop_t, initialised by the runtime
# libuv and driven from asyncio through uv_backend_fd()/uv_backend_timeout()) on one release of each libuv.
FIRST_OF_EACH_LIBUV = sorted({lib: r for r, lib in reversed(PROVEN.items())}.values(), key=Version)
SERVE_CASES = [(r, "uvloop") for r in RELEASES] + [(r, "asyncio") for r in FIRST_OF_EACH_LIBUV]


@pytest.mark.parametrize(("release", "loop"), SERVE_CASES)
def test_serves_on_release(
    release: str, loop: str, releases: dict[tuple[str, str], Path | str], serve: Serve
) -> None:
    site = _need(releases[("wheel", release)])
    server = serve(site, "--loop", loop)
    with RawClient(server.port) as c:
        c.send(request("POST", "/", body=b"a" * 70_000))
        info = c.read_response().json()
        c.send(request("GET", "/big"))
        big = c.read_response()
    assert info["uvloop"] == release
    assert Path(info["uvloop_file"]).is_relative_to(site)
    expected_loop = "uvloop.Loop" if loop == "uvloop" else "asyncio.unix_events._UnixSelectorEventLoop"
    assert info["loop"] == expected_loop
    libuv = info["libuv"]
    assert f"{libuv >> 16}.{(libuv >> 8) & 0xFF}.{libuv & 0xFF}" == PROVEN[release]
    assert info["received"] == 70_000
    assert (big.status, len(big.body), set(big.body)) == (200, 4 << 20, {ord("x")})
    server.stop()  # SIGTERM: a graceful shutdown, then the signal re-raised (as uvicorn)
    log = server.log()
    assert "Finished server process" in log and "Traceback" not in log, server.log_excerpt()


def test_refuses_the_release_below_the_range(
    releases: dict[tuple[str, str], Path | str], serve: Serve
) -> None:
    site = _need(releases[("wheel", BELOW_RANGE)])
    server = serve(site, wait=False)
    assert server.wait(timeout=30) != 0
    errors = [ln for ln in server.log().splitlines() if "libuv" in ln]
    assert len(errors) == 1, server.log_excerpt()
    assert (
        f"unsupported libuv: the running uvloop uses libuv {BELOW_RANGE_LIBUV}, which is older than any this "
        f"build supports (supported: libuv {', '.join(dict.fromkeys(PROVEN.values()))}, from uvloop "
        f'{", ".join(RELEASES)}); install a supported uvloop: pip install "{REQUIREMENT}"'
    ) in errors[0]


# --- the start-up check refuses -----------------------------------------------------------------------------

FAKE_BIND = """
import ctypes, json, sys
from fasterapi_asgi import _core
results = []
for path in sys.argv[1:]:
    ctypes.CDLL(path)  # uv_api_bind() only reaches a module that is already loaded
    try:
        results.append(["bound", _core.libuv_bind(path)])
    except RuntimeError as exc:
        results.append(["refused", str(exc)])
print(json.dumps(results))
"""


SIZE_QUERIES = ("uv_version", "uv_loop_size", "uv_handle_size", "uv_req_size")


def _fake_libuv(
    out: Path, layout: dict[str, str], version: tuple[int, ...], without: str = "", bigger: str = ""
) -> str:
    """A stand-in libuv exporting the core's table (stubs); uv_version() and the size queries answer as told:
    `bigger` names a type whose size it reports 8 bytes larger, `without` a size query it lacks."""

    def size_of(const: str, type_name: str) -> str:
        n = int(layout[f"sizeof({type_name})"]) + (8 if type_name == bigger else 0)
        return f"  if (t == {layout[const]}) return {n};\n"

    major, minor, patch = version
    src = "#include <stddef.h>\n"
    src += "".join(f"int {f}(void) {{ return 0; }}\n" for f in TABLE if f not in SIZE_QUERIES)
    src += f"unsigned uv_version(void) {{ return {(major << 16) | (minor << 8) | patch}u; }}\n"
    loop_size = int(layout["sizeof(uv_loop_t)"]) + (8 if bigger == "uv_loop_t" else 0)
    src += f"size_t uv_loop_size(void) {{ return {loop_size}; }}\n"
    src += "size_t uv_handle_size(int t) {\n" + "".join(size_of(c, n) for c, n in HANDLE_TYPES.items())
    src += "  return (size_t)-1;\n}\n"
    if without != "uv_req_size":
        src += "size_t uv_req_size(int t) {\n" + "".join(size_of(c, n) for c, n in REQ_TYPES.items())
        src += "  return (size_t)-1;\n}\n"
    name = f"fake-{major}.{minor}.{patch}-{without}-{bigger}"
    (out / f"{name}.c").write_text(src)
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build a stand-in libuv")
    lib = out / f"lib{name}.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(out / f"{name}.c")], check=True, timeout=60)
    return str(lib)


def test_startup_check_refuses_other_versions_and_sizes(
    build_layout: tuple[dict[str, str], dict[str, str | None]], tmp_path: Path
) -> None:
    layout = build_layout[0]
    built = tuple(int(x) for x in layout["version"].split("."))
    assert len(built) == 3
    minors = sorted({int(v.split(".")[1]) for v in PROVEN.values()})
    unproven = [m for m in range(minors[0], minors[-1]) if m not in minors]
    between = (1, unproven[0] if unproven else minors[-1], 99)  # not a proven version either way
    cases = {
        "newer": _fake_libuv(tmp_path, layout, (1, 99, 0)),
        "between": _fake_libuv(tmp_path, layout, between),
        "older": _fake_libuv(tmp_path, layout, (1, minors[0] - 1, 0)),
        "major": _fake_libuv(tmp_path, layout, (2, 0, 0)),
        "tcp size": _fake_libuv(tmp_path, layout, built, bigger="uv_tcp_t"),
        "loop size": _fake_libuv(tmp_path, layout, built, bigger="uv_loop_t"),
        "symbol": _fake_libuv(tmp_path, layout, built, without="uv_req_size"),
        # Last: the same stand-in with nothing wrong is accepted (so the refusals above are for their reason).
        "accepted": _fake_libuv(tmp_path, layout, built),
    }
    proc = subprocess.run(
        [sys.executable, "-c", FAKE_BIND, *cases.values()], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    results = dict(zip(cases, json.loads(proc.stdout), strict=True))
    assert results.pop("accepted") == ["bound", (built[0] << 16) | (built[1] << 8) | built[2]]
    for case, (outcome, message) in results.items():
        assert outcome == "refused", case
        assert "\n" not in message and message.endswith(f'"{REQUIREMENT}"'), message
    proven = ", ".join(dict.fromkeys(PROVEN.values()))
    for case, version, why in [
        ("newer", "1.99.0", "is not one this build was checked against"),
        ("between", ".".join(map(str, between)), "is not one this build was checked against"),
        ("older", f"1.{minors[0] - 1}.0", "is older than any this build supports"),
        ("major", "2.0.0", "is not libuv 1.x"),
    ]:
        message = results[case][1]
        assert message.startswith(f"unsupported libuv: the running uvloop uses libuv {version}, which {why}")
        assert f"(supported: libuv {proven}, from uvloop {', '.join(RELEASES)}); install" in message
        assert f'pip install "{REQUIREMENT}"' in message
    tcp = int(layout["sizeof(uv_tcp_t)"])
    assert (
        f"sizeof(uv_tcp_t) = {tcp + 8} but fasterapi-asgi was compiled with {tcp}" in results["tcp size"][1]
    )
    assert "sizeof(uv_loop_t)" in results["loop size"][1]
    assert results["symbol"][1].startswith("libuv symbol uv_req_size is not exported by ")
