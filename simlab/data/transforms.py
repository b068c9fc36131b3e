"""The paper's evaluation settings as seeded row transforms.

* [ctrl] (``replace_country``): the prompt names a different, randomly drawn country while the target stays
  the real country's, which measures how much a model's prediction depends on the country at all.
* shuffled options (``shuffle_options``): options in a random order, relabelled A, B, C... in the new order,
  with the target permuted to match, which measures sensitivity to option order and letter position.

Each row gets its own generator seeded by (seed, file, row index), so a row's transform does not depend on
which other rows were loaded or in which order.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from simlab.data.rows import OPTION_PATTERN, SurveyRow


def row_rng(seed: int, row: SurveyRow, purpose: str, key: str | None = None) -> random.Random:
    """The row's own generator; ``key`` replaces the row's identity (e.g. one draw per question). The identity is
    the file as configured and the row's index, never the folder it was read from: draws are the same anywhere."""
    identity = f"{row.file or row.source}:{row.index}"
    return random.Random(f"{purpose}:{seed}:{key if key is not None else identity}")


def other_country(row: SurveyRow, countries: Sequence[str], seed: int) -> str:
    """The [ctrl] draw: a country from ``countries`` other than the row's own, seeded by the row."""
    others = sorted(set(countries) - {row.country})
    if not others:
        raise ValueError(f"country control needs at least one other country than {row.country!r}")
    return row_rng(seed, row, "ctrl").choice(others)


def replace_country(row: SurveyRow, countries: Sequence[str], seed: int, country_pattern: str) -> SurveyRow:
    """The row with its prompt's country replaced by another one drawn from ``countries`` (never itself)."""
    new_country = other_country(row, countries, seed)
    match = re.compile(country_pattern).search(row.instruction)
    if match is None:  # parse_row already checked this; kept for rows built by hand
        raise ValueError(f"{row.source}: row {row.index}: instruction names no country")
    start, end = match.span("country")
    instruction = row.instruction[:start] + new_country + row.instruction[end:]
    return replace(row, instruction=instruction, prompt_country=new_country)


def shuffle_options(row: SurveyRow, seed: int, key: str | None = None) -> SurveyRow:
    """The row with its options in a seeded random order, relabelled A, B, C... and the target permuted. Rows with
    the same ``key`` (e.g. a question) get the same order; by default each row its own."""
    order = list(range(len(row.options)))
    row_rng(seed, row, "shuffle", key).shuffle(order)
    return reorder_options(row, order)


def rotate_options(row: SurveyRow, shift: int) -> SurveyRow:
    """The row with its options cyclically shifted by ``shift`` (option ``shift`` first), relabelled A, B, C..."""
    k = len(row.options)
    return reorder_options(row, [(shift + i) % k for i in range(k)])


def relabelled_letters(k: int) -> tuple[str, ...]:
    """The letters a reordered row of ``k`` options shows: A, B, C... whatever letters the data used."""
    return tuple(string.ascii_uppercase[:k])


def reorder_options(row: SurveyRow, order: Sequence[int]) -> SurveyRow:
    """The row showing its options in ``order`` (``order[i]`` = the row's option shown at position i), relabelled
    A, B, C..., the target permuted; ``option_order`` keeps the positions in the data's original order."""
    letters = relabelled_letters(len(order))
    labels = [OPTION_PATTERN.match(row.options[i]).group("label") for i in order]  # type: ignore[union-attr]
    return replace(
        row,
        options=tuple(f"({letter}){label}" for letter, label in zip(letters, labels)),
        letters=letters,
        target=tuple(row.target[i] for i in order),
        option_order=tuple(row.option_order[i] for i in order) if row.option_order else tuple(order),
    )


def permuted(prior: np.ndarray, option_order: Sequence[int] | None) -> np.ndarray:
    """The prior in a shuffled row's displayed order (``option_order[i]`` = original position of option i)."""
    return prior if option_order is None else prior[list(option_order)]
