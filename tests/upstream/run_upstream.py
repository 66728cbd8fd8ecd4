#!/usr/bin/env python3
"""Run Starlette's and FastAPI's own test suites against the installed starlette and fastapi.

    python3 tests/upstream/run_upstream.py {starlette,fastapi,all} [--plugin MOD ...] [--out build/upstream]
        [--jobs N] [--lock-dir tests/locks] [--no-install] [-- extra pytest args]

For each suite: read the installed version (importlib.metadata), download exactly that sdist with pip
(cached in OUT/sdists/, its sha256 written to the log), extract only the test tree and what the tests
import (never the package itself, so the installed one is what gets tested) to OUT/<name>-<version>/,
install the suite's test dependencies from its lock, LOCK_DIR/upstream/<name>-<version>.txt (every package
pinned with its hashes, installed with --require-hashes: pip refuses anything the lock does not name; the lock
is cut from the same resolution as the test lock, so the core packages do not move, and that is checked),
ignore the test files whose dependency is not importable here (computed, with the reason printed), deselect
the known failures listed below, and run pytest from the extracted root with the suite's own pytest
configuration. The locks are written by tests/locks/lock.py.

--plugin MOD adds `-p MOD` (`--plugin SUITE:MOD`: to that suite's run only) with the repo root and
tests/upstream/ on PYTHONPATH (so both `--plugin tests.upstream.x` and `--plugin x` find tests/upstream/x.py).
A repo module whose top-level package clashes with one of the sdist's (`tests`: both suites import their own
`tests` package, which shadows this repo's namespace package) is loaded through a shim module written to
OUT/_plugins/; such a plugin must not import other modules of this repo's `tests` tree. `-- -p MOD` naming a
repo module gets the same treatment.

When tests fail under plugins, each failed test is run again twice, without the plugins and with them, and
told apart: "upstream's own" (it fails without the plugins too: the suite or its environment, not this
server), "ours" (it passes without the plugins and fails with them) or "flaky" (it passes both times). Only
"ours" fails the suite; the others are listed.

Exit status: 0 when every suite passed, 1 when a suite failed, 2 when the setup (download, lock, install)
failed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where plugin modules are looked up (and what goes on PYTHONPATH when there are plugins): the repo root
# (`--plugin tests.upstream.x`) and this directory (`--plugin x`).
PLUGIN_PATH = (REPO_ROOT, Path(__file__).resolve().parent)

# Installed packages whose versions installing a suite's lock must not change (checked after the install).
PINNED = (
    "starlette",
    "fastapi",
    "pydantic",
    "pydantic-core",
    "anyio",
    "httpx",
    "uvicorn",
    "uvloop",
    "pytest",
    "typing-extensions",
)


# pytest plugins of this environment that neither suite uses, blocked: pytest-benchmark (in the image) warns
# "Benchmarks are automatically disabled because xdist plugin is active", which filterwarnings=error makes an
# INTERNALERROR under --jobs.
BLOCKED_PLUGINS = ("benchmark",)


@dataclass(frozen=True)
class Dep:
    """A test dependency: what pip installs, and what its absence makes unrunnable."""

    requirement: str
    # Import names that need it: a test file importing one of them (or loading a docs_src module that
    # does) is ignored when that name cannot be imported. Empty: needed by the run itself, nothing ignored.
    modules: tuple[str, ...] = ()


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


@dataclass(frozen=True)
class KnownFailure:
    nodeid: str  # a node id or a node id prefix (as --deselect takes it)
    reason: str
    applies: Callable[[], bool] = lambda: True


@dataclass(frozen=True)
class Suite:
    name: str
    # Entries of the sdist to extract: files or directories, relative to its root directory.
    members: tuple[str, ...]
    deps: tuple[Dep, ...]
    # Failures unrelated to the server (environment, machine), deselected.
    known_failures: tuple[KnownFailure, ...] = ()
    # Added to PYTHONPATH, relative to the extracted root (as the suite's own test script does).
    pythonpath: tuple[str, ...] = ()
    test_paths: tuple[str, ...] = ("tests",)
    # Extra pytest arguments always passed.
    pytest_args: tuple[str, ...] = ()
    # pytest-xdist distribution mode when --jobs is given.
    xdist_dist: str = "load"


STARLETTE = Suite(
    name="starlette",
    members=("pyproject.toml", "tests"),
    known_failures=(
        KnownFailure(
            "tests/test_staticfiles.py::test_staticfiles_with_invalid_dir_permissions_returns_401",
            "run as root: a chmod-ed directory stays readable, so no 401",
            _is_root,
        ),
    ),
    deps=(
        # starlette[full]
        Dep("itsdangerous", ("itsdangerous", "starlette.middleware.sessions")),
        Dep("jinja2", ("jinja2", "starlette.templating")),
        Dep("opentelemetry-api", ("opentelemetry", "starlette.middleware.opentelemetry")),
        Dep("python-multipart>=0.0.18", ("python_multipart", "multipart", "starlette.formparsers")),
        Dep("pyyaml", ("yaml", "starlette.schemas")),
        Dep("httpx>=0.27.0,<0.29.0", ("httpx",)),
        Dep("httpx2[zstd]>=2.0.0", ("httpx2",)),
        # the dev group (test tools)
        Dep("blockbuster>=1.5.23", ("blockbuster",)),
        Dep("importlib-metadata", ("importlib_metadata",)),
        Dep("opentelemetry-sdk>=1.44.0", ("opentelemetry.sdk",)),
        Dep("trio>=0.34.0", ("trio",)),
        Dep("pytest-timeout>=2.3"),
    ),
    # The suite has no per-test timeout of its own; a hang must not eat CI's budget.
    pytest_args=("--timeout=120",),
)

FASTAPI = Suite(
    name="fastapi",
    # test_additional_responses/test_tutorial00{2,4} copy the favicon from docs/.
    members=("pyproject.toml", "tests", "docs_src", "scripts", "docs/en/docs/img/favicon.png"),
    deps=(
        # the `tests` dependency group (less coverage, mypy, ty, codspeed, pytest-cov, pytest-sugar: tools)
        Dep("opentelemetry-instrumentation-fastapi>=0.65b0", ("opentelemetry.instrumentation.fastapi",)),
        Dep("logfire>=5.1.0", ("logfire",)),
        # <3: sentry-sdk 3.0's envelopes carry spans, and FastAPI's telemetry tests count transactions (two of
        # them fail on 3.x, with or without this server).
        Dep("sentry-sdk>=2.70.0,<3", ("sentry_sdk",)),
        Dep("opentelemetry-sdk>=1.44.0", ("opentelemetry.sdk",)),
        Dep("opentelemetry-exporter-otlp-proto-http>=1.44.0", ("opentelemetry.exporter.otlp.proto.http",)),
        Dep("httpx>=0.23.0,<1.0.0", ("httpx",)),
        Dep("httpx2>=2.0.0", ("httpx2",)),
        Dep("python-slugify>=8.0.4", ("slugify",)),
        Dep("anyio[trio]>=4.1.0,<5.0.0", ("trio",)),
        Dep("dirty-equals>=0.9.0", ("dirty_equals",)),
        Dep("flask>=3.0.0,<4.0.0", ("flask",)),
        Dep("inline-snapshot>=0.21.1", ("inline_snapshot",)),
        Dep("pwdlib[argon2]>=0.2.1", ("pwdlib",)),
        Dep("pyjwt>=2.9.0", ("jwt",)),
        Dep("pyyaml>=5.3.1,<7.0.0", ("yaml",)),
        Dep("sqlmodel>=0.0.31", ("sqlmodel", "sqlalchemy")),
        Dep("strawberry-graphql>=0.200.0,<1.0.0", ("strawberry",)),
        Dep("typer>=0.26.1", ("typer",)),
        Dep("a2wsgi>=1.9.0,<=2.0.0", ("a2wsgi", "fastapi.middleware.wsgi")),
        Dep("pytest-timeout>=2.4.0"),  # the suite's pyproject sets `timeout` under --strict-config
        Dep("pytest-xdist[psutil]>=3.0.2"),
        Dep("coverage[toml]>=7.13,<8.0", ("coverage",)),  # test_fastapi_cli runs `python -m coverage run`
        Dep("fastapi-cli>=0.0.32", ("fastapi_cli",)),
        # the `all` / `standard` extras the docs tutorials use
        Dep("jinja2>=3.1.5", ("jinja2", "fastapi.templating")),
        Dep("python-multipart>=0.0.18", ("python_multipart", "multipart")),
        Dep("itsdangerous>=1.1.0", ("itsdangerous", "starlette.middleware.sessions")),
        Dep("email-validator>=2.0.0", ("email_validator",)),
        Dep("pydantic-settings>=2.0.0", ("pydantic_settings",)),
        Dep("pydantic-extra-types>=2.0.0", ("pydantic_extra_types",)),
        Dep("orjson", ("orjson",)),
        Dep("ujson", ("ujson",)),
    ),
    pythonpath=("docs_src",),  # as upstream's scripts/test.sh does
    xdist_dist="loadgroup",  # as upstream's scripts/test.sh does
)

SUITES = {s.name: s for s in (STARLETTE, FASTAPI)}


class SetupError(Exception):
    pass


class Log:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._f = path.open("a", encoding="utf-8")
        self.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(sys.argv)}")

    def write(self, msg: str) -> None:
        print(f"[upstream] {msg}", flush=True)
        self._f.write(msg + "\n")
        self._f.flush()

    def __enter__(self) -> Log:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    m = re.match(r"[A-Za-z0-9._-]+", requirement)
    assert m, requirement
    return m.group(0)


def run(
    cmd: Sequence[str], cwd: Path | str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), cwd=cwd, env=env, text=True, capture_output=True, check=False)


def installed_version(dist: str) -> str | None:
    out = run([sys.executable, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"])
    return out.stdout.strip() if out.returncode == 0 else None


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch_sdist(name: str, version: str, sdists: Path, log: Log) -> Path:
    def find() -> Path | None:
        for stem in {name, name.replace("-", "_"), canonical(name)}:
            p = sdists / f"{stem}-{version}.tar.gz"
            if p.is_file():
                return p
        return None

    cached = find()
    if cached is None:
        sdists.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps"]
        cmd += ["--disable-pip-version-check", f"{name}=={version}", "-d", str(sdists)]
        out = run(cmd)
        cached = find()
        if out.returncode != 0 or cached is None:
            raise SetupError(f"pip download {name}=={version} failed:\n{out.stdout}{out.stderr}")
        log.write(f"{name}: downloaded {cached.name}")
    else:
        log.write(f"{name}: cached {cached}")
    log.write(f"{name}: sdist {cached.name} sha256={sha256(cached)} size={cached.stat().st_size}")
    return cached


def extract(sdist: Path, dest: Path, members: Iterable[str]) -> None:
    wanted = set(members)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    with tarfile.open(sdist) as tar:
        picked: list[tarfile.TarInfo] = []
        for info in tar.getmembers():
            parts = Path(info.name).parts
            if len(parts) < 2:
                continue
            rel = Path(*parts[1:])
            if not any(rel == Path(w) or Path(w) in rel.parents for w in wanted):
                continue
            info.name = str(rel)
            picked.append(info)
        if hasattr(tarfile, "data_filter"):
            tar.extractall(dest, members=picked, filter="data")
        else:  # pragma: no cover - Python without PEP 706 backports
            tar.extractall(dest, members=picked)
    missing = [m for m in wanted if not (dest / m).exists()]
    if missing:
        raise SetupError(f"{sdist.name} has no {', '.join(missing)}")


def lock_path(lock_dir: Path, suite: str, version: str) -> Path:
    return lock_dir / "upstream" / f"{suite}-{version}.txt"


# A requirement line of a lock: `name[extras]==version ; marker \` (its hashes follow on continuation lines).
LOCK_PIN = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def lock_hashes(lock: Path, name: str) -> set[str]:
    """The sha256 hashes a lock gives for package `name` (its wheels' and its sdist's)."""
    hashes: set[str] = set()
    current = False
    for line in lock.read_text(encoding="utf-8").splitlines():
        m = LOCK_PIN.match(line)
        if m:
            current = canonical(m.group(1)) == canonical(name)
        if current:
            hashes.update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return hashes


def core_versions() -> dict[str, str | None]:
    return {name: installed_version(name) for name in PINNED}


def install_lock(lock: Path, log: Log, python: str = sys.executable) -> None:
    """pip install --require-hashes -r lock: every package and every dependency must be in the lock, pinned,
    with a matching hash, or pip refuses the whole install (raised as SetupError with pip's reasons)."""
    cmd = [
        python,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--require-hashes",
        "-r",
        str(lock),
    ]
    out = run(cmd)
    if out.returncode != 0:
        text = (out.stderr or out.stdout).strip().splitlines()
        reasons = [ln for ln in text if not ln.startswith("WARNING")][:12]
        raise SetupError(f"pip refused the lock {lock}:\n" + "\n".join(reasons))
    log.write(f"installed {lock} (--require-hashes)")


def missing_modules(modules: Sequence[str]) -> set[str]:
    code = (
        "import importlib.util, sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        ok = importlib.util.find_spec(m) is not None\n"
        "    except Exception:\n"
        "        ok = False\n"
        "    if not ok:\n"
        "        print(m)\n"
    )
    out = run([sys.executable, "-c", code, *modules], cwd="/")
    return set(out.stdout.split())


_IMPORT_GUARDS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


class _HardImports(ast.NodeVisitor):
    """Absolute names of the modules a file imports, less those under `try: ... except ImportError`
    or `if TYPE_CHECKING:` (imports inside functions count: they run when the test does)."""

    def __init__(self, package: str) -> None:
        self.package = package
        self.names: set[str] = set()

    def visit_Import(self, node: ast.Import) -> None:
        self.names.update(alias.name for alias in node.names)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            parts = self.package.split(".") if self.package else []
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join([*parts, *([node.module] if node.module else [])])
        else:
            base = node.module or ""
        self.names.add(base)
        self.names.update(f"{base}.{alias.name}" for alias in node.names)

    def visit_Try(self, node: ast.Try) -> None:
        def guards(h: ast.ExceptHandler) -> bool:
            types = h.type.elts if isinstance(h.type, ast.Tuple) else [h.type]
            return h.type is None or any(isinstance(t, ast.Name) and t.id in _IMPORT_GUARDS for t in types)

        if not any(guards(h) for h in node.handlers):
            for stmt in node.body:
                self.visit(stmt)
        rest: list[ast.AST] = [*node.handlers, *node.orelse, *node.finalbody]
        for child in rest:
            self.visit(child)

    visit_TryStar = visit_Try

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
            isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
        ):
            for stmt in node.orelse:
                self.visit(stmt)
        else:
            self.generic_visit(node)


