#!/usr/bin/env python3
"""The test environment's locks: what the test command installs, resolved once and checked in.

    python tests/locks/lock.py update [--no-suites] [--minimal]
                                                      resolve the newest releases (--minimal: keep the pins
                                                      the inputs still allow), run the upstream suites on
                                                      them, write tests/locks/ and say what moved
    python tests/locks/lock.py drift [--out DIR]      resolve the newest releases into DIR (default
                                                      build/locks/newest), say what moved; tests/locks/ stays
    python tests/locks/lock.py check                  the checked-in locks cover pyproject.toml's test extra,
                                                      its build requirements and every upstream suite's deps
    python tests/locks/lock.py oldest-fastapi         write the oldest proven FastAPI's lock (below) from the
                                                      checked-in ones

The files (pip requirements files, every package pinned with `==` and its sha256 hashes, for
`pip install --require-hashes -r FILE`, which refuses anything the file does not name):

- tests/locks/test.txt: pyproject.toml's `test` extra with the build requirements (the package is installed
  with --no-build-isolation on top, so its build tools are locked too) and the tools the test command adds
  (cmake, ninja). One universal resolution for every supported Python (markers choose per interpreter).
- tests/locks/upstream/<suite>-<version>.txt: one per Starlette/FastAPI release the test lock pins: the
  suite's own test dependencies (tests/upstream/run_upstream.py's SUITES), cut from the same resolution as
  test.txt, so installing it moves nothing test.txt installed. For MIN_UPSTREAM_PYTHON and newer.
- tests/locks/upstream/fastapi-<oldest>.txt: the oldest FastAPI release route plans are proven on
  (``PROVEN_FASTAPI`` in fasterapi_asgi/_plan_proof.py), with its suite's test dependencies, everything else
  held to the two locks above; the test command installs it into a venv of its own over the test
  environment and runs that release's suite with plans forced on.

Resolution is uv's (`uv pip compile --universal --generate-hashes`), from PyPI only; uv is in the test lock.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
sys.path.insert(0, str(REPO_ROOT / "tests" / "upstream"))

import run_upstream  # noqa: E402  (tests/upstream/run_upstream.py: the suites and their deps)
from run_upstream import canonical  # noqa: E402

TEST_LOCK = "test.txt"
UPSTREAM_DIR = "upstream"
# The oldest Python the project supports: the test lock resolves for it and everything newer.
MIN_PYTHON = "3.10"
# The upstream suites run on the test command's main interpreter (3.11: the CI machine's default python3).
MIN_UPSTREAM_PYTHON = "3.11"
# Installed beside the test extra by the test command (the C++ tests' build).
TEST_TOOLS = ("cmake", "ninja")
COMPILE_COMMAND = "python tests/locks/lock.py update"
OLDEST_COMMAND = "python tests/locks/lock.py oldest-fastapi"


@dataclass(frozen=True)
class Pin:
    name: str  # canonical
    version: str
    marker: str  # "" when unconditional


def read_pins(path: Path) -> list[Pin]:
    """The `name==version ; marker` lines of a lock (hashes and comments skipped)."""
    pins = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = run_upstream.LOCK_PIN.match(line)
        if m:
            pins.append(Pin(canonical(m.group(1)), m.group(2), (m.group(3) or "").strip()))
    return pins


def pinned_versions(path: Path, python: str) -> dict[str, str]:
    """name -> version of the pins whose marker holds on Linux CPython `python` (major.minor)."""
    return {p.name: p.version for p in read_pins(path) if marker_holds(p.marker, python)}


def marker_holds(marker: str, python: str) -> bool:
    if not marker:
        return True
    from packaging.markers import Marker

    full = f"{python}.99"  # the newest patch release of that minor version
    env = {
        "python_version": python,
        "python_full_version": full,
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": "x86_64",
        "os_name": "posix",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "extra": "",
    }
    return Marker(marker).evaluate(env)


def project_inputs() -> list[str]:
    """What the test lock resolves: the test extra, the build requirements and the test command's tools."""
    import tomllib  # 3.11+: the locks are made on the test command's main interpreter

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return [
        *project["project"]["optional-dependencies"]["test"],
        *project["build-system"]["requires"],
        *project["project"]["dependencies"],
        *TEST_TOOLS,
    ]


