"""The paper's Avg_Culture baseline: the mean distribution of a question over the training countries; for a
subgroup of a country (a population row), the same subgroup's mean over the training countries."""

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

GroupKey = tuple[str, str, tuple[str, ...], tuple]  # (survey, question id, option letters, attributes)


def _key(row: SurveyRow) -> GroupKey:
    return (row.survey, row.question_id, row.letters, row.attributes)


def _mean(targets: list[tuple[float, ...]]) -> Distribution:
    return normalised(np.mean(np.asarray(targets, dtype=np.float64), axis=0))


def _any_other(countries: set[str] | None, row: SurveyRow) -> bool:
    """Whether a country other than the row's own is among ``countries``."""
    return bool(countries) and bool(countries - {row.country})


class AvgCultureBaseline:
    """The paper's Avg_Culture: the mean distribution of a question over the training countries.

    A row whose question (its survey and ``question_id``: a Pew id can equal a WVS question number) was seen in
    training gets the mean of the training rows of that question whose option letters equal its own (the same
    letters in the same order) and whose subgroup (``attributes``; ``()`` for a whole country) is its own. The
    row's own country never counts: a training row gets the other training countries' mean (test rows are of
    other countries or other questions, so for them this changes nothing). A seen question whose training rows
    all have other letters is counted as ``letter_mismatch`` and gets uniform; a seen question never asked of the
    row's subgroup is counted as ``unseen_subgroup`` and gets uniform; an unseen question gets uniform (``unseen``).
    """

    name = "avg_culture"

    def __init__(self) -> None:
        self._means: dict[GroupKey, Distribution] = {}
        self._targets: dict[GroupKey, list[tuple[str, tuple[float, ...]]]] = {}
        self._seen_questions: dict[tuple[str, str], set[str]] = {}
        self._seen_letters: dict[tuple[str, str, tuple[str, ...]], set[str]] = {}
        self._counts = Counts()

    def fit(self, train_rows: Sequence[SurveyRow]) -> AvgCultureBaseline:
        groups: dict[GroupKey, list[tuple[str, tuple[float, ...]]]] = defaultdict(list)
        questions, letters = defaultdict(set), defaultdict(set)
        for row in train_rows:
            groups[_key(row)].append((row.country, row.target))
            questions[(row.survey, row.question_id)].add(row.country)
            letters[(row.survey, row.question_id, row.letters)].add(row.country)
        self._targets = dict(groups)
        self._means = {key: _mean([t for _, t in answers]) for key, answers in groups.items()}
        self._seen_questions, self._seen_letters = dict(questions), dict(letters)
        log.info("avg_culture: %d training rows, %d questions, %d (question, subgroup) pairs",
                 len(train_rows), len(self._seen_questions), len(self._means))
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        predictions = []
        for row in rows:
            self._counts.add(row.subset, "rows")
            answers = self._targets.get(_key(row), [])
            others = [t for c, t in answers if c != row.country]
            if others:
                self._counts.add(row.subset, "seen")
                # a training row gets the other training countries' mean; any other row the mean of all
                predictions.append(list(self._means[_key(row)]) if len(others) == len(answers) else _mean(others))
                continue
            if _any_other(self._seen_letters.get((row.survey, row.question_id, row.letters)), row):
                self._counts.add(row.subset, "seen")
                self._counts.add(row.subset, "unseen_subgroup")
            elif _any_other(self._seen_questions.get((row.survey, row.question_id)), row):
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
            **self._counts.as_dict(["rows", "seen", "unseen", "letter_mismatch", "unseen_subgroup"]),
        }
