"""Evaluation metrics comparing predicted and human answer distributions over ragged option sets.

Inputs everywhere: ``preds`` [B, K] predicted probabilities (0 in padded slots), ``target`` [B, K] human
probabilities, ``mask`` bool [B, K] (True = a real option; the real options are the first k_i slots).
Each metric exists as a per-row function returning a float64 [B] tensor (written into prediction files)
and as a torchmetrics ``Metric`` averaging those rows across batches and devices.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torchmetrics import Metric, MetricCollection

from .divergences import js_divergence_rows, kl_rows, w1_rows

_LOG_FLOOR = 1e-12  # predicted probabilities are clamped here inside log() so KL stays finite


def _as_float64(preds: Tensor, target: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    return preds.detach().to(torch.float64), target.detach().to(torch.float64), mask.detach().bool()


def one_minus_jsd_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """1 - Jensen-Shannon distance (natural log), i.e. 1 - scipy's ``jensenshannon``: the paper's headline metric."""
    preds, target, mask = _as_float64(preds, target, mask)
    return 1.0 - js_divergence_rows(target, preds, mask).clamp_min(0.0).sqrt()


def emd_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Earth mover's distance over option positions 0..k-1, divided by k - 1 (in [0, 1])."""
    preds, target, mask = _as_float64(preds, target, mask)
    return w1_rows(target, preds, mask)


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


def accuracy_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """1.0 where the predicted and human majority answers agree (first index on ties), else 0.0."""
    preds, target, mask = _as_float64(preds, target, mask)
    predicted_majority = preds.masked_fill(~mask, float("-inf")).argmax(dim=-1)
    human_majority = target.masked_fill(~mask, float("-inf")).argmax(dim=-1)
    return (predicted_majority == human_majority).to(torch.float64)


def kl_div_rows(preds: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """KL(human ‖ predicted), natural log, predicted probabilities clamped at 1e-12 inside the log."""
    preds, target, mask = _as_float64(preds, target, mask)
    return kl_rows(target, preds.clamp_min(_LOG_FLOOR), mask)


RowMetricFn = Callable[[Tensor, Tensor, Tensor], Tensor]


class _RowMeanMetric(Metric):
    """Mean of a per-row metric over every row seen; state is a float64 sum and a row count."""

    row_values: RowMetricFn
    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Tensor, target: Tensor, mask: Tensor) -> None:
        values = type(self).row_values(preds, target, mask)
        self.total += values.sum()
        self.count += values.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class OneMinusJSD(_RowMeanMetric):
    """Mean of 1 - Jensen-Shannon distance (natural log): the paper's headline metric, higher is better."""

    row_values = staticmethod(one_minus_jsd_rows)
    higher_is_better = True


class EMD(_RowMeanMetric):
    """Mean earth mover's distance over option positions, normalised by k - 1; lower is better."""

    row_values = staticmethod(emd_rows)
    higher_is_better = False


class EMDPaper(_RowMeanMetric):
    """Mean of the paper's 'EMD': scipy's wasserstein_distance on the probability values.

    Not a distance over option positions (it ignores which option holds which probability); reported only
    to compare with the paper. See :func:`emd_paper_rows`.
    """

    row_values = staticmethod(emd_paper_rows)
    higher_is_better = False


class MajorityAccuracy(_RowMeanMetric):
    """Fraction of questions whose predicted majority answer is the human majority answer."""

    row_values = staticmethod(accuracy_rows)
    higher_is_better = True


class KLDivergence(_RowMeanMetric):
    """Mean KL(human ‖ predicted), natural log; lower is better."""

    row_values = staticmethod(kl_div_rows)
    higher_is_better = False


def survey_metrics() -> MetricCollection:
    """All evaluation metrics, keyed as they are logged.

    ``compute_groups=False``: every metric has the same state names, so torchmetrics would otherwise merge
    metrics whose states happen to coincide on the first batch (e.g. a perfect first batch) and share state
    from then on.
    """
    return MetricCollection(
        {
            "one_minus_jsd": OneMinusJSD(),
            "emd": EMD(),
            "emd_paper": EMDPaper(),
            "accuracy": MajorityAccuracy(),
            "kl": KLDivergence(),
        },
        compute_groups=False,
    )
