"""The paper's Avg_Culture baseline: the mean distribution of a question over the training countries."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts, normalised, uniform
from simlab.data.rows import SurveyRow

log = logging.getLogger(__name__)


class AvgCultureBaseline:
    """The paper's Avg_Culture: the mean distribution of a question over the training countries.

    A row whose question (its survey and ``question_id``: a Pew id can equal a WVS question number) was seen in
    training gets the mean of the training rows of that question whose option letters equal its own (the same
    letters in the same order). A seen question whose training rows all have other letters is counted as
    ``letter_mismatch`` and gets uniform; an unseen question gets uniform (``unseen``).
    """

    name = "avg_culture"

    def __init__(self) -> None:
        self._means: dict[tuple[str, str, tuple[str, ...]], Distribution] = {}
        self._countries: dict[tuple[str, str, tuple[str, ...]], int] = {}
        self._seen_questions: set[tuple[str, str]] = set()
        self._counts = Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> AvgCultureBaseline:
        groups: dict[tuple[str, str, tuple[str, ...]], list[tuple[float, ...]]] = defaultdict(list)
        for row in train_rows:
            groups[(row.survey, row.question_id, row.letters)].append(row.target)
        self._means = {key: normalised(np.mean(np.asarray(ts, dtype=np.float64), axis=0))
                       for key, ts in groups.items()}
        self._countries = {key: len(ts) for key, ts in groups.items()}
        self._seen_questions = {(row.survey, row.question_id) for row in train_rows}
        log.info("avg_culture: %d training rows, %d questions", len(train_rows), len(self._seen_questions))
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        predictions = []
        for row in rows:
            self._counts.add(row.subset, "rows")
            mean = self._means.get((row.survey, row.question_id, row.letters))
            if mean is not None:
                self._counts.add(row.subset, "seen")
                predictions.append(list(mean))
                continue
            if (row.survey, row.question_id) in self._seen_questions:
                self._counts.add(row.subset, "seen")
                self._counts.add(row.subset, "letter_mismatch")
            else:
                self._counts.add(row.subset, "unseen")
            predictions.append(uniform(len(row.letters)))
        return predictions

    def report(self) -> dict[str, Any]:
        return {
            "baseline": self.name,
            "train_questions": len(self._seen_questions),
            **self._counts.as_dict(["rows", "seen", "unseen", "letter_mismatch"]),
        }
