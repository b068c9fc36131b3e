"""The breakdown use's first baseline (a country's overall shares are known, its subgroups' are not;
:mod:`simlab.simulator.breakdown`): each subgroup gets its country's overall shares. Reads a row's
``country_target``, never its own shares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts
from simlab.data.rows import SurveyRow
from simlab.simulator.breakdown import country_shares


class CountrySharesBaseline:
    """Each subgroup gets its country's overall shares: what a national result says without crosstabs."""

    name = "country_shares"

    def __init__(self) -> None:
        self._counts = Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> CountrySharesBaseline:
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        predictions = []
        for row in rows:
            shares = country_shares(row)
            self._counts.add(row.subset, "rows")
            predictions.append((shares / shares.sum()).tolist())
        return predictions

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, **self._counts.as_dict(["rows"])}