def _is_test_file(path: Path) -> bool:
    return path.name == "conftest.py" or path.name.startswith("test_") or path.name.endswith("_test.py")


def files_needing(root: Path, suite: Suite, missing: dict[str, str]) -> dict[str, str]:
    """Test files (relative to root) that need a missing module, directly, through a helper module of the
    suite (tests/utils.py, ...) or through a docs_src module they load by name (the tutorial tests do
    `importlib.import_module(f"docs_src.security.{param}")`).

    missing maps an import name to the reason text. Returns {relative path: reason}; a conftest.py that
    needs a missing module makes its whole directory ignored (it cannot be ignored alone).
    """
    modules: dict[Path, tuple[list[str], set[str], str]] = {}  # file -> (its names, imports, source)
    for base in {*suite.test_paths, *suite.pythonpath, "docs_src"}:
        if not (root / base).is_dir():
            continue
        for py in sorted((root / base).rglob("*.py")):
            if py in modules:
                continue
            rel = py.relative_to(root).with_suffix("")
            parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            names = [".".join(parts)]
            for extra in suite.pythonpath:  # also importable relative to a PYTHONPATH entry
                if Path(extra) in rel.parents:
                    names.append(".".join(parts[len(Path(extra).parts) :]))
            package = ".".join(parts if rel.name == "__init__" else parts[:-1])
            src = py.read_text(encoding="utf-8", errors="replace")
            try:
                tree = ast.parse(src, filename=str(py))
            except SyntaxError:
                continue  # e.g. newer-Python-only syntax: the suite skips it itself
            visitor = _HardImports(package)
            visitor.visit(tree)
            modules[py] = (names, visitor.names, src)

    def needs(imported: str, bad: dict[str, str]) -> str | None:
        for name, reason in bad.items():
            if imported == name or imported.startswith(name + "."):
                return reason if name in missing else f"{reason} (via {name})"
        return None

    bad: dict[str, str] = dict(missing)  # module name or prefix -> reason
    bad_files: dict[Path, str] = {}
    changed = True
    while changed:
        changed = False
        for py, (names, imports, _) in modules.items():
            if py in bad_files:
                continue
            reason = next((r for r in (needs(i, bad) for i in sorted(imports)) if r), None)
            if reason is None:
                continue
            bad_files[py] = reason
            bad.update(dict.fromkeys((n for n in names if n), reason.split(" (via ")[0]))
            changed = True

    loaded_by_name = {n: why for py, why in bad_files.items() for n in modules[py][0]}
    result: dict[str, str] = {}
    for py, (_, _, src) in modules.items():
        if not _is_test_file(py) or not any((root / b) in py.parents for b in suite.test_paths):
            continue
        reason = bad_files.get(py)
        if reason is None:
            for dotted, why in loaded_by_name.items():
                package, _, last = dotted.rpartition(".")
                if not dotted.startswith("docs_src."):
                    continue
                if dotted in src or (package in src and re.search(rf"[\"']{re.escape(last)}[\"']", src)):
                    reason = f"{why} (via {dotted})"
                    break
        if reason is not None:
            target = py.parent if py.name == "conftest.py" else py
            result[str(target.relative_to(root))] = reason
    dirs = [Path(r) for r in result if (root / r).is_dir()]
    return {r: why for r, why in result.items() if not any(d in Path(r).parents for d in dirs)}