def uv_compile(
    requirements: list[str], out: Path, python: str, constraints: Path | None = None, prefer: str = ""
) -> None:
    """uv pip compile into `out`. `prefer`: pins (requirements lines) that uv keeps where the inputs allow (it
    reads an existing output file as its preferences); empty: the newest releases."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if prefer:
        out.write_text(prefer, encoding="utf-8")
    with tempfile.TemporaryDirectory() as tmp:
        req = Path(tmp) / "requirements.in"
        req.write_text("\n".join(requirements) + "\n", encoding="utf-8")
        cmd = [
            sys.executable,
            "-m",
            "uv",
            "pip",
            "compile",
            str(req),
            "--universal",
            "--python-version",
            python,
        ]
        cmd += ["--generate-hashes", "--custom-compile-command", COMPILE_COMMAND, "-o", str(out), "--quiet"]
        cmd += ["--no-annotate"]
        if constraints is not None:
            plain = Path(tmp) / "constraints.txt"  # pins only: uv takes no hashes in constraints
            plain.write_text(
                "".join(
                    f"{p.name}=={p.version}{f' ; {p.marker}' if p.marker else ''}\n"
                    for p in read_pins(constraints)
                ),
                encoding="utf-8",
            )
            cmd += ["-c", str(plain)]
        env = dict(os.environ, UV_NO_CONFIG="1")
        proc = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"uv pip compile failed for {out.name}:\n{proc.stderr.strip()}")
    # uv writes the temporary input's path into the header; name what it was instead.
    text = out.read_text(encoding="utf-8").replace(str(req), "(generated)")
    out.write_text(text, encoding="utf-8")


def suite_lock_name(suite: str, version: str) -> str:
    return f"{suite}-{version}.txt"


def pin_lines(paths: list[Path]) -> str:
    """The `name==version ; marker` lines of locks, each once."""
    lines = {
        f"{p.name}=={p.version}{f' ; {p.marker}' if p.marker else ''}"
        for path in paths
        for p in read_pins(path)
    }
    return "".join(f"{line}\n" for line in sorted(lines))


def resolve(out: Path, keep: Path | None = None) -> list[Path]:
    """Resolve into out/: the test lock, then one upstream lock per suite it pins. The newest releases, or
    with `keep` (a lock directory) its pins wherever the inputs still allow them: only what changed inputs
    need moves.

    Both are cut from one joint resolution (the test extra and every suite's deps together, the suites' for
    MIN_UPSTREAM_PYTHON and newer), whose pins constrain each: so the upstream lock installed over the test
    lock moves nothing, and neither can pin what the other's requirements refuse."""
    if out.exists():
        shutil.rmtree(out)
    kept = sorted(keep.rglob("*.txt")) if keep is not None else []
    joint = out.parent / f".{out.name}-joint.txt"
    suite_deps = [d.requirement for s in run_upstream.SUITES.values() for d in s.deps]
    only_upstream = f"python_version >= '{MIN_UPSTREAM_PYTHON}'"
    joint_inputs = [*project_inputs(), *(f"{r} ; {only_upstream}" for r in suite_deps)]
    uv_compile(joint_inputs, joint, MIN_PYTHON, prefer=pin_lines(kept) if kept else "")
    test_lock = out / TEST_LOCK
    uv_compile(project_inputs(), test_lock, MIN_PYTHON, constraints=joint)
    written = [test_lock]
    pins = pinned_versions(joint, MIN_UPSTREAM_PYTHON)
    for suite in run_upstream.SUITES.values():
        version = pins.get(canonical(suite.name))
        if version is None:
            raise SystemExit(f"{TEST_LOCK} pins no {suite.name} for Python {MIN_UPSTREAM_PYTHON}")
        lock = out / UPSTREAM_DIR / suite_lock_name(suite.name, version)
        requirements = [f"{suite.name}=={version}", *(d.requirement for d in suite.deps)]
        uv_compile(requirements, lock, MIN_UPSTREAM_PYTHON, constraints=joint)
        written.append(lock)
    joint.unlink()
    oldest = resolve_oldest_fastapi(out, out)
    if oldest is not None:
        written.append(oldest)
    return written


