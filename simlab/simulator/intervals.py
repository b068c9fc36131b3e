"""Prediction intervals on every simulated option share: split conformal, calibrated on the valid split's questions.

For a predicted share p of an option and its true share y, the **score** is |y - p| / s(p), and the interval at
level L is [p - q·s(p), p + q·s(p)] clipped to [0, 1], where q is the conformal quantile of the calibration scores.

**Questions are the exchangeable units.** A question's rows (its countries or populations) move together: when the
model misreads a question, it misses on every country of it. Row-level conformal would treat those rows as
independent draws and promise a coverage that a new question does not get. Here each calibration question j gets
its coverage C_j(t) = the mean over its rows of the fraction of the row's options with score <= t, and

    q = min { t : sum_j C_j(t) >= L (m + 1) }        (m calibration questions)

which is conformal risk control (Angelopoulos et al., 2022) with the loss 1 - C_j, bounded by 1 and monotone in t:
for a new question exchangeable with the calibration ones, the expected fraction of its shares inside their
intervals is at least L. With one share per question it is the usual split-conformal quantile with the (m + 1)
correction. It targets the quantity the metric ``coverage_90`` measures (the share of true shares inside), unlike
a per-question maximum of the scores, which covers every share of a question at once: on valid (below) that
simultaneous scheme covered 99.9% of held-out shares with intervals 0.95 wide, useless. Fewer than L / (1 - L)
questions (9 at 90%) cannot certify L: the intervals are then the whole [0, 1] (``quantile`` None) and a warning
says so. The price of the (m + 1) correction is over-coverage when m is small: C1-Q2 has 35 questions, so the fit
asks ~92.6% of the calibration shares covered, and a half of them (17) ~95%.

**The score** makes intervals narrow where the model is sure. The default, ``binomial``, scales by
s(p) = sqrt(p (1 - p)) + delta, the shape of a share's sampling spread: a share predicted near 0 or 1 gets a narrow
interval, one near 1/2 the widest; ``delta`` (0.05) keeps the scale away from 0, so a model that is sure and wrong
(p = 0.001 for a true 0.3) gets a large score rather than an infinite one (0.01 to 0.2 changed the width by under
0.02 below). The alternatives: ``absolute`` (s = 1: the same width for every share) and ``entropy``
(s = H(row) / log K + delta: one width per row, narrow when the predicted row is peaked). Chosen on the valid split
only: a smoke fine-tune of the embedded SmolLM2 (12 steps, 240 C1-Q2 rows covering all 35 questions, temperature
fitted on them), 20 random halvings of the questions, fitted on one half and measured on the other
(``python -m simlab.analysis.intervals <run dir> --calibrate``): held-out coverage / mean width were binomial
0.952 / 0.624, entropy 0.943 / 0.695, absolute 0.943 / 0.694 (without the temperature 0.947 / 0.732,
0.935 / 0.806, 0.937 / 0.792). Every score covers at least L; ``binomial`` is the narrowest, hence the default.
If a shifted subset (unseen countries or questions) is covered less than L, the remedy is a wider level
(``intervals.level=0.95``), checked on valid the same way.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from simlab.metrics.intervals import check_level, level_suffix

log = logging.getLogger(__name__)

SCORES = ("binomial", "entropy", "absolute")
DEFAULT_SCORE = "binomial"
DEFAULT_LEVEL = 0.9
DEFAULT_DELTA = 0.05
_SUM_TOLERANCE = 1e-9  # sum_j C_j(t) is a float sum of weights: L (m + 1) is met within this


def share_scale(pred: Sequence[float], score: str = DEFAULT_SCORE, delta: float = DEFAULT_DELTA) -> np.ndarray:
    """s(p) for each option of one predicted row (see the module's docstring)."""
    p = np.clip(np.asarray(pred, dtype=np.float64), 0.0, 1.0)
    if score == "absolute":
        return np.ones_like(p)
    if score == "binomial":
        return np.sqrt(p * (1.0 - p)) + delta
    if score == "entropy":
        if p.size < 2:
            return np.full_like(p, delta)
        total = p.sum()
        q = p / total if total > 0 else np.full_like(p, 1.0 / p.size)
        entropy = -float(np.sum(q[q > 0] * np.log(q[q > 0])))
        return np.full_like(p, entropy / math.log(p.size) + delta)
    raise ValueError(f"interval score must be one of {', '.join(SCORES)}, got {score!r}")


def _check_settings(score: str, delta: float) -> float:
    if score not in SCORES:
        raise ValueError(f"interval score must be one of {', '.join(SCORES)}, got {score!r}")
    delta = float(delta)
    if not (math.isfinite(delta) and delta > 0):
        raise ValueError(f"interval delta must be a finite number > 0, got {delta!r}")
    return delta


@dataclass(frozen=True)
class ConformalIntervals:
    """Fitted intervals: the level, the score and its ``delta``, the conformal ``quantile`` (None: too few
    questions, every interval is [0, 1]), what they were fitted on, and (optionally) the split-half check."""

    level: float
    score: str
    delta: float
    quantile: float | None
    fitted_on: str | None = None
    questions: int = 0
    rows: int = 0
    split_half: dict | None = None

    @property
    def suffix(self) -> str:
        return level_suffix(self.level)

    def bounds(self, predictions: Sequence[Sequence[float]]) -> tuple[list[list[float]], list[list[float]]]:
        """(lower, upper) for every option of every predicted row, ragged as ``predictions``, inside [0, 1]."""
        lower, upper = [], []
        for pred in predictions:
            p = np.asarray(pred, dtype=np.float64)
            if self.quantile is None:
                lower.append([0.0] * p.size)
                upper.append([1.0] * p.size)
                continue
            half = self.quantile * share_scale(p, self.score, self.delta)
            lower.append(np.clip(p - half, 0.0, 1.0).tolist())
            upper.append(np.clip(p + half, 0.0, 1.0).tolist())
        return lower, upper

    def bounds_by_subset(self, predictions: Mapping[str, Sequence[Sequence[float]]]
                         ) -> tuple[dict[str, list[list[float]]], dict[str, list[list[float]]]]:
        """:meth:`bounds` for every subset (same keys and order)."""
        pairs = {subset: self.bounds(rows) for subset, rows in predictions.items()}
        return {s: b[0] for s, b in pairs.items()}, {s: b[1] for s, b in pairs.items()}

    def to_dict(self) -> dict:
        record = {"level": self.level, "score": self.score, "delta": self.delta, "quantile": self.quantile,
                  "fitted_on": self.fitted_on, "questions": self.questions, "rows": self.rows}
        if self.split_half is not None:
            record["split_half"] = self.split_half
        return record

    @classmethod
    def from_dict(cls, record: Mapping, where: str = "intervals") -> ConformalIntervals:
        """Read a saved record (calibration.json's ``intervals``), checked: errors name ``where`` and the field."""
        if not isinstance(record, Mapping):
            raise ValueError(f"{where}: expected an object, got {type(record).__name__}")
        for key in ("level", "score", "delta", "quantile"):
            if key not in record:
                raise ValueError(f"{where}: field {key!r} missing")
        try:
            level = check_level(record["level"])
            delta = _check_settings(record["score"], record["delta"])
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        quantile = record["quantile"]
        if quantile is not None:
            if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not (
                    math.isfinite(quantile) and quantile >= 0):
                raise ValueError(f"{where}: field 'quantile' must be a finite number >= 0 or null, got {quantile!r}")
            quantile = float(quantile)
        return cls(level, record["score"], delta, quantile, record.get("fitted_on"),
                   int(record.get("questions") or 0), int(record.get("rows") or 0), record.get("split_half"))


def _row_scores(predictions, targets, score: str, delta: float) -> list[np.ndarray]:
    scores = []
    for i, (pred, target) in enumerate(zip(predictions, targets)):
        p, y = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
        if p.shape != y.shape or p.ndim != 1 or p.size == 0:
            raise ValueError(f"calibration row {i}: {p.size} predicted shares for {y.size} true shares")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
            raise ValueError(f"calibration row {i}: a share is NaN or infinite")
        scores.append(np.abs(y - p) / share_scale(p, score, delta))
    return scores


def conformal_quantile(row_scores: Sequence[np.ndarray], questions: Sequence[Hashable], level: float) -> float | None:
    """min { t : sum_j C_j(t) >= level (m + 1) } over the rows' scores grouped by question (module docstring);
    None when the m questions cannot reach it (then only [0, 1] is certain)."""
    level = check_level(level)
    if len(row_scores) != len(questions):
        raise ValueError(f"{len(row_scores)} rows of scores for {len(questions)} question keys")
    rows_per_question: dict[Hashable, int] = {}
    for question in questions:
        rows_per_question[question] = rows_per_question.get(question, 0) + 1
    m = len(rows_per_question)
    if m == 0:
        raise ValueError("no calibration rows to fit intervals on")
    values = np.concatenate([np.asarray(s, dtype=np.float64) for s in row_scores])
    weights = np.concatenate([np.full(len(s), 1.0 / (rows_per_question[q] * len(s)))
                              for s, q in zip(row_scores, questions)])
    needed = level * (m + 1)
    if needed > m + _SUM_TOLERANCE:
        return None
    order = np.argsort(values, kind="stable")
    covered = np.cumsum(weights[order])
    index = int(np.searchsorted(covered, needed - _SUM_TOLERANCE, side="left"))
    return float(values[order][min(index, len(values) - 1)])


def fit_intervals(predictions: Sequence[Sequence[float]], targets: Sequence[Sequence[float]],
                  questions: Sequence[Hashable], *, level: float = DEFAULT_LEVEL, score: str = DEFAULT_SCORE,
                  delta: float = DEFAULT_DELTA, fitted_on: str | None = None, check_splits: int = 0,
                  seed: int = 0, warn: bool = True) -> ConformalIntervals:
    """Conformal intervals from calibration rows: their predicted and true shares (ragged) and each row's question
    (any hashable key: rows sharing it form one exchangeable unit). ``check_splits`` > 0 also records the
    split-half check (:func:`split_half_check`) of these settings on the same rows (when there are 2 questions or
    more). ``warn``: log when too few questions leave the intervals unbounded (the split-half check says so once
    for all its halves)."""
    level, delta = check_level(level), _check_settings(score, delta)
    if not (len(predictions) == len(targets) == len(questions)):
        raise ValueError(f"{len(predictions)} predictions, {len(targets)} targets and {len(questions)} question keys")
    quantile = conformal_quantile(_row_scores(predictions, targets, score, delta), questions, level)
    m = len(set(questions))
    if quantile is None and warn:
        log.warning("%d questions cannot certify %g coverage (it needs at least %d): every interval is [0, 1]",
                    m, level, math.ceil(level / (1 - level)))
    fitted = ConformalIntervals(level, score, delta, quantile, fitted_on, m, len(predictions))
    if check_splits > 0 and m >= 2:  # one question cannot be halved: no check is recorded
        fitted = replace(fitted, split_half=split_half_check(predictions, targets, questions, level=level,
                                                             score=score, delta=delta, splits=check_splits,
                                                             seed=seed))
    return fitted


def coverage_and_width(intervals: ConformalIntervals, predictions, targets) -> tuple[float, float]:
    """(mean over rows of the fraction of true shares inside, mean over rows of the mean width)."""
    from simlab.metrics.intervals import score_intervals

    lower, upper = intervals.bounds(predictions)
    values = score_intervals([list(t) for t in targets], lower, upper, intervals.level)
    return values[f"coverage_{intervals.suffix}"], values[f"interval_width_{intervals.suffix}"]


def split_half_check(predictions, targets, questions: Sequence[Hashable], *, level: float = DEFAULT_LEVEL,
                     score: str = DEFAULT_SCORE, delta: float = DEFAULT_DELTA, splits: int = 20,
                     seed: int = 0) -> dict:
    """How the intervals do on questions they were not fitted on: ``splits`` seeded random halvings of the
    questions, each half fitted and measured on the other (2 · splits measurements); the mean, min and max
    coverage and the mean width. Needs at least 2 questions."""
    keys = list(dict.fromkeys(questions))
    if len(keys) < 2:
        raise ValueError(f"the split-half check needs at least 2 questions, got {len(keys)}")
    rng = np.random.default_rng(seed)
    coverages, widths, unbounded = [], [], 0
    for _ in range(int(splits)):
        shuffled = [keys[i] for i in rng.permutation(len(keys))]
        first = set(shuffled[: len(keys) // 2])
        halves = ([i for i, q in enumerate(questions) if q in first], [i for i, q in enumerate(questions)
                                                                       if q not in first])
        for fit_rows, held_rows in (halves, halves[::-1]):
            fitted = fit_intervals([predictions[i] for i in fit_rows], [targets[i] for i in fit_rows],
                                   [questions[i] for i in fit_rows], level=level, score=score, delta=delta,
                                   warn=False)
            unbounded += fitted.quantile is None
            coverage, width = coverage_and_width(fitted, [predictions[i] for i in held_rows],
                                                 [targets[i] for i in held_rows])
            coverages.append(coverage)
            widths.append(width)
    if unbounded:
        log.warning("split-half check: %d of %d half fits had too few questions to certify %g coverage (it needs at "
                    "least %d): their intervals are [0, 1]", unbounded, 2 * int(splits), level,
                    math.ceil(level / (1 - level)))
    return {"coverage": float(np.mean(coverages)), "coverage_min": float(np.min(coverages)),
            "coverage_max": float(np.max(coverages)), "width": float(np.mean(widths)), "splits": int(splits),
            "seed": int(seed), "questions": len(keys), "unbounded_fits": int(unbounded)}


def compare_scores(predictions, targets, questions: Sequence[Hashable], *, level: float = DEFAULT_LEVEL,
                   scores: Sequence[str] = SCORES, delta: float = DEFAULT_DELTA, splits: int = 20,
                   seed: int = 0) -> dict[str, dict]:
    """:func:`split_half_check` of each score on the same halvings: how the defaults were chosen (the narrowest
    score whose held-out coverage reaches the level), to be run on the valid split only."""
    return {score: split_half_check(predictions, targets, questions, level=level, score=score, delta=delta,
                                    splits=splits, seed=seed) for score in scores}


def question_key(row) -> tuple[str, str]:
    """A row's exchangeable unit: its question (survey and id; its countries or populations move together)."""
    return (row.survey, row.question_id)


def fit_on_rows(rows: Sequence, predictions: Sequence[Sequence[float]], *, fitted_on: str | None = None,
                **settings) -> ConformalIntervals:
    """:func:`fit_intervals` on survey rows (their shares and questions) and their predictions."""
    if len(rows) != len(predictions):
        raise ValueError(f"{len(predictions)} predictions for {len(rows)} rows of {fitted_on or 'the calibration'}")
    return fit_intervals(predictions, [list(r.target) for r in rows], [question_key(r) for r in rows],
                         fitted_on=fitted_on, **settings)


def score_subsets_intervals(intervals: ConformalIntervals, rows: Mapping[str, Sequence],
                            predictions: Mapping[str, Sequence[Sequence[float]]]) -> tuple[dict, dict, dict]:
    """(lower, upper, {subset: {coverage_<level>, interval_width_<level>}}) for every tested subset."""
    from simlab.metrics.intervals import score_intervals

    lower, upper = intervals.bounds_by_subset(predictions)
    scores = {s: score_intervals([list(r.target) for r in rows[s]], lower[s], upper[s], intervals.level)
              for s in predictions}
    return lower, upper, scores
