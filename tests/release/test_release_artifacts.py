"""The release path from a clean checkout: sdist, a wheel built from it offline, auditwheel, a fresh venv.

tests/run_all.sh runs this once (not with tests/python), then runs the Python 3.12 tests against the wheel it
installed, so that interpreter's build is this one:

    FA_RELEASE_PYTHON=/path/to/python3.12 python3 -m pytest tests/release

Artifacts are left in build/release/ (or FA_RELEASE_OUT, relative to the checkout; tests/python314.sh runs
this on Python 3.14 into build/release-py314/): dist/ (the sdist), house/ (the build requirements as wheels:
all that the offline build may use), wheel/ (the wheel built from the sdist), repaired/ (auditwheel's
manylinux wheel) and venv/ (a fresh environment with only the repaired wheel and its dependencies), with the
logs beside them.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib

REPO = Path(__file__).resolve().parents[2]
OUT = REPO / os.environ.get("FA_RELEASE_OUT", "build/release")
# scikit-build-core asks for these when it finds no cmake (or ninja) of its own; the offline build gets them
# as wheels, like every other build requirement.
BUILD_TOOLS = ("cmake>=3.18", "ninja")

# One sdist, one compile and one venv for the whole module: minutes, not the suite's per-test two.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Release:
    python: str
    python_tag: str  # the interpreter's wheel tag, cp3NN
    sdist: Path
    wheel: Path
    wheel_log: str
    network_cut: bool
    repaired: Path
    venv_python: Path
    install_log: str
    install_seconds: float


def run(cmd: list[str], log: Path | None = None, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    text = proc.stdout + proc.stderr
    if log is not None:
        log.write_text(text)
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {proc.returncode}:\n{text[-4000:]}")
    return text


def can_cut_network() -> bool:
    """`unshare -n` (root, or unprivileged user namespaces) runs a command in a network namespace alone."""
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


def pinned_sources() -> dict[str, tuple[str, str]]:
    """{package: (version, sha256)} of the C sources' sdists, as CMakeLists.txt pins them (read with the
    vendoring script's own reader, for the packages it vendors)."""
    sys.path.insert(0, str(REPO / "cmake"))
    try:
        import vendor_sources
    finally:
        sys.path.pop(0)
    pins = vendor_sources.read_pins(REPO / "CMakeLists.txt")
    vendored = vendor_sources.VENDORED
    return {name: (pins[f"{prefix}_VERSION"], pins[f"{prefix}_SHA256"]) for name, prefix, _ in vendored}


