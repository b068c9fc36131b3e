"""Evaluation metrics comparing predicted and human answer distributions over ragged option sets, and their registry.

Inputs everywhere: ``preds`` [B, K] predicted probabilities (0 in padded slots), ``target`` [B, K] human
probabilities, ``mask`` bool [B, K] (True = a real option; the real options are the first k_i slots).
Each metric is a per-row function returning a float64 [B] tensor, registered with :func:`register_metric`.
The registry is the single place a metric is declared: :func:`survey_metrics` (the torchmetrics collection the
model's validation/test passes and :mod:`simlab.metrics.scoring` update, hence metrics.json and W&B), the results.md
table (:mod:`simlab.runs.results_table`), the report tables (:mod:`simlab.report`) and :mod:`simlab.report.compare`
all read it, in registration order. The divergences themselves live in :mod:`simlab.metrics.divergences`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from simlab.metrics.divergences import TIE_RTOL, js_divergence_rows, kl_rows, majority_options, w1_rows

_LOG_FLOOR = 1e-12  # predicted probabilities are clamped here inside log() so KL stays finite

RowMetricFn = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class MetricSpec:
    """A registered metric.

    Attributes:
        name: the key in metrics.json, in W&B (``test/<subset>/<name>``, ``val/<name>``) and in the CSV tables.
        rows: ``rows(preds, target, mask) -> [B]`` float64 values, one per row; a subset's value is their mean.
        title: the short column title (results.md, compare_runs), e.g. ``1-JSD``.
        higher_is_better: the metric's direction: it titles the report tables, and the torchmetrics object has it.
        in_average: part of the paper average (metrics.json ``paper_average``, its results.md line, W&B
            ``test/paper_average/<name>``).
        in_report: gets its own table in the report (report.md, tables.csv, tables.tex).
        description: one sentence for results.md's footnote ("<title>: <description>"); empty = no footnote.
        report_title: the report table's title; default "<title> (higher|lower is better)".
    """

    name: str
    rows: RowMetricFn
    title: str
    higher_is_better: bool
    in_average: bool = False
    in_report: bool = False
    description: str = ""
    report_title: str | None = None

    @property
    def table_title(self) -> str:
        """Title of the metric's report table."""
        if self.report_title:
            return self.report_title
        return f"{self.title} ({'higher' if self.higher_is_better else 'lower'} is better)"


_REGISTRY: dict[str, MetricSpec] = {}


def register_metric(
    name: str,
    *,
    title: str,
    higher_is_better: bool,
    in_average: bool = False,
    in_report: bool = False,
    description: str = "",
    report_title: str | None = None,
) -> Callable[[RowMetricFn], RowMetricFn]:
    """Decorator registering a per-row metric function under ``name`` (after every metric registered before it).

    The function gets ``preds``, ``target`` (float64) and ``mask`` and returns one float64 value per row; it is
    returned unchanged, so it can still be called directly. See docs/EXTENDING.md for a worked example.
    """
    if not name.isidentifier():
        raise ValueError(f"metric name must be an identifier (it is a metrics.json key), got {name!r}")

    def decorator(rows: RowMetricFn) -> RowMetricFn:
        if name in _REGISTRY:
            raise ValueError(f"metric {name!r} is already registered (by {_REGISTRY[name].rows.__qualname__})")
        _REGISTRY[name] = MetricSpec(name, rows, title, bool(higher_is_better), bool(in_average), bool(in_report),
                                     description, report_title)
        return rows

    return decorator


def unregister_metric(name: str) -> MetricSpec:
    """Remove a registered metric (tests, experiments); returns its spec."""
    if name not in _REGISTRY:
        raise KeyError(f"metric {name!r} is not registered (registered: {list(_REGISTRY)})")
    return _REGISTRY.pop(name)


def registered_metrics() -> tuple[MetricSpec, ...]:
    """Every registered metric, in registration order (the column order of every table)."""
    return tuple(_REGISTRY.values())


def metric_spec(name: str) -> MetricSpec:
    if name not in _REGISTRY:
        raise KeyError(f"metric {name!r} is not registered (registered: {list(_REGISTRY)})")
    return _REGISTRY[name]


def metric_names(*, in_average: bool | None = None, in_report: bool | None = None) -> tuple[str, ...]:
    """Registered metric names in order, optionally only those (not) in the paper average / the report."""
    return tuple(
        spec.name for spec in _REGISTRY.values()
        if (in_average is None or spec.in_average == in_average) and (in_report is None or spec.in_report == in_report)
    )


