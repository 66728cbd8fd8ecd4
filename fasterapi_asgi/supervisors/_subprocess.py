"""Spawning a server child process for a supervisor (``--workers``, ``--reload``).

The child is a fresh interpreter (multiprocessing's ``spawn``: no state inherited from the supervisor but the
pickled arguments), given the supervisor's listening sockets and, when there is one, its stdin.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable
from multiprocessing.context import SpawnProcess
from typing import Any

from fasterapi_asgi.config import Config

multiprocessing.allow_connection_pickling()  # sockets travel to the child as duplicated descriptors
spawn_context = multiprocessing.get_context("spawn")


def _stdin_fileno() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):  # no stdin, or a replaced one without a descriptor
        return None


def spawn_process(config: Config, target: Callable[..., None], kwargs: dict[str, Any]) -> SpawnProcess:
    """A child process (not started) that sets up logging from ``config`` and calls ``target(**kwargs)``."""
    return spawn_context.Process(
        target=_child_main,
        kwargs={"config": config, "target": target, "kwargs": kwargs, "stdin_fileno": _stdin_fileno()},
    )


def _child_main(
    config: Config, target: Callable[..., None], kwargs: dict[str, Any], stdin_fileno: int | None
) -> None:
    if stdin_fileno is not None:
        sys.stdin = os.fdopen(stdin_fileno)  # a debugger in the child can still read the terminal
    config.configure_logging()
    try:
        target(**kwargs)
    except KeyboardInterrupt:
        pass  # the supervisor asked us to stop; no traceback