@pytest.fixture(scope="session")
def release() -> Release:
    python = os.environ.get("FA_RELEASE_PYTHON", sys.executable)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    python_tag = run([python, "-c", "import sys; print('cp%d%d' % sys.version_info[:2])"]).strip()

    # 1. The sdist, as `python -m build --sdist` makes it from the checkout (the backend vendors C sources).
    run([python, "-m", "build", "--sdist", "--outdir", str(OUT / "dist"), str(REPO)], OUT / "sdist.log")
    (sdist,) = (OUT / "dist").glob("fasterapi_asgi-*.tar.gz")

    # 2. The build requirements as wheels, and nothing else: what a packager's offline build farm has.
    build_requires = tomllib.loads((REPO / "pyproject.toml").read_text())["build-system"]["requires"]
    run([python, "-m", "pip", "download", "-q", "-d", str(OUT / "house"), *build_requires, *BUILD_TOOLS])

    # 3. The wheel from the sdist with no index and, where the machine allows, no network at all.
    network_cut = can_cut_network()
    env = dict(
        os.environ, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(OUT / "house"), PIP_DISABLE_PIP_VERSION_CHECK="1"
    )
    cmd = [python, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(OUT / "wheel"), str(sdist)]
    wheel_log = run((["unshare", "-n"] if network_cut else []) + cmd, OUT / "wheel.log", env)
    (wheel,) = (OUT / "wheel").glob("fasterapi_asgi-*.whl")

    # 4. auditwheel: the external libraries grafted in, a manylinux tag.
    run(
        [sys.executable, "-m", "auditwheel", "repair", "-w", str(OUT / "repaired"), str(wheel)],
        OUT / "repair.log",
    )
    (repaired,) = (OUT / "repaired").glob("fasterapi_asgi-*.whl")

    # 5. A fresh venv: the wheel and its dependencies, binaries only, with the compilers made unusable.
    venv = OUT / "venv"
    run([python, "-m", "venv", str(venv)])
    venv_python = venv / "bin" / "python"
    no_compiler = dict(os.environ, CC="/bin/false", CXX="/bin/false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    started = time.monotonic()
    install_log = run(
        [str(venv_python), "-m", "pip", "install", "--only-binary", ":all:", str(repaired)],
        OUT / "install.log",
        no_compiler,
    )
    install_seconds = time.monotonic() - started
    (OUT / "install.seconds").write_text(f"{install_seconds:.1f}\n")
    return Release(
        python,
        python_tag,
        sdist,
        wheel,
        wheel_log,
        network_cut,
        repaired,
        venv_python,
        install_log,
        install_seconds,
    )


def test_sdist_carries_the_pinned_c_sources_and_nothing_of_the_build_tree(release: Release) -> None:
    with tarfile.open(release.sdist) as tf:
        names = tf.getnames()
        top = names[0].split("/")[0]
        pins_file = tf.extractfile(f"{top}/third_party/PINS")
        assert pins_file is not None
        pins_text = pins_file.read().decode()
    files = {name.split("/", 1)[1] for name in names if "/" in name}
    # The vendored copy is exactly the pinned releases, and holds what the build compiles and includes.
    expected = "".join(f"{name} {version} {sha}\n" for name, (version, sha) in pinned_sources().items())
    assert pins_text == expected
    for path in (
        "third_party/libuv/include/uv.h",
        "third_party/libuv/include/uv/unix.h",
        "third_party/libuv/LICENSE",
        "third_party/llhttp/include/llhttp.h",
        "third_party/llhttp/src/llhttp.c",
        "third_party/llhttp/src/api.c",
        "third_party/llhttp/src/http.c",
        "third_party/llhttp/LICENSE-MIT",
        "third_party/nghttp2/lib/nghttp2_session.c",
        "third_party/nghttp2/lib/includes/nghttp2/nghttp2.h",
        "third_party/nghttp2/lib/includes/nghttp2/nghttp2ver.h.in",
        "third_party/nghttp2/COPYING",
        "CMakeLists.txt",
        "cmake/fa_build_backend.py",
        "csrc/include/fasterapi_asgi/native.h",
    ):
        assert path in files, path
    # Only the headers of libuv (its code at run time is uvloop's), and no build products.
    assert not [f for f in files if f.startswith("third_party/libuv/") and f.endswith(".c")]
    assert not [f for f in files if f.split("/")[0] in ("build", "dist", ".git", "wheelhouse")]
    assert not [f for f in files if f.endswith((".so", ".o", ".a", ".pyc"))]


def test_the_repository_itself_holds_no_third_party_source() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert not [
        p for p in tracked.splitlines() if p.startswith("third_party/") or p.endswith(("uv.h", "llhttp.h"))
    ]


def test_sdist_builds_with_the_network_cut_off(release: Release) -> None:
    # The configure step took both C dependencies from the sdist and fetched nothing.
    assert "libuv headers: vendored (uvloop" in release.wheel_log
    assert "llhttp release sources: vendored (httptools" in release.wheel_log
    assert "nghttp2 release sources: vendored (ngh2" in release.wheel_log
    assert "Fetching" not in release.wheel_log and "fetch_sdist" not in release.wheel_log
    # pip had no index (PIP_NO_INDEX): every build requirement came from the local wheelhouse.
    assert f"Looking in links: {OUT / 'house'}" in release.wheel_log
    if not release.network_cut:
        pytest.skip(
            "unshare -n is not permitted here: the build ran with no package index but with a network"
        )


def test_wheel_holds_the_package_the_extension_and_its_header_and_nothing_else(release: Release) -> None:
    for wheel in (release.wheel, release.repaired):
        with zipfile.ZipFile(wheel) as zf:
            names = zf.namelist()
        assert [n for n in names if re.fullmatch(r"fasterapi_asgi/_core\.cpython-\d+[^/]*\.so", n)], (
            wheel.name
        )
        for path in (
            "fasterapi_asgi/include/fasterapi_asgi/native.h",
            "fasterapi_asgi/py.typed",
            "fasterapi_asgi/_core.pyi",
            "fasterapi_asgi/__init__.py",
            "fasterapi_asgi/bench/cli.py",
            "fasterapi_asgi/licenses/llhttp-LICENSE-MIT",  # compiled in, so their licences ship too
            "fasterapi_asgi/licenses/nghttp2-COPYING",
        ):
            assert path in names, (wheel.name, path)
        dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
        assert any(re.fullmatch(rf"{dist_info}/(licenses/)?LICENSE", n) for n in names), names
        roots = {n.split("/")[0] for n in names}
        # The package, its metadata, auditwheel's grafted libraries; no tests, sources or build tree.
        assert roots <= {"fasterapi_asgi", "fasterapi_asgi.libs", dist_info}, roots
        bad = [
            n
            for n in names
            if re.search(
                r"(CMakeFiles|CMakeCache|\.cmake$|\.o$|\.a$|\.pyc$|third_party|/tests?/|\.cc$|\.c$)", n
            )
        ]
        assert not bad, bad


def test_wheel_is_built_for_the_interpreter(release: Release) -> None:
    # A CPython extension wheel of that version's ABI (cp314-cp314 on 3.14, the cibuildwheel list's newest).
    tag = release.python_tag
    for wheel in (release.wheel, release.repaired):
        assert f"-{tag}-{tag}-" in wheel.name, (wheel.name, tag)


def test_repaired_wheel_has_a_manylinux_tag(release: Release) -> None:
    assert re.search(r"-manylinux_2_\d+_x86_64|-manylinux_2_\d+_aarch64", release.repaired.name), (
        release.repaired
    )
    shown = " ".join(run([sys.executable, "-m", "auditwheel", "show", str(release.repaired)]).split())
    tag = re.search(r'consistent with the following platform tag: "([^"]+)"', shown)
    assert tag is not None and f"-{tag.group(1)}." in release.repaired.name, shown
    # The extension links no TLS library (it uses the OpenSSL of Python's ssl module), so no wheel carries
    # one; the only library auditwheel may graft is zlib (newer auditwheel policies count it as the system's).
    assert "libssl" not in shown and "libcrypto" not in shown, shown
    with zipfile.ZipFile(release.repaired) as zf:
        grafted = [n.split("/")[1] for n in zf.namelist() if n.startswith("fasterapi_asgi.libs/")]
    assert all(name.startswith("libz") for name in grafted), grafted


def test_wheel_installs_in_seconds_without_a_compiler(release: Release) -> None:
    # --only-binary :all: with CC/CXX set to /bin/false: nothing was or could have been compiled.
    assert "Building wheel" not in release.install_log and "Building wheels" not in release.install_log
    assert "Successfully installed" in release.install_log and "fasterapi-asgi-" in release.install_log
    # Dependencies come from the package index: the bound leaves room for a slow mirror, not for a compile.
    assert release.install_seconds < 60.0, release.install_seconds


def test_installed_wheel_serves_the_example_app(release: Release) -> None:
    # tests/wheel_smoke.py runs the server from a directory outside the source tree: the installed copy runs.
    out = run([str(release.venv_python), str(REPO / "tests" / "wheel_smoke.py"), str(REPO / "examples")])
    assert "GET / -> 200 Hello, world!" in out
    core = re.search(r"native core: (\S+)", out)
    assert core is not None and core.group(1).startswith(str(release.venv_python.parent.parent)), out


def test_installed_version_names_the_native_parts(release: Release) -> None:
    init = (REPO / "fasterapi_asgi" / "__init__.py").read_text()
    version = re.search(r'^__version__ = "([^"]+)"', init, re.M)
    assert version is not None
    assert f"fasterapi_asgi-{version.group(1)}-" in release.repaired.name
    out = run([str(release.venv_python.parent / "fasterapi-asgi"), "--version"])
    first, second = out.splitlines()[:2]
    assert first.startswith(f"Running fasterapi-asgi {version.group(1)} with CPython ")
    release = r"\d+\.\d+\.\d+"
    expected = rf"libuv 1\.\d+\.\d+ \(uvloop [\d.]+\), llhttp {release}, nghttp2 {release}, OpenSSL .+"
    assert re.fullmatch(expected, second), second
