"""The locked test environment (tests/locks/) and the upstream runner's use of it.

- The checked-in locks cover every input: pyproject.toml's test extra and build requirements, and each
  upstream suite's dependencies for the Starlette/FastAPI release the test lock pins.
- The runner installs a suite's lock with --require-hashes: a package the lock does not name, or a file whose
  hash it does not give, is refused and nothing is installed (checked with wheels made here, no index).
- A failed upstream test is re-run without the plugins and with them, and told apart: the suite's own failure,
  ours, or flaky.
"""

from __future__ import annotations

import base64
import hashlib
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "upstream"))
sys.path.insert(0, str(ROOT / "tests" / "locks"))

import run_upstream  # noqa: E402

if sys.version_info < (3, 11):  # lock.py reads pyproject.toml with tomllib
    pytest.skip("the locks are made and checked on Python 3.11+", allow_module_level=True)

import lock  # noqa: E402


def test_checked_in_locks_cover_every_input() -> None:
    assert lock.check(lock.HERE) == []


def test_every_lock_pins_each_package_with_hashes() -> None:
    locks = [lock.HERE / lock.TEST_LOCK, *sorted((lock.HERE / lock.UPSTREAM_DIR).glob("*.txt"))]
    newest = lock.locked_fastapi(lock.HERE)
    oldest = 0 if lock.oldest_proven_fastapi() == newest else 1  # the oldest proven FastAPI's own lock
    assert len(locks) == 1 + len(run_upstream.SUITES) + oldest
    for path in locks:
        text = path.read_text(encoding="utf-8")
        pins = lock.read_pins(path)
        assert len(pins) > 10, path
        for pin in pins:
            assert run_upstream.lock_hashes(path, pin.name), f"{path.name}: {pin.name} has no hash"
        # Nothing open: every requirement line is `name==version`.
        for line in text.splitlines():
            if line and not line.startswith((" ", "#")):
                assert "==" in line, f"{path.name}: {line}"


def test_the_fastapi_locks_keep_sentry_sdk_2() -> None:
    """sentry-sdk 3 breaks two of FastAPI's telemetry tests (with or without this server)."""
    fastapi_locks = sorted((lock.HERE / lock.UPSTREAM_DIR).glob("fastapi-*.txt"))
    assert fastapi_locks
    for fastapi_lock in fastapi_locks:
        versions = {p.name: p.version for p in lock.read_pins(fastapi_lock)}
        assert versions["sentry-sdk"].split(".")[0] == "2", fastapi_lock.name


def test_the_oldest_fastapi_lock_moves_only_fastapi() -> None:
    """Installed over the test environment, the oldest proven FastAPI's lock changes FastAPI and nothing the
    newest FastAPI's suite lock pins otherwise."""
    newest = lock.locked_fastapi(lock.HERE)
    oldest = lock.oldest_proven_fastapi()
    if oldest == newest:
        pytest.skip("the oldest proven FastAPI is the test lock's")
    upstream = lock.HERE / lock.UPSTREAM_DIR
    python = lock.MIN_UPSTREAM_PYTHON
    old = lock.pinned_versions(upstream / lock.suite_lock_name("fastapi", oldest), python)
    new = lock.pinned_versions(upstream / lock.suite_lock_name("fastapi", newest), python)
    assert old.pop("fastapi") == oldest and new.pop("fastapi") == newest
    test = lock.pinned_versions(lock.HERE / lock.TEST_LOCK, python)
    assert {name: version for name, version in old.items() if new.get(name, test.get(name)) != version} == {}


def test_moved_names_each_change(tmp_path: Path) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    for d, a, b in ((old, "1.0", "2.0"), (new, "1.1", "2.0")):
        (d / "upstream").mkdir(parents=True)
        (d / "test.txt").write_text(f"alpha=={a} \\\n    --hash=sha256:{'0' * 64}\nbeta=={b}\n")
        (d / "upstream" / f"fastapi-{a}.txt").write_text(f"fastapi=={a}\n")
    assert lock.moved(old, new) == [
        "  test.txt: alpha 1.0 -> 1.1",
        "  upstream/fastapi: fastapi 1.0 -> 1.1",
    ]


# --- the runner installs only what a lock names -----------------------------------------------------------


