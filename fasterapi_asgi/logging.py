"""Log formatters with uvicorn's output format (level prefix, colours on a tty, access lines)."""

from __future__ import annotations

import http
import logging
import sys
import urllib.parse
from collections.abc import Mapping
from copy import copy
from typing import Any, Literal

TRACE_LOG_LEVEL = 5

_ANSI_COLORS = {
    "red": 31,
    "green": 32,
    "yellow": 33,
    "blue": 34,
    "cyan": 36,
    "bright_red": 91,
    "bright_white": 97,
}


def style(text: str, fg: str | None = None, bold: bool = False) -> str:
    """Wrap ``text`` in ANSI escapes (foreground colour and/or bold)."""
    prefix = ""
    if fg is not None:
        prefix += f"\033[{_ANSI_COLORS[fg]}m"
    if bold:
        prefix += "\033[1m"
    return f"{prefix}{text}\033[0m"


class ColourizedFormatter(logging.Formatter):
    """Adds ``%(levelprefix)s`` ("INFO:     "), coloured when ``use_colors``.

    A record with ``extra={"color_message": ...}`` is formatted with that message when colours are on.
    """

    level_name_colors = {
        TRACE_LOG_LEVEL: "blue",
        logging.DEBUG: "cyan",
        logging.INFO: "green",
        logging.WARNING: "yellow",
        logging.ERROR: "red",
        logging.CRITICAL: "bright_red",
    }

    def __init__(
        self,
        fmt: str | None = None,
        datefmt: str | None = None,
        style: Literal["%", "{", "$"] = "%",
        use_colors: bool | None = None,
    ) -> None:
        self.use_colors = use_colors if use_colors in (True, False) else sys.stdout.isatty()
        super().__init__(fmt=fmt, datefmt=datefmt, style=style)

    def color_level_name(self, level_name: str, level_no: int) -> str:
        colour = self.level_name_colors.get(level_no)
        return style(level_name, fg=colour) if colour else level_name

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API name)
        recordcopy = copy(record)
        levelname = recordcopy.levelname
        separator = " " * (8 - len(levelname))
        if self.use_colors:
            levelname = self.color_level_name(levelname, recordcopy.levelno)
            if "color_message" in recordcopy.__dict__:
                recordcopy.msg = recordcopy.__dict__["color_message"]
                recordcopy.__dict__["message"] = recordcopy.getMessage()
        recordcopy.__dict__["levelprefix"] = levelname + ":" + separator
        return super().formatMessage(recordcopy)


class DefaultFormatter(ColourizedFormatter):
    """Formatter of the ``uvicorn`` and ``uvicorn.error`` loggers (uvicorn's names, so its configs apply)."""


class AccessFormatter(ColourizedFormatter):
    """Formats records whose args are ``(client_addr, method, full_path, http_version, status_code)``.

    Provides ``%(client_addr)s``, ``%(request_line)s`` ("GET /x?y=1 HTTP/1.1") and ``%(status_code)s``
    ("200 OK"), exactly as uvicorn's access formatter does.
    """

    status_code_colours = {1: "bright_white", 2: "green", 3: "yellow", 4: "red", 5: "bright_red"}

    def get_status_code(self, status_code: int) -> str:
        try:
            phrase = http.HTTPStatus(status_code).phrase
        except ValueError:
            phrase = ""
        status_and_phrase = f"{status_code} {phrase}"
        if self.use_colors:
            colour = self.status_code_colours.get(status_code // 100)
            if colour:
                return style(status_and_phrase, fg=colour)
        return status_and_phrase

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 (logging API name)
        recordcopy = copy(record)
        client_addr, method, full_path, http_version, status_code = recordcopy.args  # type: ignore[misc]
        request_line = f"{method} {full_path} HTTP/{http_version}"
        if self.use_colors:
            request_line = style(request_line, bold=True)
        recordcopy.__dict__.update(
            {
                "client_addr": client_addr,
                "request_line": request_line,
                "status_code": self.get_status_code(int(status_code)),  # type: ignore[call-overload,arg-type]
            }
        )
        return super().formatMessage(recordcopy)


def get_client_addr(scope: Mapping[str, Any]) -> str:
    """uvicorn's rendering of ``scope["client"]`` in log lines ("" for a Unix socket)."""
    client = scope.get("client")
    if not client:
        return ""
    host, port = client
    return f"{host}:{int(port)}"


def get_path_with_query_string(scope: Mapping[str, Any]) -> str:
    """uvicorn's (0.55) rendering of the request target in log lines: the path as the client sent it
    (``raw_path``, root_path included), then ``?query``; a ``"`` becomes ``%22`` so the field stays one."""
    raw_path = scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path is not None else urllib.parse.quote(scope["path"])
    if scope["query_string"]:
        path = "{}?{}".format(path, scope["query_string"].decode("ascii"))
    return path.replace('"', "%22")
