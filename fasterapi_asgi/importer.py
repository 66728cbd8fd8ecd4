"""Resolve ``"module:attribute"`` import strings, with uvicorn's error messages."""

from __future__ import annotations

import importlib
from typing import Any


class ImportFromStringError(Exception):
    """The import string is malformed, its module does not exist, or its attribute is missing."""


def import_from_string(import_str: Any) -> Any:
    """Return the object named by ``"package.module:attr.subattr"``; non-strings are returned unchanged.

    An ``ImportError`` raised *inside* an existing module is re-raised as is (it is the user's bug, and
    its traceback is the useful part); only a missing top-level module becomes ``ImportFromStringError``.
    """
    if not isinstance(import_str, str):
        return import_str

    module_str, _, attrs_str = import_str.partition(":")
    if not module_str or not attrs_str:
        raise ImportFromStringError(f'Import string "{import_str}" must be in format "<module>:<attribute>".')

    try:
        module = importlib.import_module(module_str)
    except ModuleNotFoundError as exc:
        if exc.name != module_str:
            raise exc from None
        raise ImportFromStringError(f'Could not import module "{module_str}".') from None

    instance: Any = module
    try:
        for attr_str in attrs_str.split("."):
            instance = getattr(instance, attr_str)
    except AttributeError:
        raise ImportFromStringError(f'Attribute "{attrs_str}" not found in module "{module_str}".') from None
    return instance
