"""What a simulator is worth in respondents (Huang et al., ICML 2025: "how many respondents is an LLM worth").

For a subset, the effective number of respondents is the k such that asking k real people per row, i.e. a sample
counts ~ Multinomial(k, y) from each row's true shares y scored as counts / k, has the same expected mean 1 - JSD
to the truth as the simulator's mean 1 - JSD on that subset. It uses the rows' shares only (no ``n``), so it works
for countries and for weighted populations alike.

f(k) = the mean over rows of E[1 - JSD(y, counts / k)] rises with k, so k is found by bisection over the integers
in [1, ``max_k``] (in log k, to 1% of k: "about k"), f estimated by Monte Carlo (``samples`` draws per row; by
default enough for about 20,000 draws per value of k; one generator seeded from ``seed`` and k, so the result is
reproducible). A simulator better than ``max_k`` respondents is reported as ``max_k`` with
``bound: "at_least"``; one worse than a single respondent as 1 with ``bound: "at_most"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from simlab.analysis.ceiling import _as_distribution, _expected_rows, _resample
from simlab.metrics.registry import one_minus_jsd_rows
from simlab.metrics.scoring import pad_distributions

if TYPE_CHECKING:
    from simlab.data.rows import SurveyRow

DEFAULT_MAX_K = 100_000
DRAWS = 20_000  # draws per value of k when ``samples`` is not given: f's Monte Carlo error is then about 1% of k
RELATIVE_TOLERANCE = 0.01  # the bisection stops when k is bracketed within 1%


def default_samples(rows: int) -> int:
    """Draws per row so that a value of f rests on about :data:`DRAWS` draws (at least 10 per row)."""
    return max(10, -(-DRAWS // max(int(rows), 1)))


def sample_score(targets: Sequence[Sequence[float]], k: int, samples: int, seed: int = 0) -> float:
    """f(k): the mean over rows of the expected 1 - JSD between each row's shares and a k-respondent sample of them
    (Monte Carlo, ``samples`` draws per row from one generator seeded with (seed, k))."""
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    rng = np.random.default_rng([int(seed), int(k)])
    dists = [_as_distribution(t) for t in targets]
    return float(np.mean(_expected_rows(dists, [_resample(d, int(k), int(samples), rng) for d in dists])))


def mean_one_minus_jsd(targets: Sequence[Sequence[float]], predictions: Sequence[Sequence[float]]) -> float:
    """The simulator's mean 1 - JSD over the rows: the registered metric's value."""
    target, mask = pad_distributions(targets)
    preds, _ = pad_distributions(predictions)
    return float(one_minus_jsd_rows(preds, target, mask).mean())


def effective_respondents(targets: Sequence[Sequence[float]], score: float, *, max_k: int = DEFAULT_MAX_K,
                          samples: int | None = None, seed: int = 0) -> dict:
    """The k whose sample score f(k) matches ``score`` (the simulator's mean 1 - JSD over these rows):
    ``{"k", "bound", "one_minus_jsd", "sample_one_minus_jsd", "max_k", "samples", "seed"}``; ``bound`` is None
    when k was bracketed, else "at_least" (better than ``max_k`` respondents) or "at_most" (worse than one)."""
    if not targets:
        raise ValueError("no rows to measure effective respondents on")
    if isinstance(max_k, bool) or int(max_k) != max_k or max_k < 2:
        raise ValueError(f"max_k must be an integer >= 2, got {max_k!r}")
    samples = default_samples(len(targets)) if samples is None else int(samples)
    record = {"one_minus_jsd": float(score), "max_k": int(max_k), "samples": int(samples), "seed": int(seed)}
    values: dict[int, float] = {}

    def f(k: int) -> float:
        if k not in values:
            values[k] = sample_score(targets, k, samples, seed)
        return values[k]

    if score <= f(1):
        return {"k": 1, "bound": "at_most", "sample_one_minus_jsd": f(1), **record}
    if score >= f(int(max_k)):
        return {"k": int(max_k), "bound": "at_least", "sample_one_minus_jsd": f(int(max_k)), **record}
    low, high = 1, int(max_k)  # f(low) < score < f(high)
    while high - low > 1 and high > low * (1 + RELATIVE_TOLERANCE):
        middle = int(round(np.sqrt(low * high)))  # bisection in log k: k spans orders of magnitude
        middle = min(max(middle, low + 1), high - 1)
        if f(middle) < score:
            low = middle
        else:
            high = middle
    k = low if score - f(low) < f(high) - score else high
    return {"k": k, "bound": None, "sample_one_minus_jsd": f(k), **record}


def subset_effective_respondents(rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
                                 *, max_k: int = DEFAULT_MAX_K, samples: int | None = None,
                                 seed: int = 0) -> dict[str, dict]:
    """:func:`effective_respondents` of every tested subset with rows (an empty subset is left out)."""
    result = {}
    for subset, predicted in predictions.items():
        targets = [list(r.target) for r in rows[subset]]
        if not targets:
            continue
        result[subset] = effective_respondents(targets, mean_one_minus_jsd(targets, predicted), max_k=max_k,
                                               samples=samples, seed=seed)
    return result
