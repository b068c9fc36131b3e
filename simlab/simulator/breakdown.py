"""The breakdown use: a country's overall shares on a question are known (a national result), its subgroups' are
not; predict each subgroup's shares (:mod:`simlab.data.populations`).

What the survey knows for it is how subgroups differ from their country elsewhere. :class:`SubgroupShift` learns,
per question and subgroup, the mean log-ratio of the subgroup's shares to its country's over the countries with
data (the training countries),

    shift = mean_c [ log(p_subgroup,c + eps) - log(p_country,c + eps) ],

and moves a row's known country shares by it: ``prediction ∝ country_shares · exp(shift)``. The row's own country
never enters its shift (for a training row the other training countries'), and the row's own shares are never
read, only its ``country_target``. A question or subgroup no other country answered gets shift 0: the country's
shares unchanged. ``eps`` (in proportions) keeps an option nobody chose from giving an infinite log-ratio; both
sides get it, so an option chosen by nobody in the country and nobody in the subgroup has shift 0.

:class:`BreakdownPrior` is the same prediction as the prior of the prior-anchored simulator (``prior=breakdown``):
the model learns what the average shift misses.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from simlab.data.rows import SurveyRow
from simlab.simulator.keys import PriorKey, prior_key

log = logging.getLogger(__name__)

# Chosen on the valid split (C1-Q2) only, leave one country out (choose_eps): on sex x age rows of the 38 C1
# countries with respondent files (W_WEIGHT, cells n >= 50, 7764 rows) mean 1-JSD by eps 1e-4 0.9196, 1e-3 0.9257,
# 0.003 0.9270, 0.01 0.9274, 0.03 0.9273, 0.1 0.9265, 0.3 0.9255 (the country's shares alone: 0.9230).
DEFAULT_EPS = 0.01
EPS_GRID = (1e-4, 1e-3, 0.003, 0.01, 0.03, 0.1)


def country_shares(row: SurveyRow) -> np.ndarray:
    """The row's country's overall shares (its ``country_target``), or a one-line error naming the row."""
    if row.country_target is None:
        raise ValueError(
            f"{row.source}: row {row.index} ({row.population_key}, question {row.question_id}): no country_shares; "
            f"the breakdown use needs each row's country's overall shares (rows of simlab build-populations carry "
            f"them)")
    return np.asarray(row.country_target, dtype=np.float64)


class SubgroupShift:
    """Per (question, subgroup), each country's log-ratio of the subgroup's shares to the country's; a row's
    prediction is its country shares moved by the mean log-ratio of the *other* countries.

    Args:
        rows: rows with observed subgroup shares and their country's shares (the training rows).
        eps: added to both shares before the log (proportions; > 0).
    """

    def __init__(self, rows: Sequence[SurveyRow], eps: float = DEFAULT_EPS):
        if not eps > 0:
            raise ValueError(f"the subgroup shift's eps must be > 0, got {eps}")
        self.eps = float(eps)
        self._shifts: dict[PriorKey, dict[str, np.ndarray]] = defaultdict(dict)
        for row in rows:
            by_country = self._shifts[prior_key(row)]
            if row.country in by_country:
                raise ValueError(
                    f"{row.source}: row {row.index}: {row.population_key} answers question {row.question_id} twice")
            target = np.asarray(row.target, dtype=np.float64)
            by_country[row.country] = np.log(target + self.eps) - np.log(country_shares(row) + self.eps)

    @property
    def keys(self) -> int:
        """How many (question, subgroup) pairs have a shift."""
        return len(self._shifts)

    def shift(self, row: SurveyRow, exclude: Sequence[str] = ()) -> np.ndarray | None:
        """The mean log-ratio over the countries other than the row's own and ``exclude``; None where there is none."""
        by_country = self._shifts.get(prior_key(row), {})
        others = [c for c in by_country if c != row.country and c not in exclude]
        if not others:
            return None
        return np.mean(np.stack([by_country[c] for c in others]), axis=0)

    def predict(self, row: SurveyRow, exclude: Sequence[str] = ()) -> np.ndarray:
        """The row's country shares moved by its shift (unchanged where it has none), summing to 1."""
        shares = country_shares(row)
        shift = self.shift(row, exclude)
        moved = shares if shift is None else shares * np.exp(shift)
        return moved / moved.sum()


class BreakdownPrior:
    """The prior of the prior-anchored simulator for the breakdown use: :meth:`SubgroupShift.predict`, mixed with
    ``smoothing`` of uniform (an option the country never chose stays possible, so its log is finite).
    Same interface as :class:`simlab.simulator.prior.SurveyPrior` (``prior``, ``covers``, ``settings``)."""

    def __init__(self, rows: Sequence[SurveyRow], eps: float = DEFAULT_EPS, smoothing: float = 0.01):
        if not 0 <= smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
        self.shifts, self.smoothing = SubgroupShift(rows, eps), float(smoothing)
        self.settings: dict = {"use": "breakdown", "eps": self.shifts.eps, "smoothing": self.smoothing}
        log.info("breakdown prior: subgroup shifts of %d (question, subgroup) pairs from %d rows (eps %g)",
                 self.shifts.keys, len(rows), self.shifts.eps)

    def prior(self, row: SurveyRow, exclude: Sequence[str] = ()) -> np.ndarray:
        shares = self.shifts.predict(row, exclude)
        return (1 - self.smoothing) * shares + self.smoothing / len(shares)

    def covers(self, row: SurveyRow) -> bool:
        """Whether another country's shift is known for the row's question and subgroup (else: country shares)."""
        return self.shifts.shift(row) is not None


def choose_eps(rows: Sequence[SurveyRow], grid: Sequence[float] = EPS_GRID) -> tuple[float, dict[float, float]]:
    """The eps whose leave-one-country-out prediction on ``rows`` is closest to the rows' own shares (mean 1-JSD),
    with every eps's score. Give it the valid rows (C1-Q2): their questions are not in training, so the shift is
    learnt on the valid rows themselves, each row predicted from the other countries only."""
    from simlab.metrics.registry import one_minus_jsd_rows
    from simlab.metrics.scoring import pad_distributions

    if not rows:
        raise ValueError("choose_eps needs rows")
    target, mask = pad_distributions([r.target for r in rows])
    scores = {}
    for eps in grid:
        shift = SubgroupShift(rows, eps)
        predicted, _ = pad_distributions([shift.predict(r) for r in rows])
        scores[float(eps)] = float(np.mean(one_minus_jsd_rows(predicted, target, mask).numpy()))
    best = max(scores, key=scores.get)
    log.info("subgroup shift: leave-one-country-out 1-JSD on %d rows by eps %s; best %s",
             len(rows), {k: round(v, 5) for k, v in scores.items()}, best)
    return best, scores
