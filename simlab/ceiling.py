"""The sampling-noise ceiling of the 1 - JSD metric.

A survey row's human distribution is itself an estimate from n respondents. Even a perfect simulator that
outputs the true population distribution p is scored against the empirical shares of a finite sample, so
its expected 1 - JSD is below 1. Resampling n answers from p (multinomial, Monte Carlo, seeded) and scoring
p against each resample estimates that expectation: the best score one can hope for on a row, which puts
model scores in context. The observed shares stand in for the unknown p.

1 - JSD here is the paper's metric: 1 - sqrt(JS divergence) with natural log, i.e. 1 - scipy's
``jensenshannon`` distance (see :func:`simlab.metrics.one_minus_jsd_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .data.rows import SurveyRow


def _kl_to_mixture(a: np.ndarray, m: np.ndarray) -> np.ndarray:
    """sum_k a_k log(a_k / m_k) over the last axis with 0 log 0 = 0 (m > 0 wherever a > 0)."""
    positive = a > 0
    ratio = np.where(positive, a / np.where(positive, m, 1.0), 1.0)
    return np.sum(np.where(positive, a * np.log(ratio), 0.0), axis=-1)


def one_minus_jsd(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """1 - sqrt(JS(p, q)), natural log, along the last axis (broadcasts); zeros in p or q are fine."""
    m = 0.5 * (p + q)
    js = 0.5 * _kl_to_mixture(p, m) + 0.5 * _kl_to_mixture(q, m)
    return 1.0 - np.sqrt(np.clip(js, 0.0, None))


def _as_distribution(p: Sequence[float]) -> np.ndarray:
    values = np.asarray(p, dtype=np.float64)
    if values.ndim != 1 or values.size < 1:
        raise ValueError(f"p must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError(f"p must hold finite non-negative shares, got {p!r}")
    total = values.sum()
    if total <= 0:
        raise ValueError("p has no positive share")
    return values / total  # exact renormalisation: rng.multinomial rejects sums above 1 + 1e-12


def expected_one_minus_jsd(
    p: Sequence[float],
    n: int,
    samples: int = 200,
    rng: np.random.Generator | None = None,
) -> float:
    """Monte Carlo estimate of E[1 - JSD(p, counts / n)] with counts ~ Multinomial(n, p).

    ``samples`` resamples are drawn in one vectorised call. ``rng`` defaults to ``default_rng(0)`` so a
    call without one is still reproducible; pass a shared generator to draw many rows from one stream.
    """
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(samples, bool) or int(samples) != samples or samples <= 0:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")
    dist = _as_distribution(p)
    rng = np.random.default_rng(0) if rng is None else rng
    counts = rng.multinomial(int(n), dist, size=int(samples))
    empirical = counts / float(n)
    return float(one_minus_jsd(dist[None, :], empirical).mean())


def noise_ceiling(rows: Sequence[SurveyRow], samples: int = 200, seed: int = 0) -> dict:
    """Mean expected 1 - JSD of a perfect simulator over the rows that report a respondent count ``n``.

    Rows without ``n`` have no defined sampling noise: they are counted in ``rows_without_n`` and left out
    of the mean (never treated as noise-free). One generator seeded with ``seed`` is consumed in row order,
    so the result is deterministic for given rows, samples and seed. ``one_minus_jsd`` is None when no row
    has ``n``.
    """
    rng = np.random.default_rng(seed)
    values = []
    without_n = 0
    for row in rows:
        if row.n is None:
            without_n += 1
            continue
        values.append(expected_one_minus_jsd(row.target, row.n, samples=samples, rng=rng))
    return {
        "one_minus_jsd": float(np.mean(values)) if values else None,
        "rows_with_n": len(values),
        "rows_without_n": without_n,
        "samples": samples,
        "seed": seed,
    }
