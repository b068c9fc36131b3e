"""The one implementation of every masked per-row quantity between two answer distributions.

Losses (:mod:`simlab.training.losses`), evaluation metrics (:mod:`simlab.metrics.registry`), temperature scaling
(:mod:`simlab.simulator.temperature`), the noise ceiling (:mod:`simlab.analysis.ceiling`) and the run comparisons
all call these functions, so training, evaluation and analysis measure exactly the same quantities.

Every question has its own number of options k_i, so a batch is padded to K slots. Shapes everywhere:
``p`` / ``q`` float [B, K] (distributions summing to 1 over the real options, 0 in padded slots), ``logits``
float [B, K] (raw option scores; padded slots hold anything), ``mask`` bool [B, K] (True = a real option; the
real options are the first k_i slots of each row). Per-row functions return a [B] tensor in the inputs' dtype.
All logs are natural logs.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def safe_log(x: Tensor) -> Tensor:
    """log x, where log 0 = -inf in value but contributes a zero (never NaN) gradient."""
    positive = x > 0
    return torch.where(positive, torch.log(torch.where(positive, x, 1.0)), float("-inf"))


def kl_rows_from_logs(p: Tensor, log_p: Tensor, log_q: Tensor, mask: Tensor) -> Tensor:
    """sum_k p_k (log p_k - log q_k) over real options, with 0 * log 0 = 0, as a [B] tensor.

    Takes the logs directly, so a caller holding ``log_softmax`` output never exponentiates and takes the log
    again. The log difference is zeroed off p's support *before* multiplying, so infinite logs there cannot
    produce NaN values or NaN gradients.
    """
    support = mask & (p > 0)
    log_ratio = torch.where(support, log_p - log_q, 0.0)
    return (p * log_ratio).sum(dim=-1)


def kl_rows(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """KL(p ‖ q) per row (natural log, 0 · log 0 = 0); +inf where q = 0 on p's support. Returns [B]."""
    return kl_rows_from_logs(p, safe_log(p), safe_log(q), mask)


def js_divergence_rows(p: Tensor, q: Tensor, mask: Tensor) -> Tensor:
    """Jensen-Shannon divergence per row, natural log: ½KL(p‖m) + ½KL(q‖m), m = (p + q) / 2. Returns [B].

    Lies in [0, log 2]; its square root is scipy's ``jensenshannon`` distance (scipy also renormalises its
    inputs; these are used as given).
    """
    log_m = safe_log(0.5 * (p + q))
    return 0.5 * kl_rows_from_logs(p, safe_log(p), log_m, mask) + 0.5 * kl_rows_from_logs(
        q, safe_log(q), log_m, mask
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


def majority_option(p: Tensor, mask: Tensor) -> Tensor:
    """Index of the most likely real option per row (the first index on ties), as a long [B] tensor."""
    return p.masked_fill(~mask, float("-inf")).argmax(dim=-1)


TIE_RTOL = 1e-12  # options within this fraction of a row's maximum tie with it


def majority_options(p: Tensor, mask: Tensor, rtol: float = TIE_RTOL) -> Tensor:
    """Every most likely real option per row, as a bool [B, K] tensor (True = tied for the maximum).

    Options within ``rtol`` (relative) of the row's maximum count as tied: a uniform guess computed two ways, or
    a softmax of equal logits, can differ in the last bits, and exact float equality would miss those ties.
    """
    masked = p.masked_fill(~mask, float("-inf"))
    top = masked.max(dim=-1, keepdim=True).values
    return mask & (masked >= top - rtol * top.abs())
