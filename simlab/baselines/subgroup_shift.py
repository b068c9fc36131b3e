"""The breakdown use's second baseline (a country's overall shares are known, its subgroups' are not;
:mod:`simlab.simulator.breakdown`): the country's shares moved by the training countries' average subgroup shift.
Reads a row's ``country_target``, never its own shares."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts
from simlab.data.rows import SurveyRow
from simlab.simulator.breakdown import DEFAULT_EPS, SubgroupShift

log = logging.getLogger(__name__)


class SubgroupShiftBaseline:
    """The country's overall shares moved by the average subgroup shift of the training countries
    (:class:`simlab.simulator.breakdown.SubgroupShift`): per question and subgroup, the mean over the training
    countries (never the row's own) of log(p_subgroup + eps) - log(p_country + eps). A row whose question or
    subgroup no other training country answered keeps its country's shares (counted as ``no_shift`` and logged).
    ``smoothing``: the weight of uniform mixed in (0: the shifted shares as they are)."""

    name = "subgroup_shift"

    def __init__(self, eps: float = DEFAULT_EPS, smoothing: float = 0.0) -> None:
        if not 0 <= smoothing < 1:
            raise ValueError(f"subgroup_shift smoothing must be in [0, 1), got {smoothing}")
        self.eps, self.smoothing = float(eps), float(smoothing)
        self.shifts: SubgroupShift | None = None
        self._counts = Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> SubgroupShiftBaseline:
        self.shifts = SubgroupShift(train_rows, self.eps)
        log.info("subgroup_shift: shifts of %d (question, subgroup) pairs from %d training rows (eps %g)",
                 self.shifts.keys, len(train_rows), self.eps)
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        if self.shifts is None:
            raise RuntimeError("subgroup_shift: call fit(train_rows) before predict")
        predictions, unshifted = [], 0
        for row in rows:
            self._counts.add(row.subset, "rows")
            shares = self.shifts.predict(row)
            if self.shifts.shift(row) is None:
                self._counts.add(row.subset, "no_shift")
                unshifted += 1
            predictions.append(((1 - self.smoothing) * shares + self.smoothing / len(shares)).tolist())
        if unshifted:
            log.info("subgroup_shift: %d of %d rows have a question or subgroup no other training country answered: "
                     "their country's shares (shift 0)", unshifted, len(rows))
        return predictions

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, "eps": self.eps, "smoothing": self.smoothing,
                "train_pairs": self.shifts.keys if self.shifts is not None else 0,
                **self._counts.as_dict(["rows", "no_shift"])}
