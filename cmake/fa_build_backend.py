"""The PEP 517 build backend: scikit-build-core, with the pinned C sources vendored into the sdist.

pyproject.toml names this module (``backend-path = ["cmake"]``). Everything is scikit-build-core's except:

- ``build_sdist`` first vendors the pinned, checksum-verified libuv headers and llhttp sources into
  third_party/ (cmake/vendor_sources.py), so the sdist builds with no download but its Python build
  requirements;
- the build requirements include pip only when a build will have to fetch those sources itself (a git checkout
  without third_party/, or an sdist being made): cmake/fetch_sdist.py downloads them with ``pip download``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from scikit_build_core.build import (
    build_editable,
    build_wheel,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)
from scikit_build_core.build import build_sdist as _build_sdist
from scikit_build_core.build import (
    get_requires_for_build_editable as _requires_editable,
)
from scikit_build_core.build import (
    get_requires_for_build_sdist as _requires_sdist,
)
from scikit_build_core.build import (
    get_requires_for_build_wheel as _requires_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

ROOT = Path(__file__).resolve().parent.parent
FETCH_REQUIREMENT = "pip>=23"


def _needs_fetch() -> bool:
    return not (ROOT / "third_party" / "PINS").is_file()


def get_requires_for_build_sdist(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_requires_sdist(config_settings), *([FETCH_REQUIREMENT] if _needs_fetch() else [])]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_requires_wheel(config_settings), *([FETCH_REQUIREMENT] if _needs_fetch() else [])]


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*_requires_editable(config_settings), *([FETCH_REQUIREMENT] if _needs_fetch() else [])]


def build_sdist(sdist_directory: str, config_settings: dict[str, Any] | None = None) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "cmake" / "vendor_sources.py")], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"vendoring the pinned C sources failed: {proc.stderr.strip()}")
    return _build_sdist(sdist_directory, config_settings)
