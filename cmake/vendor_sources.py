"""Put the pinned third-party C sources the build needs into third_party/, for the sdist.

Usage: python cmake/vendor_sources.py [DEST]      (DEST defaults to third_party/ beside this folder)

The release process runs this (the in-tree build backend, cmake/fa_build_backend.py, calls it from
build_sdist), so an sdist builds without downloading anything but its Python build requirements. The git
repository never holds these files: third_party/ is ignored there. What is copied, and only that:

- libuv's public headers, from the pinned uvloop sdist's vendor/libuv/include (the libuv *code* at run time is
  the one inside the installed uvloop; see docs/architecture.md, "Dependencies");
- llhttp's release C sources and header, from the pinned httptools sdist's vendor/llhttp;
- nghttp2's library sources (lib/), from the pinned ngh2 sdist's vendor/nghttp2;
- each project's licence files.

The pins (versions and SHA-256 of the sdists) are read from CMakeLists.txt, their one home; each sdist is
checked against its checksum before anything is copied (cmake/fetch_sdist.py). third_party/PINS records what
was vendored; CMakeLists.txt refuses a third_party/ whose record does not match its pins.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# (package, pin prefix in CMakeLists.txt, files to copy: path in the sdist -> path in third_party/)
VENDORED = (
    (
        "uvloop",
        "FA_UVLOOP",
        (
            ("vendor/libuv/include", "libuv/include"),
            ("vendor/libuv/LICENSE", "libuv/LICENSE"),
        ),
    ),
    (
        "httptools",
        "FA_HTTPTOOLS",
        (
            ("vendor/llhttp/include", "llhttp/include"),
            ("vendor/llhttp/src", "llhttp/src"),
            ("vendor/llhttp/LICENSE-MIT", "llhttp/LICENSE-MIT"),
        ),
    ),
    (
        "ngh2",
        "FA_NGH2",
        (
            ("vendor/nghttp2/lib", "nghttp2/lib"),
            ("vendor/nghttp2/COPYING", "nghttp2/COPYING"),
        ),
    ),
)


def read_pins(cmakelists: Path) -> dict[str, str]:
    """The `set(FA_..._VERSION "...")` and `set(FA_..._SHA256 "...")` lines of CMakeLists.txt."""
    pattern = r'^set\((FA_[A-Z0-9]+_(?:VERSION|SHA256)) "([^"]+)"\)'
    pins = dict(re.findall(pattern, cmakelists.read_text(), re.M))
    for _, prefix, _ in VENDORED:
        for suffix in ("_VERSION", "_SHA256"):
            if prefix + suffix not in pins:
                raise SystemExit(f"vendor_sources: {prefix}{suffix} is not set in {cmakelists}")
    return pins


def pins_record(pins: dict[str, str]) -> str:
    """The text of third_party/PINS; CMakeLists.txt compares it with its own pins."""
    lines = [f"{name} {pins[prefix + '_VERSION']} {pins[prefix + '_SHA256']}" for name, prefix, _ in VENDORED]
    return "\n".join(lines) + "\n"


def vendor(dest: Path, cache: Path) -> None:
    pins = read_pins(ROOT / "CMakeLists.txt")
    record = pins_record(pins)
    if (dest / "PINS").is_file() and (dest / "PINS").read_text() == record:
        return  # already vendored at these pins
    if dest.exists():
        shutil.rmtree(dest)
    staging = Path(tempfile.mkdtemp(prefix=".third_party-", dir=dest.parent))
    try:
        for name, prefix, files in VENDORED:
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "cmake" / "fetch_sdist.py"),
                    name,
                    pins[prefix + "_VERSION"],
                    pins[prefix + "_SHA256"],
                    str(cache),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(out.stderr.strip() or f"vendor_sources: fetching {name} failed")
            source = Path(out.stdout.strip())
            for src, dst in files:
                origin, target = source / src, staging / dst
                target.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(origin, target)
                else:
                    shutil.copy2(origin, target)
        (staging / "PINS").write_text(record)
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str]) -> int:
    dest = Path(argv[1]).resolve() if len(argv) > 1 else ROOT / "third_party"
    vendor(dest, ROOT / "build" / "_registry")
    print(dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
