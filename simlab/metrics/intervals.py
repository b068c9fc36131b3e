"""Metrics of prediction intervals on option shares, and their registry.

A run whose simulator carries intervals (:mod:`simlab.simulator.intervals`) scores them beside the point metrics of
:mod:`simlab.metrics.registry`: per subset, ``coverage_<level>`` (how often a true share falls inside its interval)
and ``interval_width_<level>`` (how wide the intervals are), named after the interval's level (0.9 gives
``coverage_90``). They are registered here, not in the point-metric registry, because they need the bounds, which
the model's test pass does not have; a run without intervals has no such keys (absent, never 0).

Inputs: ``lower`` / ``upper`` / ``target`` [B, K] float (0 in padded slots), ``mask`` bool [B, K] (True = a real
option); each metric is a per-row function returning float64 [B], and a subset's value is the mean over its rows,
as for the point metrics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

IntervalRowFn = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
INSIDE_TOLERANCE = 1e-12  # a share on its bound (p ± q·s rounds either way) counts as inside


def check_level(level: float) -> float:
    """A coverage level strictly between 0 and 1 (0.9: 90% intervals)."""
    try:
        value = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"interval level must be a number in (0, 1), got {level!r}") from None
    if not (math.isfinite(value) and 0 < value < 1):
        raise ValueError(f"interval level must be a number in (0, 1), got {level!r}")
    return value


def level_suffix(level: float) -> str:
    """The level as metric names write it: 0.9 -> "90", 0.95 -> "95", 0.975 -> "97_5"."""
    percent = round(check_level(level) * 100, 6)
    return f"{percent:g}".replace(".", "_")


@dataclass(frozen=True)
class IntervalMetricSpec:
    """A registered interval metric: ``name(level)`` is its metrics.json key, ``title(level)`` its column title."""

    stem: str
    rows: IntervalRowFn
    title_template: str  # "{percent}" is replaced by the level in percent (here and in the description)
    description: str = ""

    def name(self, level: float) -> str:
        return f"{self.stem}_{level_suffix(level)}"

    def title(self, level: float) -> str:
        return self.title_template.format(percent=_percent(level))

    def describe(self, level: float) -> str:
        return self.description.format(percent=_percent(level))


def _percent(level: float) -> str:
    return level_suffix(level).replace("_", ".")


_REGISTRY: dict[str, IntervalMetricSpec] = {}


def register_interval_metric(stem: str, *, title: str, description: str = "") -> Callable[[IntervalRowFn],
                                                                                           IntervalRowFn]:
    """Decorator registering a per-row interval metric ``rows(lower, upper, target, mask) -> [B]`` as ``stem``."""
    if not stem.isidentifier():
        raise ValueError(f"interval metric stem must be an identifier, got {stem!r}")

    def decorator(rows: IntervalRowFn) -> IntervalRowFn:
        if stem in _REGISTRY:
            raise ValueError(f"interval metric {stem!r} is already registered")
        _REGISTRY[stem] = IntervalMetricSpec(stem, rows, title, description)
        return rows

    return decorator


def registered_interval_metrics() -> tuple[IntervalMetricSpec, ...]:
    return tuple(_REGISTRY.values())


def interval_metric_names(level: float) -> tuple[str, ...]:
    """The metrics.json keys of every registered interval metric at ``level`` (e.g. coverage_90)."""
    return tuple(spec.name(level) for spec in _REGISTRY.values())


def _pad(rows: Sequence[Sequence[float]]) -> tuple[Tensor, Tensor]:
    """:func:`simlab.metrics.scoring.pad_distributions`, filled through numpy (one tensor, not one per row)."""
    widths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    mask = np.arange(int(widths.max())) < widths[:, None]
    values = np.zeros(mask.shape, dtype=np.float64)
    values[mask] = np.concatenate([np.asarray(r, dtype=np.float64) for r in rows])
    return torch.from_numpy(values), torch.from_numpy(mask)


def _real(values: Tensor, mask: Tensor) -> Tensor:
    return values.detach().to(torch.float64).masked_fill(~mask.bool(), 0.0)


@register_interval_metric(
    "coverage", title="coverage {percent}%",
    description="the share of true option shares inside their {percent}% prediction intervals (mean over rows of "
                "each row's fraction; conformal, calibrated on the valid split's questions).",
)
def coverage_rows(lower: Tensor, upper: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per row, the fraction of its options whose true share lies in [lower, upper]."""
    mask = mask.bool()
    target = _real(target, mask)
    inside = (target >= _real(lower, mask) - INSIDE_TOLERANCE) & (target <= _real(upper, mask) + INSIDE_TOLERANCE)
    return (inside & mask).sum(dim=-1).to(torch.float64) / mask.sum(dim=-1).to(torch.float64)


@register_interval_metric(
    "interval_width", title="width {percent}%",
    description="the mean width (upper - lower) of the {percent}% intervals, in share units.",
)
def width_rows(lower: Tensor, upper: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per row, the mean width of its options' intervals."""
    mask = mask.bool()
    widths = (_real(upper, mask) - _real(lower, mask)).masked_fill(~mask, 0.0)
    return widths.sum(dim=-1) / mask.sum(dim=-1).to(torch.float64)


def score_intervals(targets: Sequence[Sequence[float]], lower: Sequence[Sequence[float]],
                    upper: Sequence[Sequence[float]], level: float) -> dict[str, float]:
    """Every registered interval metric of one subset at ``level`` (keyed by name): each row's true shares and
    their bounds, ragged, one value per option."""
    if not (len(targets) == len(lower) == len(upper)):
        raise ValueError(f"{len(targets)} rows, {len(lower)} lower and {len(upper)} upper bounds")
    if not targets:
        return {}
    for i, (t, lo, hi) in enumerate(zip(targets, lower, upper)):
        if not (len(t) == len(lo) == len(hi)):
            raise ValueError(f"row {i}: {len(t)} true shares, {len(lo)} lower and {len(hi)} upper bounds")
    target, mask = _pad(targets)
    low, _ = _pad(lower)
    high, _ = _pad(upper)
    return {spec.name(level): float(spec.rows(low, high, target, mask).mean()) for spec in _REGISTRY.values()}
