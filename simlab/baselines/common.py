"""Helpers the baselines share: the uniform distribution, normalising, naming a row in a report, counters."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution
from simlab.data.rows import SurveyRow


def uniform(k: int) -> Distribution:
    return [1.0 / k] * k


def normalised(values: Sequence[float]) -> Distribution:
    total = float(sum(values))
    return [float(v) / total for v in values]


def row_key(row: SurveyRow) -> dict[str, Any]:
    """How a row is named in a report: enough to find it again in its source file."""
    return {"subset": row.subset, "question_id": row.question_id, "country": row.country, "index": row.index}


class Counts:
    """Counters kept in total and by subset."""

    def __init__(self) -> None:
        self.total: dict[str, int] = defaultdict(int)
        self.by_subset: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def add(self, subset: str, name: str, amount: int = 1) -> None:
        self.total[name] += amount
        self.by_subset[subset][name] += amount

    def as_dict(self, names: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {name: int(self.total.get(name, 0)) for name in names}
        out["by_subset"] = {
            subset: {name: int(counts.get(name, 0)) for name in names} for subset, counts in self.by_subset.items()
        }
        return out
