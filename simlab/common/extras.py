"""Optional features live in pip extras (pyproject.toml): importing one that is not installed is one clear error
that names the extra, never a bare ModuleNotFoundError from deep inside."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtra(ImportError):
    """A feature whose packages are in an extra that is not installed; the message names the pip command."""

    def __init__(self, what: str, extra: str):
        self.extra = extra
        super().__init__(f"{what} needs the extra {extra!r}: pip install \"simlab[{extra}]\"")


def require(module: str, extra: str, what: str) -> ModuleType:
    """``import module``, or :class:`MissingExtra` naming ``extra`` when it (or a package it needs) is missing."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingExtra(f"{what} ({err.name} is not installed)", extra) from err
