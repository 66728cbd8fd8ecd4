#!/usr/bin/env bash
# The Python 3.14 tests. tests/run_all.sh calls this; it also runs alone:
#
#     bash tests/python314.sh [PYTEST ARGS...]
#
# The locked test environment and the package built from the checkout (editable) on CPython 3.14, then, with no
# arguments, the release path on 3.14 (tests/release, its artifacts in build/release-py314/: a cp314 wheel built
# from the sdist offline, repaired by auditwheel, installed without a compiler) and the whole of tests/python;
# with arguments, pytest with those instead.
#
# The 3.14 is pyenv's newest when pyenv has one. Otherwise (this project's machines: pyenv cannot build 3.14, its
# sources come from a host they cannot reach) Debian sid's python3.14 in a chroot, made with debootstrap from the
# machine's own Debian mirror the first time and reused after: $FA_PY314_ROOT, by default
# /var/cache/fasterapi-asgi/sid-py314 (outside the checkout; remove it to make a fresh one). It brings sid's
# OpenSSL (3.6 when this was written), newer than Debian 12's, so the TLS code and the PySSLContext layout check
# run on it too. Making it needs root and apt-get (for debootstrap), both bounded by `timeout`.
#
# Measured on the project's 2-core machine (Debian 12), the whole step as run_all.sh runs it: 5 min 35 s from
# nothing (making the chroot 42 s with debootstrap's own install, 1.2 GB; the locked environment and the build
# 36 s; the release path 35 s; tests/python 221 s), 4 min 15 s reusing the chroot (the environment and the build
# 2 s). A fresh CI machine makes the chroot on every run.
#
# Exit status: 0 when the tests ran and passed; 75 when no Python 3.14 could be had (not root, no apt-get, no mounts,
# the mirror failed or timed out; one line says which), so the caller can carry on without it; any other status is
# a failure (of the environment's install, the build or the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
CHECKOUT=$PWD
LOCK_DIR=${FA_LOCK_DIR:-tests/locks}  # run_all.sh passes its own (build/locks/newest under --newest)
PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}
ROOT=${FA_PY314_ROOT:-/var/cache/fasterapi-asgi/sid-py314}
READY=$ROOT/.fa-ready  # written last: a chroot without it is a partial one, made again
UNAVAILABLE=75

unavailable() {  # REASON: the one line the test command shows, then out with $UNAVAILABLE
  echo "Python 3.14: NOT TESTED: $*" >&2
  exit "$UNAVAILABLE"
}

# --------------------------------------------------------------------------------------------------- pyenv's
# 3.14.Nt, the free-threaded build, is not this one (docs/architecture.md, "Free-threaded Python").
pyenv_py=$(find "$PYENV_ROOT/versions" -maxdepth 3 -path '*/versions/3.14.*[0-9]/bin/python' 2>/dev/null |
  sort -V | tail -n 1 || true)

run_tests() {  # RUNNER PYTHON [PYTEST ARGS...]: the environment and the build, then the tests (see the top)
  local run=$1 py=$2 started=$SECONDS  # RUNNER: env, or in_root for the chroot's
  shift 2
  "$run" "$py" -m pip install -q --disable-pip-version-check --require-hashes -r "$LOCK_DIR/test.txt"
  "$run" "$py" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  echo "Python 3.14: locked test environment and build in $((SECONDS - started)) s"
  "$run" "$py" -c 'import ssl, sys; print("Python 3.14:", sys.version.split()[0], "with", ssl.OPENSSL_VERSION)'
  if [ "$#" -gt 0 ]; then
    "$run" "$py" -m pytest -q -p no:cacheprovider "$@"
    return
  fi
  "$run" env FA_RELEASE_OUT=build/release-py314 "$py" -m pytest -q -p no:cacheprovider tests/release
  "$run" "$py" -m pytest -q -p no:cacheprovider tests/python
}

if [ -n "$pyenv_py" ]; then
  echo "Python 3.14: pyenv's ($pyenv_py)"
  run_tests env "$pyenv_py" "$@"
  exit 0
fi

# ------------------------------------------------------------------------------------------ Debian sid chroot
[ "$(id -u)" = 0 ] || unavailable "no pyenv 3.14, and making or entering the Debian sid chroot needs root"

# In the chroot: the interpreter with its headers and venv; the compiler and the headers the build needs (as
# run_all.sh's apt-get line); wrk, nghttp2-client (h2load) and curl, which tests run; git (tests/release).
PACKAGES=(python3.14 python3.14-dev python3.14-venv g++ libssl-dev zlib1g-dev wrk nghttp2-client curl git)
VENV=/opt/fa-venv  # in the chroot, first on its PATH: its python, and the tools the lock installs (patchelf)
HOST_CA=/usr/local/share/fasterapi-asgi/host-ca.crt  # in the chroot