def _as_float64(preds: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return preds.detach().to(torch.float64), target.detach().to(torch.float64), mask.detach().bool()


@register_metric(
    "one_minus_jsd", title="1-JSD", higher_is_better=True, in_average=True, in_report=True,
    description="1 - Jensen-Shannon distance (natural log).",
)
def one_minus_jsd_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """1 - Jensen-Shannon distance (natural log), i.e. 1 - scipy's ``jensenshannon``: the paper's headline metric."""
    preds, target, mask = _as_float64(preds, target, mask)
    return 1.0 - js_divergence_rows(target, preds, mask).clamp_min(0.0).sqrt()


@register_metric(
    "emd", title="EMD", higher_is_better=False, in_average=True, in_report=True,
    description="W1 over option positions / (K-1).",
)
def emd_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Earth mover's distance over option positions 0..k-1, divided by k - 1 (in [0, 1])."""
    preds, target, mask = _as_float64(preds, target, mask)
    return w1_rows(target, preds, mask)


@register_metric(
    "emd_paper", title="EMD (paper)", higher_is_better=False,
    description="the reference code's scipy wasserstein_distance on probability values, for comparison only.",
)
def emd_paper_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """What the paper's reference code reports as EMD: ``scipy.stats.wasserstein_distance(human, predicted)``.

    This is NOT a distance over option positions: the k probability values of each distribution are treated
    as k samples on the real line, so it equals mean |sort(p) - sort(q)| and ignores which option holds which
    probability. Kept only to compare with the paper's numbers; use :func:`emd_rows` otherwise.
    """
    preds, target, mask = _as_float64(preds, target, mask)
    sorted_preds = preds.masked_fill(~mask, float("inf")).sort(dim=-1).values
    sorted_target = target.masked_fill(~mask, float("inf")).sort(dim=-1).values
    num_options = mask.sum(dim=-1, keepdim=True)
    real_after_sort = torch.arange(mask.shape[-1], device=mask.device) < num_options
    gaps = torch.where(real_after_sort, (sorted_preds - sorted_target).abs(), torch.zeros_like(sorted_preds))
    return gaps.sum(dim=-1) / num_options.squeeze(-1).to(torch.float64)


@register_metric(
    "accuracy", title="accuracy", higher_is_better=True, in_average=True, in_report=True,
    description=f"the predicted argmax vs the human majority; ties count as fractions (expected accuracy under a "
                f"random tie-break; options within {TIE_RTOL:g} relative of the maximum tie), so a uniform guess "
                f"on k options scores 1/k.",
    report_title="accuracy of the argmax vs the human majority (ties as fractions)",
)
def accuracy_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Whether the predicted and human majority answers agree, ties counted as fractions.

    With P the predicted maxima and H the human maxima (ties within ``TIE_RTOL`` relative), a row scores
    |P ∩ H| / (|P| |H|): the chance that a random pick among P equals a random pick among H. So a clear argmax
    scores 1 or 0 as before, a two-way predicted tie holding the human majority 0.5, a uniform guess 1/k. The
    first-index tie-break used before gave a uniform guess the score of option A, which says nothing about it.
    """
    preds, target, mask = _as_float64(preds, target, mask)
    predicted, human = majority_options(preds, mask), majority_options(target, mask)
    shared = (predicted & human).sum(dim=-1).to(torch.float64)
    return shared / (predicted.sum(dim=-1) * human.sum(dim=-1)).to(torch.float64)


@register_metric("kl", title="KL", higher_is_better=False)
def kl_div_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """KL(human ‖ predicted), natural log, predicted probabilities clamped at 1e-12 inside the log."""
    preds, target, mask = _as_float64(preds, target, mask)
    return kl_rows(target, preds.clamp_min(_LOG_FLOOR), mask)


def one_minus_jsd(p, q) -> np.ndarray:
    """1 - JSD between array-likes of distributions along the last axis (they broadcast; every slot is a real
    option, zeros are fine): :func:`one_minus_jsd_rows` for plain sequences and numpy arrays. Returns a float64
    array of the broadcast shape without the last axis (a 0-d array for two 1-D inputs).

    Each call is a few dozen small torch operations: score many rows in one call (stacked, or padded for
    :func:`one_minus_jsd_rows`) rather than one call per row."""
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        p, q = np.broadcast_arrays(p, q)
    shape = p.shape[:-1]
    p_t = torch.tensor(p.reshape(-1, p.shape[-1]))  # a copy: the inputs may be read-only (e.g. broadcast views)
    q_t = torch.tensor(q.reshape(-1, q.shape[-1]))
    values = one_minus_jsd_rows(q_t, p_t, torch.ones(p_t.shape, dtype=torch.bool))
    return values.numpy().reshape(shape)


class RowMeanMetric(Metric):
    """Mean of a registered per-row metric over every row seen; state is a float64 sum and a row count.

    Build it with :func:`row_mean_metric`, which picks the subclass carrying the spec's direction (torchmetrics
    reads ``higher_is_better`` from the class and forbids setting it on an instance).
    """

    full_state_update = False
    is_differentiable = False

    def __init__(self, spec: MetricSpec, **kwargs):
        super().__init__(**kwargs)
        self.spec = spec
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:
        values = self.spec.rows(*_as_float64(preds, target, mask))
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class _HigherIsBetterRowMean(RowMeanMetric):
    higher_is_better = True


class _LowerIsBetterRowMean(RowMeanMetric):
    higher_is_better = False


def row_mean_metric(spec: MetricSpec | str) -> RowMeanMetric:
    """The torchmetrics ``Metric`` of one registered metric (a spec or its name)."""
    spec = metric_spec(spec) if isinstance(spec, str) else spec
    return (_HigherIsBetterRowMean if spec.higher_is_better else _LowerIsBetterRowMean)(spec)


def survey_metrics() -> MetricCollection:
    """Every registered metric, keyed by name as it is logged, in registration order.

    ``compute_groups=False``: every metric has the same state names, so torchmetrics would otherwise merge
    metrics whose states happen to coincide on the first batch (e.g. a perfect first batch) and share state
    from then on.
    """
    return MetricCollection({spec.name: row_mean_metric(spec) for spec in registered_metrics()}, compute_groups=False)
