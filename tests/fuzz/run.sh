#!/usr/bin/env bash
# Build the libFuzzer targets with clang (ASan + UBSan) and run each for SECONDS (default 30), starting from seed
# corpora made from the parser data cases. Exits non-zero when a target finds a crash; the input is kept in
# build/fuzz/artifacts/ (turn it into a parser data case once fixed).
#   bash tests/fuzz/run.sh          # CI: 30 s per target
#   bash tests/fuzz/run.sh 600      # a longer run
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_PER_TARGET=${1:-30}
PY=${PYTHON:-python3}
BUILD=build/fuzz
CC=clang CXX=clang++ cmake -S . -B "$BUILD" -G Ninja -DFA_BUILD_FUZZ=ON -DFA_BUILD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFA_DEPS_DIR="$PWD/build/cpp/_registry" >/dev/null
cmake --build "$BUILD" -j2 --target fuzz_request_parser fuzz_ws_frames fuzz_response_head fuzz_connection \
  fuzz_tls_connection
"$PY" tests/fuzz/make_seeds.py "$BUILD/seeds"
mkdir -p "$BUILD/artifacts"
status=0
for target in fuzz_request_parser fuzz_ws_frames fuzz_response_head fuzz_connection fuzz_tls_connection; do
  corpus="$BUILD/corpus/$target"
  mkdir -p "$corpus"
  echo "--- $target: ${SECONDS_PER_TARGET}s"
  if ! "$BUILD/tests/fuzz/$target" "$corpus" "$BUILD/seeds/$target" -max_total_time="$SECONDS_PER_TARGET" \
      -max_len=8192 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$BUILD/artifacts/$target-" 2>"$BUILD/$target.log"; then
    echo "$target FAILED; last lines of $BUILD/$target.log:"
    tail -40 "$BUILD/$target.log"
    status=1
  else
    grep -E "stat::number_of_executed_units|cov:" "$BUILD/$target.log" | tail -2
  fi
done
exit $status
