"""The argument parser of every ``simlab <command>``: the same program name in every usage line whether the
command runs as ``simlab <command>`` or ``python -m simlab.<module>``, and a bad argument as one line
(``simlab <command>: error: ...``, exit 2), as :func:`simlab.cli.main` reports every user error."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error that points at ``--help`` instead of printing the usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parser(command: str, description: str | None = None, **kwargs) -> ArgumentParser:
    """The parser of ``simlab <command>``."""
    return ArgumentParser(prog=f"simlab {command}", description=description, **kwargs)


def fail(command: str, message: str, code: int = 2) -> int:
    """Print ``simlab <command>: error: <message>`` on one line to stderr; returns the exit code."""
    print(f"simlab {command}: error: {' '.join(str(message).split())}", file=sys.stderr)
    return code
