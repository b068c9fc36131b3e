"""Each test row asked in several option orders (``data.test_option_orders=cyclic``): the orders shown, and the
answers mapped back to the row's own option order and averaged, so a letter-position bias cancels out."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from simlab.data.rows import SurveyRow

Variant = tuple[int, tuple[int, ...]]  # (row position, the order its options were shown in)


def given_order(rows: Sequence[SurveyRow]) -> list[Variant]:
    """Every row once, as it is."""
    return [(i, tuple(range(len(r.options)))) for i, r in enumerate(rows)]


def cyclic_shifts(k: int) -> list[tuple[int, tuple[int, ...]]]:
    """The K cyclic shifts of K options: (shift, order shown), option ``shift`` first."""
    return [(shift, tuple((shift + j) % k for j in range(k))) for shift in range(k)]


def merge_option_orders(predictions: dict[str, list[list[float]]], variants: dict[str, list[Variant]],
                        rows: dict[str, list[SurveyRow]]) -> dict[str, list[list[float]]]:
    """Per test row, the mean of its items' predictions mapped back to the row's own option order."""
    merged: dict[str, list[list[float]]] = {}
    for subset, items in predictions.items():
        subset_variants = variants[subset]
        if len(items) != len(subset_variants):
            raise RuntimeError(f"subset {subset}: {len(items)} predictions for {len(subset_variants)} test items")
        sums = [np.zeros(len(row.options)) for row in rows[subset]]
        counts = [0] * len(sums)
        for (row, order), probs in zip(subset_variants, items):
            sums[row][list(order)] += np.asarray(probs)
            counts[row] += 1
        merged[subset] = [(total / count).tolist() for total, count in zip(sums, counts)]
    return merged
