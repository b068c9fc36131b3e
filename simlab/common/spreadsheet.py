"""CSV cells a spreadsheet would run as formulas: text starting with =, +, -, @, tab or carriage return (an option
label such as ``=HYPERLINK(...)`` from a shared questions file, a job label from a ``+key=value`` override) is
written with a leading ``'``, the usual escape, and read back without it."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_cell(value):
    """``value`` as a CSV cell a spreadsheet shows as text: formula-like strings prefixed with ``'``; anything else
    (numbers, None, plain text) unchanged."""
    return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def unescaped(text: str) -> str:
    """A cell as :func:`spreadsheet_cell` wrote it, read back: ``'=x`` is ``=x`` again."""
    return text[1:] if text.startswith("'") and text[1:].startswith(FORMULA_STARTS) else text
