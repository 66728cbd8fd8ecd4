"""``--reload``: a supervisor process that restarts the server process when watched files change.

(Being written: see issue 11.)
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from fasterapi_asgi.config import Config


class ChangeReload:
    def __init__(self, config: Config, target: Callable[..., None], sockets: list[socket.socket]) -> None:
        raise NotImplementedError("--reload is not implemented yet")

    def run(self) -> None:
        raise NotImplementedError
