"""Reading a model's JSON answer (option letter -> percentage) into a distribution, leniently."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution

_OBJECT = re.compile(r"\{[^{}]*\}", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*(?=[}\]])")
_PAIR = re.compile(
    r"""(?P<key>"[^"]*"|'[^']*'|[^,:{}"']+?)\s*[:=]\s*(?P<value>"[^"]*"|'[^']*'|[^,{}"']+)""", re.DOTALL
)
_KEY_PAREN = re.compile(r"^\(\s*([A-Za-z])\s*\)")  # "(A)", "(A)Very important"
_KEY_PLAIN = re.compile(r"^([A-Za-z])(?:$|[).:\]\s-])")  # "A", "A)", "A.", "A: ...", but not "Agree"
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")


def _letter_of(key: str) -> str | None:
    key = key.strip().strip("\"'").strip()
    key = re.sub(r"^option\s+", "", key, flags=re.IGNORECASE)
    match = _KEY_PAREN.match(key) or _KEY_PLAIN.match(key)
    return match.group(1).upper() if match else None


def _number_of(value: Any) -> float | None:
    """A share as a float: numbers, or strings like "40", "40%", "0.4", " 40 % "; None if not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        text = value.strip().strip("\"'").strip().rstrip("%").strip()
        if text.lower() in ("nan", "inf", "+inf", "-inf", "infinity", "-infinity"):
            return float(text.replace("infinity", "inf"))
        if _NUMBER.match(text):
            return float(text)
    return None


def _pairs_of(obj_text: str) -> list[tuple[str, Any]] | None:
    """Key/value pairs of one {...} object: JSON first, then with single quotes and trailing commas repaired,
    then a lenient key: value scan (unquoted keys, apostrophes inside strings)."""
    repaired = _TRAILING_COMMA.sub("", obj_text)
    for candidate in (obj_text, repaired, repaired.replace("'", '"')):
        try:
            pairs = json.loads(candidate, object_pairs_hook=list, parse_constant=lambda c: float(c))
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(pairs, list):
            return pairs
    body = obj_text.strip()[1:-1]
    found = [(m.group("key"), m.group("value")) for m in _PAIR.finditer(body)]
    return found or None


def _distribution_of(pairs: list[tuple[str, Any]], letters: Sequence[str]) -> Distribution | None:
    wanted = set(letters)
    shares: dict[str, float] = {}
    for key, value in pairs:
        if not isinstance(key, str):
            continue
        letter = _letter_of(key)
        if letter is None or letter not in wanted or letter in shares:
            continue
        number = _number_of(value)
        if number is None or math.isnan(number) or math.isinf(number) or number < 0:
            return None
        shares[letter] = number
    values = [shares.get(letter, 0.0) for letter in letters]
    total = sum(values)
    if not shares or total <= 0 or math.isinf(total):
        return None
    return [v / total for v in values]


def parse_json_distribution(text: str, letters: Sequence[str]) -> Distribution | None:
    """Parse a model's JSON answer into a distribution over ``letters`` (in that order), or None.

    Takes the first ``{...}`` object (without nested braces) in ``text`` that yields a usable distribution, so code
    fences and text around it do not matter. Tolerates single quotes, trailing commas and unquoted keys; keys may be
    ``"A"``, ``"(A)"``, ``"A)"``, ``"A."`` or ``"(A)Very important"``; values may be numbers or strings such as
    ``"40%"``, as percentages or proportions (the shares are normalised, so both give the same result). Keys that
    are not among ``letters`` are ignored and missing letters get 0. An object whose shares for ``letters`` are
    all zero or absent, or contain a negative, NaN, infinite or non-numeric value, is not usable; None when no
    object is.
    """
    if not isinstance(text, str):
        return None
    for match in _OBJECT.finditer(text):
        pairs = _pairs_of(match.group(0))
        if pairs:
            distribution = _distribution_of(pairs, letters)
            if distribution is not None:
                return distribution
    return None
