#!/usr/bin/env bash
# Installs what the tests need and runs every test: lint, C++ unit tests (ctest), Python tests (pytest), and a short
# smoke run of the benchmark harness. The README's test command; .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

step() { printf '\n=== %s ===\n' "$*"; }

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  step "system packages (apt-get)"
  # catch2: C++ tests (v2 on Debian 12, v3 on Debian 13); wrk: benchmark smoke run; g++ for the build;
  # zlib1g-dev: WebSocket permessage-deflate; clang + libclang-rt-dev: libFuzzer for the fuzz targets;
  # libssl-dev: OpenSSL's headers (TLS; the code is the OpenSSL Python's ssl module loads).
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends catch2 wrk nghttp2-client g++ \
    zlib1g-dev clang libclang-rt-dev libssl-dev >/dev/null
fi

step "build and install fasterapi-asgi (editable) with test extras"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]"
"$PY" -m pip install -q --disable-pip-version-check cmake ninja

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
  bash tests/fuzz/run.sh 30
else
  echo "clang++ not found: fuzz targets not built (apt-get install clang libclang-rt-dev)"
fi

step "Python tests"
"$PY" -m pytest -q -p no:cacheprovider tests/python

step "Starlette's and FastAPI's own test suites (from their sdists), the native route index forced on every router"
# Fetched at test time (pip download of the installed versions), never committed; every indexed request also
# checks that each route the index left out answers Match.NONE (tests/upstream/fa_force_route_index.py).
"$PY" tests/upstream/run_upstream.py all --plugin tests.upstream.fa_force_route_index

# The other supported interpreters (Python 3.10-3.13): build, then on 3.13 every test (eager Task starts), on
# 3.10 and 3.12 the real-socket smoke tests, the eager-task tests (3.12+), how request Tasks start, the route index,
# the binding lifetime tests, TLS (the core reads the SSL_CTX out of each Python's ssl.SSLContext), fresh
# contextvars and http.response.pathsend. Interpreters are taken from pyenv when it has them.
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
for minor in 3.10 3.12 3.13; do
  other=$(ls -d "$PYENV_ROOT"/versions/"$minor".*/bin/python 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$other" ] || [ "$("$other" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" ]; then
    continue
  fi
  step "Python $minor: build and tests ($other)"
  "$other" -m pip install -q --disable-pip-version-check -e ".[test]"
  if [ "$minor" = 3.13 ]; then
    # Every test: on 3.12+ request Tasks start eagerly, so the app runs inside the server's callbacks.
    "$other" -m pytest -q -p no:cacheprovider tests/python
  else
    "$other" -m pytest -q -p no:cacheprovider tests/python/test_http_basic.py tests/python/test_eager_tasks.py \
      tests/python/test_task_start.py tests/python/test_route_index.py tests/python/test_core_lifetime.py \
      tests/python/test_tls.py tests/python/test_contextvars.py tests/python/test_pathsend.py
  fi
done

step "stress smoke run (bounded, loopback; fails when memory or descriptors grow)"
"$PY" benchmarks/stress.py --smoke --out build/stress-smoke

step "benchmark harness smoke run (numbers are not pass/fail)"
"$PY" benchmarks/run_suite.py --smoke --out build/suite-smoke
