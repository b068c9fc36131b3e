"""The survey prior alone as a baseline (the prior-anchored simulator without model logits)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from simlab.baselines.base import Distribution
from simlab.baselines.common import Counts
from simlab.data.rows import SurveyRow


class SurveyPriorBaseline:
    """The prior-anchored simulator's prior alone (:class:`simlab.simulator.prior.SurveyPrior`), no model logits:
    what the survey's own answers say about a row (the other training countries' answers to its question, else the
    answer-position prior), so the model's contribution can be read off against it.

    With ``similarity`` the training countries are weighted by the language model's country similarity (the
    language model is passed by :meth:`set_language_model`, as for JSON-ZS).
    """

    name = "survey_prior"

    def __init__(self, similarity: bool = False, fallback: str = "position", smoothing: float = 0.01) -> None:
        self.build = {"similarity": similarity, "fallback": fallback, "smoothing": smoothing}
        self.language_model = None
        self.prior = None
        self._counts = Counts()

    def set_language_model(self, language_model: Any) -> SurveyPriorBaseline:
        self.language_model = language_model
        return self

    def fit(self, train_rows: Sequence[SurveyRow], countries: Sequence[str] = ()) -> SurveyPriorBaseline:
        from simlab.simulator.prior import build_prior

        lm = self.language_model
        self.prior = build_prior(train_rows, model=lm.model if lm else None, tokenizer=lm.tokenizer if lm else None,
                                 countries=countries, **self.build)
        return self

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]:
        if self.prior is None:
            raise RuntimeError("fit the survey prior on the training rows first")
        predictions = []
        for row in rows:
            self._counts.add(row.subset, "rows")
            self._counts.add(row.subset, "question_prior" if self.prior.covers(row) else "fallback")
            predictions.append(self.prior.prior(row).tolist())
        return predictions

    def report(self) -> dict[str, Any]:
        return {"baseline": self.name, **self.prior.settings,
                **self._counts.as_dict(["rows", "question_prior", "fallback"])}
