"""The sampling-noise ceiling of the 1 - JSD metric.

A survey row's human distribution is itself an estimate from n respondents. Even a perfect simulator that
outputs the true population distribution p is scored against the empirical shares of a finite sample, so
its expected 1 - JSD is below 1. Resampling n answers from p (multinomial, Monte Carlo, seeded) and scoring
p against each resample estimates that expectation: the best score one can hope for on a row, which puts
model scores in context. The observed shares stand in for the unknown p. Shares computed under survey weights
(population rows) are worth Kish's effective sample size ``n_eff``, not ``n``: their resamples draw ``n_eff``.

1 - JSD here is the paper's metric: 1 - sqrt(JS divergence) with natural log, i.e. 1 - scipy's
``jensenshannon`` distance (see :func:`simlab.metrics.registry.one_minus_jsd_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from simlab.metrics.registry import one_minus_jsd, one_minus_jsd_rows

if TYPE_CHECKING:
    from simlab.data.rows import SurveyRow

__all__ = ["expected_one_minus_jsd", "noise_ceiling", "one_minus_jsd", "resample_size"]  # one_minus_jsd: the registry's

_CHUNK_VALUES = 2_000_000  # score the resamples of this many (row x sample x option) values per torch call


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
    _check_counts(n, samples)
    dist = _as_distribution(p)
    rng = np.random.default_rng(0) if rng is None else rng
    return float(one_minus_jsd(dist[None, :], _resample(dist, n, samples, rng)).mean())


def _check_counts(n: int, samples: int) -> None:
    if isinstance(n, bool) or int(n) != n or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(samples, bool) or int(samples) != samples or samples <= 0:
        raise ValueError(f"samples must be a positive integer, got {samples!r}")


def _resample(dist: np.ndarray, n: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """[samples, k] empirical shares of ``samples`` surveys of ``n`` answers drawn from ``dist``."""
    return rng.multinomial(int(n), dist, size=int(samples)) / float(n)


def _expected_rows(dists: list[np.ndarray], resamples: list[np.ndarray]) -> list[float]:
    """Per row, the mean 1 - JSD between its distribution and each of its resamples: the values of
    :func:`expected_one_minus_jsd`, scored with one torch call per number of options (rows of equal width are
    stacked, so nothing is padded) instead of one call per row."""
    values = [0.0] * len(dists)
    by_width: dict[int, list[int]] = {}
    for i, dist in enumerate(dists):
        by_width.setdefault(dist.size, []).append(i)
    for indices in by_width.values():
        rows_per_call = max(1, _CHUNK_VALUES // resamples[indices[0]].size)
        for start in range(0, len(indices), rows_per_call):
            chunk = indices[start:start + rows_per_call]
            empirical = np.concatenate([resamples[i] for i in chunk])
            counts = [resamples[i].shape[0] for i in chunk]
            truth = np.repeat(np.stack([dists[i] for i in chunk]), counts, axis=0)
            mask = torch.ones(empirical.shape, dtype=torch.bool)
            scores = one_minus_jsd_rows(torch.from_numpy(truth), torch.from_numpy(empirical), mask).numpy()
            offsets = np.cumsum([0, *counts])
            for i, a, b in zip(chunk, offsets[:-1], offsets[1:]):
                values[i] = float(scores[a:b].mean())
    return values


def resample_size(row: SurveyRow) -> int | None:
    """The respondents a row's shares are worth, as a whole number of draws: ``n``, or for weighted rows (a
    subgroup built with survey weights) Kish's ``n_eff`` rounded to the nearest integer (at least 1): weights make
    the shares as noisy as a simple sample of ``n_eff`` answers. None when unknown."""
    size = row.sample_size
    if size is None or row.n_eff is None:
        return size
    return max(1, round(size))


def noise_ceiling(rows: Sequence[SurveyRow], samples: int = 200, seed: int = 0) -> dict:
    """Mean expected 1 - JSD of a perfect simulator over the rows that report a respondent count ``n``.

    A row's resample size is :func:`resample_size` (``n``; the rounded ``n_eff`` for a weighted row). Rows
    without ``n`` have no defined sampling noise: they are counted in ``rows_without_n`` and left out
    of the mean (never treated as noise-free). One generator seeded with ``seed`` is consumed in row order,
    so the result is deterministic for given rows, samples and seed. ``one_minus_jsd`` is None when no row
    has ``n``.
    """
    rng = np.random.default_rng(seed)
    dists, resamples = [], []
    without_n = 0
    for row in rows:  # the draws, in row order from one generator, exactly as expected_one_minus_jsd makes them
        size = resample_size(row)
        if size is None:
            without_n += 1
            continue
        _check_counts(size, samples)
        dists.append(_as_distribution(row.target))
        resamples.append(_resample(dists[-1], size, samples, rng))
    values = _expected_rows(dists, resamples) if dists else []
    return {
        "one_minus_jsd": float(np.mean(values)) if values else None,
        "rows_with_n": len(values),
        "rows_without_n": without_n,
        "samples": samples,
        "seed": seed,
    }