def oldest_proven_fastapi() -> str:
    """The oldest FastAPI release route plans are proven on: the first of ``PROVEN_FASTAPI`` in
    fasterapi_asgi/_plan_proof.py (read from the source: the package needs no build for this)."""
    text = (REPO_ROOT / "fasterapi_asgi" / "_plan_proof.py").read_text(encoding="utf-8")
    found = re.search(r'^PROVEN_FASTAPI = \("([^"]+)"', text, re.MULTILINE)
    if found is None:
        raise SystemExit("fasterapi_asgi/_plan_proof.py: PROVEN_FASTAPI not found")
    return found.group(1)


def locked_fastapi(lock_dir: Path) -> str:
    """The FastAPI release lock_dir's test lock pins (the newest proven one)."""
    return pinned_versions(lock_dir / TEST_LOCK, MIN_UPSTREAM_PYTHON)["fastapi"]


def resolve_oldest_fastapi(lock_dir: Path, out: Path) -> Path | None:
    """The lock of the oldest proven FastAPI's run (tests/run_all.sh): ``fastapi==<oldest>`` and its suite's
    test dependencies, every other package constrained to the pins of lock_dir's test lock and newest FastAPI
    suite lock, so that installing it over them moves only FastAPI. None when the oldest is the newest."""
    newest = locked_fastapi(lock_dir)
    oldest = oldest_proven_fastapi()
    if oldest == newest:
        return None
    sources = [lock_dir / TEST_LOCK, lock_dir / UPSTREAM_DIR / suite_lock_name("fastapi", newest)]
    lock = out / UPSTREAM_DIR / suite_lock_name("fastapi", oldest)
    with tempfile.TemporaryDirectory() as tmp:
        constraints = Path(tmp) / "constraints.txt"
        lines = pin_lines(sources).splitlines(keepends=True)
        constraints.write_text(
            "".join(line for line in lines if canonical(line.split("==")[0]) != "fastapi"), encoding="utf-8"
        )
        requirements = [f"fastapi=={oldest}", *(d.requirement for d in run_upstream.FASTAPI.deps)]
        uv_compile(requirements, lock, MIN_UPSTREAM_PYTHON, constraints=constraints)
    return lock


def moved(old_dir: Path, new_dir: Path) -> list[str]:
    """One line per package whose pin changed between two lock directories (any Python's pins)."""

    def versions(directory: Path) -> dict[str, dict[str, set[str]]]:
        result: dict[str, dict[str, set[str]]] = {}
        for lock in sorted(directory.rglob("*.txt")):
            label = lock.relative_to(directory).as_posix()
            if label.startswith(UPSTREAM_DIR + "/"):
                label = (
                    UPSTREAM_DIR + "/" + re.sub(r"-[^-]+\.txt$", "", lock.name)
                )  # the suite, not its version
            for pin in read_pins(lock):
                result.setdefault(label, {}).setdefault(pin.name, set()).add(pin.version)
        return result

    old, new = versions(old_dir), versions(new_dir)
    lines = []
    for label in sorted(old.keys() | new.keys()):
        a, b = old.get(label, {}), new.get(label, {})
        for name in sorted(a.keys() | b.keys()):
            va, vb = ", ".join(sorted(a.get(name, ()))), ", ".join(sorted(b.get(name, ())))
            if va != vb:
                lines.append(f"  {label}: {name} {va or '(new)'} -> {vb or '(removed)'}")
    return lines


