"""Fetch a pinned source distribution from the package index pip is configured for, verify it, unpack it.

Usage: python fetch_sdist.py NAME VERSION SHA256 DEST_DIR

Only the C sources/headers inside the sdist are used by the build (llhttp from httptools, libuv headers from
uvloop). The artifact is verified against the pinned SHA-256 before anything is extracted; a cached, verified
tarball in DEST_DIR is reused. Exits non-zero with a one-line reason on any failure.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str]) -> int:
    name, version, expected, dest = argv[1], argv[2], argv[3].lower(), Path(argv[4])
    dest.mkdir(parents=True, exist_ok=True)
    tarball = dest / f"{name}-{version}.tar.gz"
    if not tarball.exists() or sha256_of(tarball) != expected:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            # Only this package as source; its build requirements (pip reads the sdist's metadata with
            # them) may be wheels: forcing those to source too compiled Cython, minutes per build.
            "--no-binary",
            name,
            "--no-deps",
            "--no-build-isolation",
            f"{name}=={version}",
            "-d",
            str(dest),
        ]
        # pip prepares the sdist's metadata with that package's own build backend. Run from inside our
        # build backend, the environment names our backend's path (pyproject_hooks); the nested build must
        # not see it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("_PYPROJECT_HOOKS", "PEP517_"))}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if not tarball.exists():
            # --no-build-isolation needs the build backend installed; retry with isolation (slower).
            cmd.remove("--no-build-isolation")
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if not tarball.exists():
            sys.stderr.write(
                f"fetch_sdist: could not download {name}=={version}: {proc.stderr.strip()[-400:]}\n"
            )
            return 1
    actual = sha256_of(tarball)
    if actual != expected:
        sys.stderr.write(
            f"fetch_sdist: checksum mismatch for {tarball.name}: expected {expected}, got {actual}\n"
        )
        tarball.unlink()
        return 1
    out = dest / f"{name}-{version}"
    stamp = out / ".fetched"
    if not stamp.exists():
        with tarfile.open(tarball) as tf:
            tf.extractall(dest, filter="data")
        stamp.write_text(expected)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
