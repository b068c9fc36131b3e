"""Differentiable losses between a human answer distribution and the model's, over ragged option sets.

Every question has its own number of options k_i, so a batch is padded to K slots. Shapes everywhere:
``logits`` float [B, K] (raw option scores; padded slots hold anything), ``target`` float [B, K] (human
distribution, sums to 1 over the real options, 0 in padded slots), ``mask`` bool [B, K] (True = a real
option; the real options are the first k_i >= 2 slots of each row). Losses return the mean over rows.

The per-row functions (``kl_rows``, ``js_divergence_rows``, ``w1_rows``) take probabilities and are shared
with :mod:`simlab.metrics`, so training and evaluation measure the same quantities.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def masked_log_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Log-softmax over the real options only.

    Padded slots get ``finfo.min`` rather than -inf: -inf leads to NaN gradients (0 * inf) downstream.
    """
    very_negative = torch.finfo(logits.dtype).min
    log_q = torch.log_softmax(logits.masked_fill(~mask, very_negative), dim=-1)
    return log_q.masked_fill(~mask, very_negative)


def masked_softmax(logits: Tensor, mask: Tensor) -> Tensor:
    """Softmax over the real options only; padded slots are exactly 0."""
    return masked_log_softmax(logits, mask).exp().masked_fill(~mask, 0.0)


def _safe_log(x: Tensor) -> Tensor:
    """log x, where log 0 = -inf in value but contributes a zero (never NaN) gradient."""
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, torch.ones_like(x))), float("-inf"))


def _kl_rows_from_logs(p: Tensor, log_p: Tensor, log_q: Tensor, mask: Tensor) -> Tensor:
    """sum_k p_k (log p_k - log q_k) over real options, with 0 * log 0 = 0, as a [B] tensor.

    The log difference is zeroed off p's support *before* multiplying, so infinite logs there
    cannot produce NaN values or NaN gradients.
    """
    support = mask & (p > 0)
    log_ratio = torch.where(support, log_p - log_q, torch.zeros_like(log_p))
    return (p * log_ratio).sum(dim=-1)


def kl_rows(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """KL(p ‖ q) per row (natural log, 0 · log 0 = 0); +inf where q = 0 on p's support. Returns [B]."""
    return _kl_rows_from_logs(p, _safe_log(p), _safe_log(q), mask)


def js_divergence_rows(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Jensen-Shannon divergence per row, natural log: ½KL(p‖m) + ½KL(q‖m), m = (p + q) / 2. Returns [B].

    Lies in [0, log 2]; its square root is scipy's ``jensenshannon`` distance.
    """
    log_m = _safe_log(0.5 * (p + q))
    return 0.5 * _kl_rows_from_logs(p, _safe_log(p), log_m, mask) + 0.5 * _kl_rows_from_logs(
        q, _safe_log(q), log_m, mask
    )


def w1_rows(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Earth mover's distance over option positions 0..k-1, divided by k - 1 so it lies in [0, 1]. Returns [B].

    Uses the 1-D CDF form sum_j |CDF_p(j) - CDF_q(j)| for j = 0..k-2: the gap at position j is the mass that
    must cross from option j to option j+1. Only gaps whose next slot is a real option are counted, so
    padded slots never change the value.
    """
    cdf_gap = (p.cumsum(dim=-1) - q.cumsum(dim=-1)).abs()[:, :-1]
    crosses_to_real_option = mask[:, 1:]
    moved_mass = torch.where(crosses_to_real_option, cdf_gap, torch.zeros_like(cdf_gap)).sum(dim=-1)
    return moved_mass / (mask.sum(dim=-1) - 1).to(moved_mass.dtype)


def _majority_option(target: Tensor, mask: Tensor) -> Tensor:
    """Index of the human majority answer per row (first index on ties), among real options. Returns [B]."""
    return target.masked_fill(~mask, float("-inf")).argmax(dim=-1)


class KLDivergenceLoss(nn.Module):
    """KL(human ‖ model), averaged over rows: the paper's default training objective.

    Computed from the log-softmax, so a model probability that underflows still gives a finite loss.
    Unlike the reference code, the sum is not divided by the number of options, which would down-weight
    questions with many options.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        log_q = masked_log_softmax(logits, mask)
        return _kl_rows_from_logs(target, _safe_log(target), log_q, mask).mean()


class JensenShannonLoss(nn.Module):
    """Jensen-Shannon divergence (natural log) between human and model, averaged over rows.

    Symmetric and bounded, so a single badly-missed option cannot dominate the batch. The target is used as
    given (already a distribution); the reference code's extra softmax over it is not repeated.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return js_divergence_rows(target, masked_softmax(logits, mask), mask).mean()


class MajorityCrossEntropyLoss(nn.Module):
    """Cross-entropy against the human majority answer only (first index on ties), averaged over rows.

    The baseline that trains on the single most common answer and ignores the rest of the distribution.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        log_q = masked_log_softmax(logits, mask)
        majority = _majority_option(target, mask).unsqueeze(-1)
        return -log_q.gather(dim=-1, index=majority).squeeze(-1).mean()


class WassersteinLoss(nn.Module):
    """Earth mover's distance over option positions, normalised by k - 1, averaged over rows.

    Treats options as ordered (e.g. a Likert scale): putting mass on a neighbouring option costs less than
    putting it on a distant one.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return w1_rows(target, masked_softmax(logits, mask), mask).mean()