def check(lock_dir: Path) -> list[str]:
    """Problems with the checked-in locks: an input they do not pin, or a suite version without its lock."""
    problems = []
    test_lock = lock_dir / TEST_LOCK
    if not test_lock.is_file():
        return [f"{test_lock} is missing"]
    names = {p.name for p in read_pins(test_lock)}
    for requirement in project_inputs():
        name = canonical(run_upstream.req_name(requirement))
        if name not in names:
            problems.append(f"{TEST_LOCK} does not pin {name} ({requirement}): run {COMPILE_COMMAND}")
    for python in ("3.10", "3.11", "3.12", "3.13", "3.14"):
        if python < MIN_UPSTREAM_PYTHON:
            continue
        pins = pinned_versions(test_lock, python)
        for suite in run_upstream.SUITES.values():
            version = pins.get(canonical(suite.name))
            lock = lock_dir / UPSTREAM_DIR / suite_lock_name(suite.name, str(version))
            if not lock.is_file():
                problems.append(f"Python {python}: {suite.name} {version} has no lock {lock.name}")
                continue
            upstream = {p.name for p in read_pins(lock)}
            for dep in suite.deps:
                name = canonical(run_upstream.req_name(dep.requirement))
                if name not in upstream:
                    problems.append(f"{lock.name} does not pin {name} ({dep.requirement})")
    oldest = lock_dir / UPSTREAM_DIR / suite_lock_name("fastapi", oldest_proven_fastapi())
    if not oldest.is_file():
        problems.append(f"the oldest proven FastAPI has no lock {oldest.name}: run {OLDEST_COMMAND}")
    return problems


def run_suites(lock_dir: Path, work: Path) -> int:
    """The upstream suites on the locks in lock_dir, in a fresh venv (the package built into it)."""
    venv = work / "venv"
    if venv.exists():
        shutil.rmtree(venv)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--require-hashes", "-r", str(lock_dir / TEST_LOCK)], check=True)
    subprocess.run([*pip, "--no-deps", "--no-build-isolation", "-e", str(REPO_ROOT)], check=True)
    cmd = [py, str(REPO_ROOT / "tests" / "upstream" / "run_upstream.py"), "all"]
    cmd += ["--plugin", "tests.upstream.fa_force_route_index", "--lock-dir", str(lock_dir)]
    cmd += ["--out", str(work / "upstream"), "--jobs", "2"]
    return subprocess.run(cmd, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("update", help="resolve, run the upstream suites, write tests/locks/")
    up.add_argument("--no-suites", action="store_true", help="write the locks without running the suites")
    up.add_argument(
        "--minimal",
        action="store_true",
        help="keep the checked-in pins wherever the inputs allow (after an input changed); default: newest",
    )
    dr = sub.add_parser("drift", help="resolve the newest releases into --out and say what moved")
    dr.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "locks" / "newest")
    sub.add_parser("check", help="the checked-in locks cover every input")
    sub.add_parser(
        "oldest-fastapi",
        help="write the oldest proven FastAPI's lock from the checked-in ones (after PROVEN_FASTAPI changed)",
    )
    args = p.parse_args(argv)

    if args.command == "oldest-fastapi":
        lock = resolve_oldest_fastapi(HERE, HERE)
        same = "the oldest proven FastAPI is the test lock's"
        print(f"wrote {lock.relative_to(REPO_ROOT)}" if lock else same)
        return 0

    if args.command == "check":
        problems = check(HERE)
        for line in problems:
            print(line)
        print("locks: ok" if not problems else f"locks: {len(problems)} problems")
        return 1 if problems else 0

    out = args.out.resolve() if args.command == "drift" else REPO_ROOT / "build" / "locks" / "update"
    keep = HERE if args.command == "update" and args.minimal else None
    written = resolve(out / "locks" if args.command == "update" else out, keep)
    new_dir = written[0].parent
    changes = moved(HERE, new_dir)
    print(f"what moved since the checked-in locks ({len(changes)}):" if changes else "nothing moved")
    print("\n".join(changes))
    if args.command == "drift":
        print(f"newest releases resolved into {new_dir}")
        return 0
    if not args.no_suites:
        rc = run_suites(new_dir, out)
        if rc != 0:
            print(f"the upstream suites failed on the new locks (exit {rc}): tests/locks/ left as it was")
            return 1
    for path in (HERE / TEST_LOCK, *(HERE / UPSTREAM_DIR).glob("*.txt")):
        path.unlink(missing_ok=True)
    for lock in written:
        target = HERE / lock.relative_to(new_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(lock, target)
    print(f"wrote {len(written)} locks to {HERE.relative_to(REPO_ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
