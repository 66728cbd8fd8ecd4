#!/usr/bin/env bash
# Installs what the tests need and runs every test: lint, C++ unit tests (ctest), Python tests (pytest), and a short
# smoke run of the benchmark harness. The README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# FA_TESTS=all (default): everything below. FA_TESTS=python: build, then only $PY's Python tests (what the workflow's
# jobs for the other interpreters of its matrix run; the full run is one job's).
FA_TESTS=${FA_TESTS:-all}
case "$FA_TESTS" in
  all | python) ;;
  *) echo "FA_TESTS must be 'all' or 'python', not '$FA_TESTS'" >&2; exit 2 ;;
esac
# The test environment is locked: tests/locks/test.txt and tests/locks/upstream/ (written by tests/locks/lock.py), every
# package pinned with its hashes and installed with --require-hashes, so nothing newer or unnamed comes in.
# FA_DEPS=newest (or --newest), the drift check: resolve today's newest releases instead, say what moved, test on them.
FA_DEPS=${FA_DEPS:-locked}
for arg in "$@"; do
  case "$arg" in
    --newest) FA_DEPS=newest ;;
    *) echo "unknown argument '$arg' (known: --newest)" >&2; exit 2 ;;
  esac
done
case "$FA_DEPS" in
  locked | newest) ;;
  *) echo "FA_DEPS must be 'locked' or 'newest', not '$FA_DEPS'" >&2; exit 2 ;;
esac
LOCK_DIR=tests/locks

step() { printf '\n=== %s === (%d s into the run)\n' "$*" "$SECONDS"; }

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  step "system packages (apt-get)"
  # catch2: C++ tests (v2 on Debian 12, v3 on Debian 13); wrk: benchmark smoke run; g++ for the build;
  # zlib1g-dev: WebSocket permessage-deflate; clang + libclang-rt-dev: libFuzzer for the fuzz targets;
  # libssl-dev: OpenSSL's headers (TLS; the code is the OpenSSL Python's ssl module loads).
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends catch2 wrk nghttp2-client g++ \
    zlib1g-dev clang libclang-rt-dev libssl-dev >/dev/null
fi

pip_install() {  # PYTHON ARGS...: pip install, quietly
  local py=$1
  shift
  "$py" -m pip install -q --disable-pip-version-check "$@"
}
install_locked() {  # PYTHON: the locked test environment (test extra, build tools), then the package built from the checkout
  pip_install "$1" --require-hashes -r "$LOCK_DIR/test.txt"
  pip_install "$1" --no-deps --no-build-isolation -e .
}

step "test environment ($LOCK_DIR/test.txt, --require-hashes), then fasterapi-asgi built from the checkout (editable)"
if [ "$FA_DEPS" = newest ]; then
  pip_install "$PY" --require-hashes -r "$LOCK_DIR/test.txt"  # uv, for the resolution
  LOCK_DIR=build/locks/newest
  step "drift check: the newest releases, resolved into $LOCK_DIR"
  "$PY" tests/locks/lock.py drift --out "$LOCK_DIR"
fi
install_locked "$PY"

if [ "$FA_TESTS" = python ]; then
  step "Python tests ($("$PY" --version), FA_TESTS=python)"
  "$PY" -m pytest -q -p no:cacheprovider tests/python
  exit 0
fi

step "lint"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
"$PY" -m mypy  # setup.cfg

step "C++ tests"
cmake -S . -B build/cpp -G Ninja -DFA_BUILD_TESTS=ON -DFA_BUILD_PYTHON=OFF -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build/cpp -j2
ctest --test-dir build/cpp --output-on-failure

step "C++ tests under ASan + UBSan"
cmake -S . -B build/cpp-asan -G Ninja -DFA_BUILD_TESTS=ON -DFA_BUILD_PYTHON=OFF -DFA_SANITIZE=ON \
  -DCMAKE_BUILD_TYPE=Debug -DFA_DEPS_DIR="$PWD/build/cpp/_registry" >/dev/null
cmake --build build/cpp-asan -j2
ctest --test-dir build/cpp-asan --output-on-failure

step "fuzzing (libFuzzer + ASan + UBSan, bounded; a longer run: bash tests/fuzz/run.sh 600)"
if command -v clang++ >/dev/null 2>&1; then
  bash tests/fuzz/run.sh 45
else
  echo "clang++ not found: fuzz targets not built (apt-get install clang libclang-rt-dev)"
fi

step "Python tests"
"$PY" -m pytest -q -p no:cacheprovider tests/python

step "Starlette's and FastAPI's own test suites (from their sdists), the native route index forced on every router, route plans on every FastAPI route they can serve"
# Fetched at test time (pip download of the installed versions), never committed; every indexed request also
# checks that each route the index left out answers Match.NONE (tests/upstream/fa_force_route_index.py), and in
# FastAPI's suite every request a route plan answers is also solved by FastAPI's solve_dependencies and the
# arguments compared (tests/upstream/fa_force_route_plans.py).
UPSTREAM_PLUGINS=(--plugin tests.upstream.fa_force_route_index --plugin fastapi:tests.upstream.fa_force_route_plans)
"$PY" tests/upstream/run_upstream.py all "${UPSTREAM_PLUGINS[@]}" --lock-dir "$LOCK_DIR"

