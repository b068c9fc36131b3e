"""What every baseline offers run.py's ``task=baseline``: a :class:`Baseline` is built from plain values (so Hydra
can make it with ``_target_``) and has

* ``fit(train_rows, ...) -> self``: learn from the training rows (a no-op where nothing is learnt),
* ``predict(rows) -> list[list[float]]``: one distribution per row, in the row's option order, summing to 1,
* ``report() -> dict``: counts worth recording (fallbacks, unparsed outputs), totals over every ``predict``
  call so far plus a breakdown by subset,

and, where it needs the run's language model (JSON-ZS, the survey prior with similarity), ``set_language_model``
(:class:`NeedsLanguageModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from simlab.data.rows import SurveyRow

Distribution = list[float]


@runtime_checkable
class Baseline(Protocol):
    """A baseline: fitted on the training rows, then one distribution per row."""

    name: str

    def fit(self, train_rows: Sequence[SurveyRow], *args: Any, **kwargs: Any) -> Baseline: ...

    def predict(self, rows: Sequence[SurveyRow]) -> list[Distribution]: ...

    def report(self) -> dict[str, Any]: ...


@runtime_checkable
class NeedsLanguageModel(Protocol):
    """A baseline that uses the run's language model (a :class:`simlab.model.LanguageModel`)."""

    def set_language_model(self, language_model: Any) -> Any: ...