def make_wheel(directory: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> Path:
    """A pure-Python wheel of one module, made by hand (no build tool, no index)."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": "Metadata-Version: 2.1\n"
        f"Name: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test_locks\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    wheel = directory / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=120)
    return where / "bin" / "python"


def installed(python: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return subprocess.run([str(python), "-c", code], check=False).returncode == 0


@pytest.fixture
def wheels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    found = tmp_path / "wheels"
    found.mkdir()
    # Only this directory: no index (neither PyPI nor the machine's pip.conf ones).
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(found))
    return {
        "top": make_wheel(found, "fa_lock_top", "1.0", requires=("fa_lock_dep==2.0",)),
        "dep": make_wheel(found, "fa_lock_dep", "2.0"),
    }


def write_lock(path: Path, entries: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join(f"{n}=={v} \\\n    --hash=sha256:{h}\n" for n, v, h in entries), encoding="utf-8")
    return path


def test_runner_refuses_a_dependency_the_lock_does_not_name(
    venv: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    partial = write_lock(tmp_path / "partial.txt", [("fa_lock_top", "1.0", sha(wheels["top"]))])
    with run_upstream.Log(tmp_path / "log.txt") as log, pytest.raises(run_upstream.SetupError) as refused:
        run_upstream.install_lock(partial, log, python=str(venv))
    assert "fa-lock-dep" in str(refused.value).lower().replace("_", "-")
    assert not installed(venv, "fa_lock_top") and not installed(venv, "fa_lock_dep")


def test_runner_refuses_a_file_whose_hash_the_lock_does_not_give(
    venv: Path, wheels: dict[str, Path], tmp_path: Path
) -> None:
    wrong = write_lock(
        tmp_path / "wrong.txt",
        [("fa_lock_top", "1.0", sha(wheels["top"])), ("fa_lock_dep", "2.0", "0" * 64)],
    )
    with (
        run_upstream.Log(tmp_path / "log.txt") as log,
        pytest.raises(run_upstream.SetupError, match="(?i)hash"),
    ):
        run_upstream.install_lock(wrong, log, python=str(venv))
    assert not installed(venv, "fa_lock_top") and not installed(venv, "fa_lock_dep")


def test_runner_installs_a_complete_lock(venv: Path, wheels: dict[str, Path], tmp_path: Path) -> None:
    whole = write_lock(
        tmp_path / "whole.txt",
        [("fa_lock_top", "1.0", sha(wheels["top"])), ("fa_lock_dep", "2.0", sha(wheels["dep"]))],
    )
    with run_upstream.Log(tmp_path / "log.txt") as log:
        run_upstream.install_lock(whole, log, python=str(venv))
    assert installed(venv, "fa_lock_top") and installed(venv, "fa_lock_dep")


# --- failures told apart ---------------------------------------------------------------------------------


def test_failures_are_told_apart_by_their_reruns(tmp_path: Path) -> None:
    """A suite with a test broken upstream, one the plugin breaks, and one that fails only the first time."""
    root = tmp_path / "suite"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_things.py").write_text(
        textwrap.dedent(
            """
            import os
            from pathlib import Path

            def test_fine():
                pass

            def test_broken_upstream():
                assert False, "the suite's own bug"

            def test_broken_by_plugin():
                assert not os.environ.get("FA_TEST_PLUGIN_LOADED")

            def test_flaky():
                marker = Path(__file__).with_name("ran-once")
                if not marker.exists():
                    marker.write_text("")
                    assert False, "first run only"
            """
        )
    )
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "fa_test_plugin.py").write_text(
        "import os\n\ndef pytest_configure(config):\n    os.environ['FA_TEST_PLUGIN_LOADED'] = '1'\n"
    )
    suite = run_upstream.Suite(name="demo", members=(), deps=())
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"]
    plugins = ["-p", "fa_test_plugin"]
    env = run_upstream.suite_env(root, suite, shims)
    rc, lines = run_upstream.run_pytest([*base, *plugins, "tests"], root, env, tmp_path / "first.log")
    assert rc == 1
    failed = run_upstream.failed_tests(lines, suite)
    assert failed == [
        "tests/test_things.py::test_broken_upstream",
        "tests/test_things.py::test_broken_by_plugin",
        "tests/test_things.py::test_flaky",
    ]
    with run_upstream.Log(tmp_path / "log.txt") as log:
        kinds = run_upstream.classify_failures(failed, base, plugins, root, suite, shims, tmp_path, log)
    assert kinds == {
        "upstream's own": ["tests/test_things.py::test_broken_upstream"],
        "ours": ["tests/test_things.py::test_broken_by_plugin"],
        "flaky": ["tests/test_things.py::test_flaky"],
    }


# --- the test command ------------------------------------------------------------------------------------


def test_the_test_command_installs_only_from_the_locks() -> None:
    run_all = (ROOT / "tests" / "run_all.sh").read_text(encoding="utf-8")
    installs = [
        ln.strip() for ln in run_all.splitlines() if "pip_install " in ln and not ln.strip().startswith("#")
    ]
    assert installs, "no pip_install line"
    for line in installs:
        # Either a lock (hash-checked: the test lock, or the oldest proven FastAPI's) or the package itself
        # with no dependencies.
        locked = '--require-hashes -r "$LOCK_DIR/test.txt"' in line or (
            '--require-hashes -r "$LOCK_DIR/upstream/fastapi-$OLDEST_FASTAPI.txt"' in line
        )
        assert locked or "--no-deps" in line, line
    assert '--lock-dir "$LOCK_DIR"' in run_all


@pytest.mark.parametrize(("env", "args"), [({"FA_DEPS": "latest"}, []), ({}, ["--latest"])])
def test_the_test_command_refuses_an_unknown_deps_mode(env: dict[str, str], args: list[str]) -> None:
    result = subprocess.run(
        ["bash", str(ROOT / "tests" / "run_all.sh"), *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "newest" in result.stderr


def test_plugins_can_be_given_to_one_suite() -> None:
    """`--plugin SUITE:MOD` goes to that suite's run only (the route-plan plugin needs FastAPI's suite)."""
    given = ["tests.upstream.fa_force_route_index", "fastapi:tests.upstream.fa_force_route_plans"]
    assert run_upstream.plugins_for("fastapi", given) == [
        "tests.upstream.fa_force_route_index",
        "tests.upstream.fa_force_route_plans",
    ]
    assert run_upstream.plugins_for("starlette", given) == ["tests.upstream.fa_force_route_index"]