OLDEST_FASTAPI=$("$PY" -c 'import sys; sys.path.insert(0, "tests/locks"); import lock; print(lock.oldest_proven_fastapi())')
step "FastAPI $OLDEST_FASTAPI's own suite: the oldest release route plans are proven on, plans forced on"
# A venv over the test environment (--system-site-packages: the package built above, the locked packages) in
# which its lock installs only that FastAPI (tests/locks/lock.py: everything else is held to the test lock).
if [ "$OLDEST_FASTAPI" = "$("$PY" -c 'import fastapi; print(fastapi.__version__)')" ]; then
  echo "FastAPI $OLDEST_FASTAPI is the test lock's: run above"
else
  rm -rf build/fastapi-oldest
  "$PY" -m venv --system-site-packages build/fastapi-oldest
  pip_install build/fastapi-oldest/bin/python --require-hashes -r "$LOCK_DIR/upstream/fastapi-$OLDEST_FASTAPI.txt"
  build/fastapi-oldest/bin/python tests/upstream/run_upstream.py fastapi "${UPSTREAM_PLUGINS[@]}" --lock-dir "$LOCK_DIR"
fi

# The other supported interpreters (Python 3.10-3.14), each running the whole of tests/python. 3.10, 3.12 and 3.13
# are taken from pyenv when it has them; 3.14 from pyenv, else from a Debian sid chroot (tests/python314.sh).
# Python 3.12's tests run against the release path's installed wheel (below), not an editable build.
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
interpreter() {  # the newest pyenv CPython of that minor version, unless it is $PY's
  local other
  other=$(ls -d "$PYENV_ROOT"/versions/"$1".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -n "$other" ] && [ "$("$other" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" != \
    "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ]; then
    echo "$other"
  fi
}

step "release path: sdist (vendored C sources) -> wheel built offline -> auditwheel -> fresh venv, no compiler"
# tests/release builds with Python 3.12 where pyenv has it; the 3.12 tests below then run against that wheel.
RELEASE_PY=$(interpreter 3.12)
RELEASE_PY=${RELEASE_PY:-$PY}
[ "$RELEASE_PY" = "$PY" ] || pip_install "$RELEASE_PY" --require-hashes -r "$LOCK_DIR/test.txt"  # build, locked
FA_RELEASE_PYTHON="$RELEASE_PY" "$PY" -m pytest -q -p no:cacheprovider tests/release

step "Python 3.14: build, the release path and every test (pyenv's, else a Debian sid chroot: tests/python314.sh)"
# About 5.5 min on the project's machine with the chroot made from nothing (42 s of it), 4.3 min reusing it
# (tests/python314.sh). Exit 75: no 3.14 could be had (not root, the mirror failed; it said so in one line), and the
# run goes on.
if [ "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = 3.14 ]; then
  echo "Python 3.14 is $PY: tested above"
else
  status=0
  FA_LOCK_DIR="$LOCK_DIR" bash tests/python314.sh || status=$?
  [ "$status" = 0 ] || [ "$status" = 75 ] || exit "$status"
fi

step "Python 3.10, 3.12 (the installed release wheel) and 3.13: every test, the three runs at once"
# Built one after the other, then tested side by side: the suite waits on sockets, timers and subprocesses far more
# than it computes (about 125 s of CPU in 260 s), so three runs take about 4.9 minutes on 2 cores where one after
# the other took 13. Each run's output goes to build/pytest-<version>.log and is printed when all have ended.
runs=()
if [ "$RELEASE_PY" != "$PY" ]; then  # the release path built its wheel with pyenv's 3.12
  venv_py=build/release/venv/bin/python
  pip_install "$venv_py" --require-hashes -r "$LOCK_DIR/test.txt"
  pip_install "$venv_py" --no-deps "$(ls build/release/repaired/fasterapi_asgi-*.whl)"
  runs+=("3.12:$venv_py")
fi
for minor in 3.10 3.13; do
  other=$(interpreter "$minor")
  [ -n "$other" ] || continue
  install_locked "$other"
  runs+=("$minor:$other")
done
pids=()
ports=20000
for run in "${runs[@]}"; do
  minor=${run%%:*}
  # PYTHONSAFEPATH: neither pytest nor the servers it starts put the checkout on sys.path, so the 3.12 run tests the
  # wheel's copy (and the others their editable install, as without it). FA_TEST_PORTS: each run's servers get
  # ports from a range of their own, below the kernel's ephemeral ones (tests/python/harness.py, free_port).
  FA_TEST_PORTS="$ports-$((ports + 3999))" PYTHONSAFEPATH=1 "${run#*:}" -m pytest -q -p no:cacheprovider \
    tests/python >"build/pytest-$minor.log" 2>&1 &
  pids+=($!)
  ports=$((ports + 4000))
done
failed=()
for i in "${!runs[@]}"; do
  minor=${runs[$i]%%:*}
  status=0
  wait "${pids[$i]}" || status=$?
  printf -- '--- Python %s (%s): pytest exit %s ---\n' "$minor" "${runs[$i]#*:}" "$status"
  cat "build/pytest-$minor.log"
  [ "$status" = 0 ] || failed+=("$minor")
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "tests failed on Python ${failed[*]}" >&2
  exit 1
fi

step "stress smoke run (bounded, loopback; fails when memory or descriptors grow)"
"$PY" benchmarks/stress.py --smoke --out build/stress-smoke

step "benchmark harness smoke run (numbers are not pass/fail)"
"$PY" benchmarks/run_suite.py --smoke --out build/suite-smoke
