"""The Uniform baseline: 1/k for each of a row's k options."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts, uniform
from simlab.data.rows import SurveyRow


class UniformBaseline:
    """1/k for each of a row's k options."""

    name = "uniform"

    def __init__(self) -> None:
        self._counts = Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> UniformBaseline:
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        for row in rows:
            self._counts.add(row.subset, "rows")
        return [uniform(len(row.letters)) for row in rows]

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, **self._counts.as_dict(["rows"])}