mirror() {  # the Debian mirror the machine's apt uses (a deb822 .sources file or a one-line .list), else Debian's
  local uri
  uri=$(sed -n 's|^URIs:[[:space:]]*\([^[:space:]]*/debian/\{0,1\}\)[[:space:]]*$|\1|p' \
    /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1 || true)
  if [ -z "$uri" ]; then
    uri=$(sed -n 's|^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]\{1,\}\)\{0,1\}\([^[:space:]]*/debian/\{0,1\}\)[[:space:]].*|\2|p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n 1 || true)
  fi
  echo "${FA_PY314_MIRROR:-${uri:-http://deb.debian.org/debian}}"
}

mounts_under() {  # what is mounted at or under $ROOT, deepest first
  awk -v root="$ROOT" '$2 == root || index($2, root "/") == 1 { print $2 }' /proc/mounts | sort -r
}
unmount_all() {
  local point
  for point in $(mounts_under); do
    umount "$point" 2>/dev/null || umount -l "$point"
  done
}
# The checkout is bind-mounted into the chroot, and `rm --one-file-system` walks into a bind mount of the same
# filesystem: nothing is deleted while anything is mounted there.
remove_root() {
  unmount_all
  if [ -n "$(mounts_under)" ]; then
    echo "Python 3.14: still mounted under $ROOT, so not removing it: $(mounts_under | tr '\n' ' ')" >&2
    exit 1
  fi
  rm -rf --one-file-system "$ROOT"
}

# The environment inside: a clean one (the host's pip settings may name host paths), the network settings that
# can matter carried in, and pip pointed at the host's CA bundle when there is one (mount_all copies it in).
ROOT_ENV=("PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LANG=C.UTF-8
  TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1)
for name in http_proxy https_proxy no_proxy PIP_INDEX_URL PIP_DEFAULT_TIMEOUT; do
  [ -z "${!name:-}" ] || ROOT_ENV+=("$name=${!name}")
done
[ ! -f /etc/ssl/certs/ca-certificates.crt ] || ROOT_ENV+=("PIP_CERT=$HOST_CA")
in_root() {  # COMMAND...: run inside the chroot, in the checkout
  # shellcheck disable=SC2016  # expanded by the chroot's sh: $0 is the checkout, "$@" the command
  chroot "$ROOT" /usr/bin/env -i "${ROOT_ENV[@]}" /bin/sh -c 'cd "$0" && exec "$@"' "$CHECKOUT" "$@"
}

mount_all() {  # what the build and the tests use: /proc, /sys (read-only), /dev (with pts and shm), the checkout
  mkdir -p "$ROOT/proc" "$ROOT/sys" "$ROOT/dev" "$ROOT$CHECKOUT"
  # A machine that lets root chroot but not mount (a container without CAP_SYS_ADMIN) cannot run the tests here.
  local cannot="mounting into the chroot failed (it needs root allowed to mount)"
  mount -t proc proc "$ROOT/proc" || unavailable "$cannot"
  mount --bind -o ro /sys "$ROOT/sys" || unavailable "$cannot"  # test_pathsend reads a /sys file with a false size
  mount --bind /dev "$ROOT/dev" || unavailable "$cannot"
  mount --bind /dev/pts "$ROOT/dev/pts" || unavailable "$cannot"
  mount --bind /dev/shm "$ROOT/dev/shm" || unavailable "$cannot"
  # At its own path: the editable install's paths hold inside and out.
  mount --bind "$CHECKOUT" "$ROOT$CHECKOUT" || unavailable "$cannot"
  # Name resolution and the host's CA bundle, fresh on every run.
  cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$ROOT$(dirname "$HOST_CA")"
    cp /etc/ssl/certs/ca-certificates.crt "$ROOT$HOST_CA"
  fi
}

fail_make() {  # LOG REASON: the partial chroot removed, the log's end shown, then the one line
  tail -n 5 "$1" >&2
  remove_root
  unavailable "$2 (log: $1)"
}

make_root() {  # debootstrap, then the packages and a venv; each bounded; on any failure nothing is left
  local url log started
  url=$(mirror)
  log=$(dirname "$ROOT")/sid-py314.log
  mkdir -p "$(dirname "$ROOT")"
  remove_root
  started=$SECONDS
  echo "Python 3.14: making the Debian sid chroot $ROOT from $url (once; log: $log)"
  : >"$log"
  if ! command -v debootstrap >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 || unavailable "no pyenv 3.14, and no debootstrap or apt-get to make a chroot"
    timeout 300 env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update -qq &&
      apt-get install -y -qq --no-install-recommends debootstrap' >>"$log" 2>&1 ||
      fail_make "$log" "apt-get install debootstrap failed or took over 300 s"
  fi
  timeout --kill-after=30 900 debootstrap --variant=minbase sid "$ROOT" "$url" >>"$log" 2>&1 ||
    fail_make "$log" "debootstrap of Debian sid from $url failed or took over 900 s"
  # The mirror may be a snapshot, its Release files past their Valid-Until date.
  echo 'Acquire::Check-Valid-Until "false";' >"$ROOT/etc/apt/apt.conf.d/99fasterapi-snapshot"
  mount_all
  timeout --kill-after=30 900 chroot "$ROOT" /usr/bin/env -i "${ROOT_ENV[@]}" sh -c 'apt-get update -qq &&
    apt-get install -y -qq --no-install-recommends "$@" && apt-get clean' - "${PACKAGES[@]}" >>"$log" 2>&1 ||
    fail_make "$log" "apt-get install ${PACKAGES[*]} in the sid chroot failed or took over 900 s"
  in_root python3.14 -m venv "$VENV" >>"$log" 2>&1 || fail_make "$log" "python3.14 -m venv failed in the chroot"
  in_root python3.14 --version >"$READY"
  echo "Python 3.14: chroot made in $((SECONDS - started)) s"
}

# One run at a time per chroot: a second would unmount the first's mounts (below, and at its exit).
mkdir -p "$(dirname "$ROOT")"
exec 9>"$ROOT.lock"
if ! flock -n 9; then
  echo "Python 3.14: waiting for another run that uses $ROOT"
  flock 9
fi
trap unmount_all EXIT
unmount_all  # what a run that was killed left mounted
if [ -f "$READY" ] && [ -f "$ROOT$VENV/pyvenv.cfg" ] && [ -x "$ROOT/usr/bin/python3.14" ]; then
  mount_all
  echo "Python 3.14: reusing the Debian sid chroot $ROOT ($(cat "$READY"))"
else
  make_root
fi

run_tests in_root "$VENV/bin/python" "$@"