def resolve_repo_module(module: str) -> Path | None:
    parts = module.split(".")
    for base in PLUGIN_PATH:
        for cand in (base.joinpath(*parts).with_suffix(".py"), base.joinpath(*parts, "__init__.py")):
            if cand.is_file():
                return cand
    return None


def plugin_args(modules: Sequence[str], extracted: Path, shim_dir: Path, log: Log) -> list[str]:
    """`-p` arguments; a repo module whose top package clashes with the sdist's gets a shim."""
    args: list[str] = []
    for mod in modules:
        path = resolve_repo_module(mod)
        top = mod.split(".")[0]
        if path is not None and ((extracted / top).exists() or (extracted / f"{top}.py").exists()):
            alias = "fa_upstream_plugin__" + re.sub(r"\W", "_", mod)
            shim_dir.mkdir(parents=True, exist_ok=True)
            (shim_dir / f"{alias}.py").write_text(
                f'"""Loads {mod} ({path}) under this name: package `{top}` clashes with the suite\'s."""\n'
                "import importlib.util\n"
                "import sys\n\n"
                f"_spec = importlib.util.spec_from_file_location(__name__, {str(path)!r})\n"
                "assert _spec is not None and _spec.loader is not None\n"
                "_module = importlib.util.module_from_spec(_spec)\n"
                "sys.modules[__name__] = _module\n"
                "_spec.loader.exec_module(_module)\n",
                encoding="utf-8",
            )
            log.write(f"plugin {mod}: loaded from {path} as {alias} ({top!r} clashes with the suite's)")
            args += ["-p", alias]
        else:
            args += ["-p", mod]
    return args


