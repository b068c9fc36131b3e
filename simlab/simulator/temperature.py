"""Temperature scaling of the model's answer distributions (beyond the paper).

A fine-tuned model can be systematically too sharp or too flat compared with human answer distributions.
One scalar temperature T > 0, fitted on the valid split, rescales every row's option logits to
softmax(logits / T): it cannot change which option ranks first, only how spread the distribution is, so
it is a cheap, low-variance correction that is fitted once and applied to every test subset.

Shapes follow :mod:`simlab.metrics.divergences`: ``logits`` / ``target`` float [B, K] padded to K slots, ``mask`` bool
[B, K] (True = a real option). Padded slots of ``logits`` may hold anything; they are ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from scipy.optimize import minimize_scalar
from torch import Tensor

from simlab.metrics.divergences import kl_rows_from_logs, masked_log_softmax, masked_softmax, safe_log
from simlab.metrics.scoring import pad_distributions

PROB_FLOOR = 1e-12  # saved probabilities are clamped here before log(), as in simlab.metrics.registry
DEFAULT_BOUNDS = (0.05, 20.0)
_NEGLIGIBLE_KL = 1e-12  # a KL gain below this is rounding noise: keep T = 1 rather than a meaningless 1 ± 1e-9


def _check_batch(logits: Tensor, target: Tensor | None, mask: Tensor) -> None:
    """Raise ValueError for empty batches, shape mismatches, rows without options, or NaN/inf in real slots."""
    if logits.dim() != 2 or logits.numel() == 0:
        raise ValueError(f"logits must be a non-empty [B, K] tensor, got shape {tuple(logits.shape)}")
    if mask.shape != logits.shape or (target is not None and target.shape != logits.shape):
        shapes = f"logits {tuple(logits.shape)}, mask {tuple(mask.shape)}"
        if target is not None:
            shapes += f", target {tuple(target.shape)}"
        raise ValueError(f"shapes differ: {shapes}")
    mask = mask.bool()
    if not bool(mask.any(dim=-1).all()):
        raise ValueError("every row needs at least one real option (mask row is all False)")
    real_logits = logits[mask]
    if torch.isnan(real_logits).any():
        raise ValueError("logits contain NaN in real option slots")
    if torch.isinf(real_logits).any():
        raise ValueError("logits contain inf in real option slots (use logits_from_probs, which floors zeros)")
    if target is not None:
        real_target = target[mask]
        if not bool(torch.isfinite(real_target).all()):
            raise ValueError("target contains NaN or inf in real option slots")
        if bool((real_target < 0).any()):
            raise ValueError("target contains negative shares")


def check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return temperature


def apply_temperature(logits: Tensor, mask: Tensor, temperature: float) -> Tensor:
    """softmax(logits / T) over the real options; padded slots are exactly 0. Same dtype as ``logits``."""
    temperature = check_temperature(temperature)
    mask = mask.bool()
    scaled = logits.masked_fill(~mask, 0.0) / temperature  # padded slots may hold inf/NaN: neutralise first
    return masked_softmax(scaled, mask)


def logits_from_probs(probs: Tensor, mask: Tensor, floor: float = PROB_FLOOR) -> Tensor:
    """log(probs), clamped at ``floor``, as logits that temperature scaling can be fitted and applied to.

    Why this is enough: predictions are saved as probabilities p = softmax(z) over the option letters, so
    log p_k = z_k - logsumexp(z) differs from the original logits z only by a per-row constant c. Softmax is
    invariant to per-row constants, and (z - c) / T = z / T - c / T, hence softmax(log p / T) =
    softmax(z / T) exactly: calibration fitted/applied on saved probabilities is identical to calibration
    of the original logits. The only deviation is the floor: probabilities below ``floor`` (including
    exact zeros from float underflow) are raised to it, which keeps every log finite so the KL stays finite.
    Padded slots are 0.
    """
    mask = mask.bool()
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    if probs.shape != mask.shape:
        raise ValueError(f"shapes differ: probs {tuple(probs.shape)}, mask {tuple(mask.shape)}")
    real = probs[mask]
    if torch.isnan(real).any() or torch.isinf(real).any():
        raise ValueError("probabilities contain NaN or inf in real option slots")
    if bool((real < 0).any()):
        raise ValueError("probabilities contain negative values")
    safe = torch.where(mask, probs, torch.ones_like(probs))
    return torch.log(safe.clamp_min(floor)).masked_fill(~mask, 0.0)


def _mean_kl(logits: Tensor, target: Tensor, mask: Tensor, log_target: Tensor, temperature: float) -> float:
    """Mean over rows of KL(target ‖ softmax(logits / T)), float64."""
    log_q = masked_log_softmax(logits / temperature, mask)
    return float(kl_rows_from_logs(target, log_target, log_q, mask).mean())


def fit_temperature(
    logits: Tensor,
    target: Tensor,
    mask: Tensor,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> float:
    """The temperature T in ``bounds`` minimising mean KL(human ‖ softmax(logits / T)) over the rows.

    KL from the human distribution is the paper's training objective, so the fit targets the same
    quantity. The search runs over log T (so sharpening and flattening by the same factor are symmetric)
    with scipy's bounded Brent method in float64: deterministic, derivative-free and reliable here because
    the objective is convex in 1/T, hence unimodal in log T. The result is never worse on this data than
    T = 1: unless the search improves the mean KL over T = 1 by more than 1e-12 nats, exactly 1.0 is
    returned (so an already calibrated model is left untouched rather than nudged by rounding noise).
    """
    lo, hi = (float(b) for b in bounds)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise ValueError(f"bounds must satisfy 0 < low < high, got {bounds}")
    _check_batch(logits, target, mask)
    mask = mask.bool()
    logits = logits.detach().to(torch.float64).masked_fill(~mask, 0.0)
    target = target.detach().to(torch.float64).masked_fill(~mask, 0.0)
    log_target = safe_log(target)

    def objective(log_t: float) -> float:
        return _mean_kl(logits, target, mask, log_target, math.exp(log_t))

    result = minimize_scalar(
        objective, bounds=(math.log(lo), math.log(hi)), method="bounded", options={"xatol": 1e-10}
    )
    temperature = math.exp(float(result.x))
    baseline = _mean_kl(logits, target, mask, log_target, 1.0) if lo <= 1.0 <= hi else math.inf
    if baseline <= float(result.fun) + _NEGLIGIBLE_KL:
        return 1.0
    return temperature


def calibrate_predictions(
    valid_pred: Sequence[Sequence[float]],
    valid_target: Sequence[Sequence[float]],
    test_pred: Mapping[str, Sequence[Sequence[float]]],
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> tuple[float, dict[str, list[list[float]]]]:
    """Fit T on the valid split's saved probabilities and apply it to every test subset's predictions.

    Inputs are ragged lists of per-row probabilities (one share per option, as in predictions.jsonl).
    Returns the temperature and the recalibrated predictions, keyed and ordered as ``test_pred``, each row
    with its own number of options.
    """
    if len(valid_pred) == 0:
        raise ValueError("no valid predictions to fit a temperature on")
    if len(valid_pred) != len(valid_target):
        raise ValueError(f"{len(valid_pred)} valid predictions for {len(valid_target)} valid targets")
    for i, (p, t) in enumerate(zip(valid_pred, valid_target)):
        if len(p) != len(t):
            raise ValueError(f"valid row {i}: {len(p)} predicted shares for {len(t)} human shares")
    probs, mask = pad_distributions(valid_pred)
    target, _ = pad_distributions(valid_target)
    temperature = fit_temperature(logits_from_probs(probs, mask), target, mask, bounds=bounds)
    return temperature, rescale_predictions(test_pred, temperature)


def rescale_predictions(predictions: Mapping[str, Sequence[Sequence[float]]],
                        temperature: float) -> dict[str, list[list[float]]]:
    """softmax(log p / T) for every row of every subset (ragged rows, same keys and order)."""
    rescaled: dict[str, list[list[float]]] = {}
    for subset, rows in predictions.items():
        if len(rows) == 0:
            rescaled[subset] = []
            continue
        subset_probs, subset_mask = pad_distributions(rows)
        logits = logits_from_probs(subset_probs, subset_mask)
        _check_batch(logits, None, subset_mask)
        scaled = apply_temperature(logits, subset_mask, temperature)
        rescaled[subset] = [scaled[i, : len(row)].tolist() for i, row in enumerate(rows)]
    return rescaled
