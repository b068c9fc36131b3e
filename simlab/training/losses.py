"""Differentiable losses between a human answer distribution and the model's, over ragged option sets.

Every question has its own number of options k_i, so a batch is padded to K slots. Shapes everywhere:
``logits`` float [B, K] (raw option scores; padded slots hold anything), ``target`` float [B, K] (human
distribution, sums to 1 over the real options, 0 in padded slots), ``mask`` bool [B, K] (True = a real
option; the real options are the first k_i >= 2 slots of each row). Losses return the mean over rows.

The per-row quantities come from :mod:`simlab.metrics.divergences`, the one implementation shared with
:mod:`simlab.metrics.registry`, so training and evaluation measure the same quantities.
"""

from __future__ import annotations

from torch import Tensor, nn

from simlab.metrics.divergences import (
    js_divergence_rows,
    kl_rows_from_logs,
    majority_option,
    masked_log_softmax,
    masked_softmax,
    safe_log,
    w1_rows,
)

__all__ = ["JensenShannonLoss", "KLDivergenceLoss", "MajorityCrossEntropyLoss", "WassersteinLoss"]


class KLDivergenceLoss(nn.Module):
    """KL(human ‖ model), averaged over rows: the paper's default training objective.

    Computed from the log-softmax, so a model probability that underflows still gives a finite loss.
    Unlike the reference code, the sum is not divided by the number of options, which would down-weight
    questions with many options.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        log_q = masked_log_softmax(logits, mask)
        return kl_rows_from_logs(target, safe_log(target), log_q, mask).mean()


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
        majority = majority_option(target, mask).unsqueeze(-1)
        return -log_q.gather(dim=-1, index=majority).squeeze(-1).mean()


class WassersteinLoss(nn.Module):
    """Earth mover's distance over option positions, normalised by k - 1, averaged over rows.

    Treats options as ordered (e.g. a Likert scale): putting mass on a neighbouring option costs less than
    putting it on a distant one.
    """

    def forward(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        return w1_rows(target, masked_softmax(logits, mask), mask).mean()