def split_plugin_extras(extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """Pull `-p MOD` / `-pMOD` (not `no:`) out of the pass-through args so they get the same treatment."""
    plugins: list[str] = []
    rest: list[str] = []
    it = iter(extra)
    for arg in it:
        if arg == "-p":
            mod = next(it, "")
        elif arg.startswith("-p") and not arg.startswith("--"):
            mod = arg[2:]
        else:
            rest.append(arg)
            continue
        if mod.startswith("no:") or resolve_repo_module(mod) is None:
            rest += ["-p", mod]
        else:
            plugins.append(mod)
    return plugins, rest


def parse_summary(lines: Sequence[str]) -> dict[str, int]:
    for line in reversed(lines):
        found = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|deselected)", line)
        if found and re.search(r"\bin [\d.]+s\b", line):
            counts: dict[str, int] = {}
            for n, what in found:
                counts[what.rstrip("s") if what.startswith("error") else what] = int(n)
            return counts
    return {}


def run_pytest(cmd: Sequence[str], cwd: Path, env: dict[str, str], log_path: Path) -> tuple[int, list[str]]:
    lines: list[str] = []
    with log_path.open("w", encoding="utf-8") as f:
        f.write(" ".join(cmd) + "\n")
        with subprocess.Popen(
            list(cmd),
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                sys.stdout.write(line)
                sys.stdout.flush()
                f.write(line)
                lines.append(line.rstrip("\n"))
            rc = proc.wait()
    return rc, lines


@dataclass
class Result:
    suite: str
    version: str
    rc: int
    counts: dict[str, int]
    seconds: dict[str, float]
    ignored: dict[str, str]
    # Failed tests told apart by their re-runs: "upstream's own", "ours", "flaky" (empty: nothing re-run).
    kinds: dict[str, list[str]] = field(default_factory=dict)


def run_suite(suite: Suite, args: argparse.Namespace, extra: list[str], out: Path, log: Log) -> Result:
    seconds: dict[str, float] = {}
    t0 = time.monotonic()
    version = installed_version(suite.name)
    if version is None:
        raise SetupError(f"{suite.name} is not installed")
    sdist = fetch_sdist(suite.name, version, out / "sdists", log)
    lock = lock_path(args.lock_dir, suite.name, version)
    if lock.is_file() and sha256(sdist) not in lock_hashes(lock, suite.name):
        raise SetupError(f"{sdist.name}: its sha256 is not one {lock} names for {suite.name} {version}")
    root = out / f"{suite.name}-{version}"
    extract(sdist, root, suite.members)
    if (root / suite.name).exists():
        raise SetupError(f"{root / suite.name} would shadow the installed {suite.name}")
    seconds["fetch"] = time.monotonic() - t0

    t0 = time.monotonic()
    requirements = [d.requirement for d in suite.deps]
    if args.no_install:
        log.write(f"{suite.name}: --no-install: test dependencies not installed")
    else:
        if not lock.is_file():
            raise SetupError(
                f"no lock for {suite.name} {version} ({lock}): the installed {suite.name} is not the one the "
                "test lock pins; install tests/locks/test.txt, or move the locks: tests/locks/lock.py update"
            )
        before = core_versions()
        install_lock(lock, log)
        after = core_versions()
        changed = [f"{n} {before[n]} -> {after[n]}" for n in PINNED if before[n] != after[n]]
        if changed:
            raise SetupError(f"installing {lock.name} changed core packages: {', '.join(changed)}")
    versions = []
    for req in requirements:
        v = installed_version(req_name(req))
        versions.append(f"{req_name(req)}=={v}" if v else f"{req_name(req)} MISSING")
    log.write(f"{suite.name}: test dependencies: {' '.join(versions)}")
    probes = sorted({m for d in suite.deps for m in d.modules})
    absent = missing_modules(probes)
    reasons: dict[str, str] = {}
    for dep in suite.deps:
        for mod in dep.modules:
            if mod in absent:
                reasons[mod] = f"needs {mod} ({dep.requirement}: not importable)"
    ignored = files_needing(root, suite, reasons) if reasons else {}
    for rel, reason in sorted(ignored.items()):
        log.write(f"{suite.name}: --ignore {rel}: {reason}")
    seconds["deps"] = time.monotonic() - t0

    extra_plugins, rest = split_plugin_extras(extra)
    shims = out / "_plugins"
    plugins = plugin_args([*plugins_for(suite.name, args.plugin), *extra_plugins], root, shims, log)
    env = suite_env(root, suite, shims if plugins else None)

    # Sanity check: the suite must test the installed package, not a copy next to its tests.
    code = f"import {suite.name}; print({suite.name}.__file__)"
    where = run([sys.executable, "-c", code], cwd=root, env=env)
    log.write(f"{suite.name}: testing {version} at {where.stdout.strip() or where.stderr.strip()}")
    if where.returncode != 0 or Path(where.stdout.strip()).resolve().is_relative_to(root.resolve()):
        raise SetupError(f"{suite.name} imports from {where.stdout.strip()!r}")

    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE"]
    base += [f"-pno:{name}" for name in BLOCKED_PLUGINS]
    base += suite.pytest_args
    cmd = list(base)
    if args.jobs:
        if "xdist" in missing_modules(["xdist"]):
            log.write(f"{suite.name}: pytest-xdist not importable: --jobs ignored")
        else:
            cmd += ["-n", str(args.jobs), f"--dist={suite.xdist_dist}"]
    cmd += [f"--ignore={rel}" for rel in sorted(ignored)]
    for known in suite.known_failures:
        if known.applies():
            log.write(f"{suite.name}: --deselect {known.nodeid}: {known.reason}")
            cmd.append(f"--deselect={known.nodeid}")
    cmd += plugins
    cmd += rest
    # Test paths given after `--` replace the whole suite.
    if not any(not a.startswith("-") and (root / a.split("::")[0]).exists() for a in rest):
        cmd += list(suite.test_paths)
    shown_env = f"PYTHONPATH={env['PYTHONPATH']} " if env.get("PYTHONPATH") else ""
    log.write(f"{suite.name}: cd {root} && {shown_env}{' '.join(cmd)}")

    t0 = time.monotonic()
    rc, lines = run_pytest(cmd, root, env, out / f"{suite.name}-pytest.log")
    seconds["pytest"] = time.monotonic() - t0
    counts = parse_summary(lines)
    if rc == 0 and not counts.get("passed"):
        rc = 5  # nothing ran: not a pass
    log.write(f"{suite.name}: pytest exit {rc}, {counts}, {seconds['pytest']:.1f}s")
    kinds: dict[str, list[str]] = {}
    failed = failed_tests(lines, suite)
    if rc == 1 and plugins and failed:
        t0 = time.monotonic()
        kinds = classify_failures(failed, base, plugins, root, suite, shims, out, log)
        seconds["re-run"] = time.monotonic() - t0
        if not kinds.get("ours") and counts.get("passed"):
            rc = 0  # every failure is the suite's own or flaky: nothing this server changed
    return Result(suite.name, version, rc, counts, seconds, ignored, kinds)


def suite_env(root: Path, suite: Suite, shims: Path | None) -> dict[str, str]:
    """The suite's environment: its PYTHONPATH entries, and with plugins (shims given) their lookup paths."""
    env = dict(os.environ)
    pythonpath = [str(root / p) for p in suite.pythonpath]
    if shims is not None:
        pythonpath.insert(0, str(shims))
    if env.get("PYTHONPATH"):
        pythonpath.append(env["PYTHONPATH"])
    if shims is not None:
        pythonpath += [str(p) for p in PLUGIN_PATH]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env.pop("PYTEST_ADDOPTS", None)
    return env


# More failures than this are not re-run one by one: that many is not an upstream accident.
MAX_RERUN = 40


def failed_tests(lines: Sequence[str], suite: Suite) -> list[str]:
    """Node ids of pytest's `FAILED id - reason` / `ERROR id - reason` summary lines, in order."""
    roots = tuple(f"{p}/" for p in suite.test_paths)
    ids: list[str] = []
    for line in lines:
        m = re.match(r"(?:FAILED|ERROR) (\S.*?)(?: - .*)?$", line)
        if m and m.group(1).startswith(roots) and m.group(1) not in ids:
            ids.append(m.group(1))
    return ids


def classify_failures(
    failed: list[str],
    base: list[str],
    plugins: list[str],
    root: Path,
    suite: Suite,
    shims: Path,
    out: Path,
    log: Log,
) -> dict[str, list[str]]:
    """Run the failed tests again without the plugins, then with them.

    Returns {"upstream's own" | "ours" | "flaky": node ids}."""
    if len(failed) > MAX_RERUN:
        log.write(
            f"{suite.name}: {len(failed)} failures (more than {MAX_RERUN}): not re-run, all counted as ours"
        )
        return {"ours": failed}
    log.write(f"{suite.name}: re-running {len(failed)} failed tests without the plugins, then with them")
    rc_plain, plain = run_pytest(
        [*base, *failed], root, suite_env(root, suite, None), out / f"{suite.name}-rerun-plain.log"
    )
    rc_again, again = run_pytest(
        [*base, *plugins, *failed],
        root,
        suite_env(root, suite, shims),
        out / f"{suite.name}-rerun-plugins.log",
    )
    if rc_plain not in (0, 1) or rc_again not in (0, 1):
        log.write(f"{suite.name}: the re-runs did not run (exit {rc_plain}, {rc_again}): all counted as ours")
        return {"ours": failed}
    fail_plain, fail_again = set(failed_tests(plain, suite)), set(failed_tests(again, suite))
    kinds: dict[str, list[str]] = {}
    for nodeid in failed:
        if nodeid in fail_plain:
            kind = "upstream's own"
        elif nodeid in fail_again:
            kind = "ours"
        else:
            kind = "flaky"
        kinds.setdefault(kind, []).append(nodeid)
        log.write(f"{suite.name}: {kind}: {nodeid}")
    return kinds


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1 :]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("suite", choices=[*SUITES, "all"])
    p.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="[SUITE:]MODULE",
        help="add `-p MODULE` (repeatable); with SUITE: to that suite's run only",
    )
    p.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "upstream", help="work directory")
    p.add_argument("--jobs", "-j", type=int, default=0, help="pytest-xdist workers (default: none)")
    p.add_argument(
        "--lock-dir",
        type=Path,
        default=REPO_ROOT / "tests" / "locks",
        help="where upstream/<suite>-<version>.txt are (default: tests/locks)",
    )
    p.add_argument("--no-install", action="store_true", help="do not pip install the test dependencies")
    return p.parse_args(argv), extra


def plugins_for(suite: str, plugins: Sequence[str]) -> list[str]:
    """The `--plugin` modules for one suite: `MOD` for every suite, `SUITE:MOD` for that suite only."""
    chosen = []
    for plugin in plugins:
        name, sep, mod = plugin.partition(":")
        if not sep:
            chosen.append(plugin)
        elif name == suite:
            chosen.append(mod)
    return chosen


def main(argv: Sequence[str] | None = None) -> int:
    args, extra = parse_args(sys.argv[1:] if argv is None else argv)
    out: Path = args.out.resolve()
    with Log(out / "upstream.log") as log:
        return run_suites(args, extra, out, log)


def run_suites(args: argparse.Namespace, extra: list[str], out: Path, log: Log) -> int:
    names = list(SUITES) if args.suite == "all" else [args.suite]
    results: list[Result] = []
    t_all = time.monotonic()
    for name in names:
        try:
            results.append(run_suite(SUITES[name], args, extra, out, log))
        except SetupError as e:
            log.write(f"{name}: setup failed: {e}")
            return 2
    log.write(f"summary ({time.monotonic() - t_all:.0f}s in all):")
    for r in results:
        secs = ", ".join(f"{k} {v:.0f}s" for k, v in r.seconds.items())
        counts = ", ".join(f"{n} {k}" for k, n in r.counts.items())
        status = "ok" if r.rc == 0 else f"FAILED (pytest exit {r.rc})"
        log.write(f"  {r.suite} {r.version}: {status}: {counts}; {len(r.ignored)} files ignored; {secs}")
        for kind, ids in r.kinds.items():
            why = {
                "upstream's own": "fail without this server's plugins too: not counted",
                "flaky": "passed when run again: not counted",
                "ours": "pass without this server's plugins, fail with them",
            }[kind]
            log.write(f"    {len(ids)} {kind} ({why}): {' '.join(ids)}")
    return 0 if all(r.rc == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
