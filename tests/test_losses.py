"""Losses against closed forms / scipy / POT, padding invariance and gradient health."""

from __future__ import annotations

import math

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy

from simlab.metrics.divergences import js_divergence_rows, kl_rows, masked_log_softmax, masked_softmax, w1_rows
from simlab.training.losses import (
    JensenShannonLoss,
    KLDivergenceLoss,
    MajorityCrossEntropyLoss,
    WassersteinLoss,
)

RAGGED_KS = (2, 4, 11, 26)

# POT's 1-D solver transposes a 1-D tensor internally, which torch deprecates; not our code
pytestmark = pytest.mark.filterwarnings("ignore:The use of `x.T`:UserWarning")


def _reference_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(entropy(p, q))


def _reference_js(p: np.ndarray, q: np.ndarray) -> float:
    return float(jensenshannon(p, q) ** 2)


def _reference_w1(p: np.ndarray, q: np.ndarray) -> float:
    positions = torch.arange(len(p), dtype=torch.float64)
    distance = ot.wasserstein_1d(positions, positions, torch.from_numpy(p), torch.from_numpy(q), p=1)
    return float(distance) / (len(p) - 1)


def _reference_ce(p: np.ndarray, q: np.ndarray) -> float:
    return float(-np.log(q[np.argmax(p)]))


REFERENCES = {
    KLDivergenceLoss: _reference_kl,
    JensenShannonLoss: _reference_js,
    WassersteinLoss: _reference_w1,
    MajorityCrossEntropyLoss: _reference_ce,
}
ALL_LOSSES = list(REFERENCES)
DIVERGENCE_LOSSES = [KLDivergenceLoss, JensenShannonLoss, WassersteinLoss]


def ragged_batch(ks, seed: int = 0, dtype=torch.float64, zero_some_targets: bool = True):
    """Padded logits/target/mask plus the unpadded rows; padded logits hold large garbage values."""
    rng = np.random.default_rng(seed)
    width = max(ks)
    logits = torch.from_numpy(rng.normal(0.0, 1e3, size=(len(ks), width)))  # garbage in padded slots
    target = torch.zeros(len(ks), width, dtype=torch.float64)
    mask = torch.zeros(len(ks), width, dtype=torch.bool)
    rows = []
    for i, k in enumerate(ks):
        row_logits = rng.normal(0.0, 2.0, size=k)
        p = rng.dirichlet(np.ones(k))
        if zero_some_targets and k > 2:
            p[rng.integers(k)] = 0.0  # humans often leave an option unchosen
            p /= p.sum()
        logits[i, :k] = torch.from_numpy(row_logits)
        target[i, :k] = torch.from_numpy(p)
        mask[i, :k] = True
        rows.append((row_logits, p))
    return logits.to(dtype), target.to(dtype), mask, rows


def test_masked_softmax_ignores_padded_slots():
    logits, _, mask, rows = ragged_batch(RAGGED_KS)
    q = masked_softmax(logits, mask)
    log_q = masked_log_softmax(logits, mask)
    for i, (row_logits, _) in enumerate(rows):
        k = len(row_logits)
        np.testing.assert_allclose(q[i, :k].numpy(), softmax(row_logits), atol=1e-12)
        assert torch.all(q[i, k:] == 0.0)
        assert torch.all(log_q[i, k:] == torch.finfo(log_q.dtype).min)
    assert torch.isfinite(log_q).all()


@pytest.mark.parametrize("loss_cls", ALL_LOSSES)
def test_loss_matches_reference_per_row_and_as_batch_mean(loss_cls):
    logits, target, mask, rows = ragged_batch(RAGGED_KS, seed=1)
    reference = REFERENCES[loss_cls]
    expected = [reference(p, softmax(row_logits)) for row_logits, p in rows]
    loss = loss_cls()
    for i, want in enumerate(expected):
        got = loss(logits[i : i + 1], target[i : i + 1], mask[i : i + 1])
        assert got.item() == pytest.approx(want, abs=1e-9), f"row {i} (k={RAGGED_KS[i]})"
    assert loss(logits, target, mask).item() == pytest.approx(np.mean(expected), abs=1e-9)


@pytest.mark.parametrize("loss_cls", ALL_LOSSES)
def test_padding_does_not_change_a_rows_value(loss_cls):
    logits, target, mask, rows = ragged_batch(RAGGED_KS, seed=2)
    loss = loss_cls()
    alone = []
    for i, (row_logits, p) in enumerate(rows):
        k = len(p)
        unpadded = loss(
            torch.from_numpy(row_logits)[None], torch.from_numpy(p)[None], torch.ones(1, k, dtype=torch.bool)
        )
        padded = loss(logits[i : i + 1], target[i : i + 1], mask[i : i + 1])
        torch.testing.assert_close(padded, unpadded, atol=1e-12, rtol=0)
        alone.append(unpadded)
    torch.testing.assert_close(loss(logits, target, mask), torch.stack(alone).mean(), atol=1e-12, rtol=0)


def test_kl_is_not_divided_by_number_of_options():
    # uniform model over 4 options vs p = (0.7, 0.1, 0.1, 0.1): 0.7 ln 2.8 + 0.3 ln 0.4 = 0.44585 (not / 4)
    target = torch.tensor([[0.7, 0.1, 0.1, 0.1, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True, False]])
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0, 50.0]], dtype=torch.float64)
    value = KLDivergenceLoss()(logits, target, mask).item()
    assert value == pytest.approx(0.7 * math.log(2.8) + 0.3 * math.log(0.4), abs=1e-12)
    assert value == pytest.approx(0.4458463724645642, abs=1e-12)


def test_js_uses_target_as_given_not_softmaxed():
    target = torch.tensor([[1.0, 0.0, 0.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    logits = torch.log(target.clamp_min(1e-300))  # model == target
    assert JensenShannonLoss()(logits, target, mask).item() == pytest.approx(0.0, abs=1e-12)


def test_majority_ce_breaks_ties_at_first_index():
    target = torch.tensor([[0.2, 0.4, 0.4, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    logits = torch.tensor([[0.0, 1.0, 2.0, 9.0]], dtype=torch.float64)
    q = softmax([0.0, 1.0, 2.0])
    assert MajorityCrossEntropyLoss()(logits, target, mask).item() == pytest.approx(-math.log(q[1]), abs=1e-12)


def test_wasserstein_counts_distance_between_positions():
    # all mass on the first option vs all on the last: maximal, normalised to 1 for any k
    for k in (2, 5, 9):
        p = torch.zeros(1, k + 3, dtype=torch.float64)
        q = torch.zeros(1, k + 3, dtype=torch.float64)
        mask = torch.zeros(1, k + 3, dtype=torch.bool)
        p[0, 0], q[0, k - 1], mask[0, :k] = 1.0, 1.0, True
        assert w1_rows(p, q, mask).item() == pytest.approx(1.0, abs=1e-12)
        q[0, k - 1], q[0, 1] = 0.0, 1.0  # neighbour: one step out of k - 1
        assert w1_rows(p, q, mask).item() == pytest.approx(1.0 / (k - 1), abs=1e-12)


@pytest.mark.parametrize("loss_cls", ALL_LOSSES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gradients_are_finite_nonzero_on_real_options_and_zero_on_padding(loss_cls, dtype):
    logits, target, mask, _ = ragged_batch(RAGGED_KS, seed=3, dtype=dtype)
    logits[1, 0] = -200.0  # a real option whose probability underflows to 0 in float32
    logits.requires_grad_(True)
    value = loss_cls()(logits, target, mask)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()
    assert torch.all(logits.grad[~mask] == 0.0)
    for i, k in enumerate(RAGGED_KS):
        assert logits.grad[i, :k].abs().sum() > 0, f"row {i} gets no gradient"


@pytest.mark.parametrize("loss_cls", ALL_LOSSES)
def test_losses_are_positive_for_different_distributions(loss_cls):
    for seed in range(5):
        logits, target, mask, _ = ragged_batch(RAGGED_KS, seed=10 + seed)
        assert loss_cls()(logits, target, mask).item() > 0.0


@pytest.mark.parametrize("loss_cls", DIVERGENCE_LOSSES)
def test_divergences_vanish_when_model_equals_target(loss_cls):
    _, target, mask, _ = ragged_batch(RAGGED_KS, seed=4, zero_some_targets=False)
    logits = torch.where(mask, target, torch.ones_like(target)).log()
    value = loss_cls()(logits, target, mask).item()
    assert value == pytest.approx(0.0, abs=1e-12)


def test_row_functions_handle_zero_probabilities():
    p = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.5, 0.0, 0.5, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[True, True, True, False]])
    assert kl_rows(p, q, mask).item() == math.inf  # q = 0 where p > 0
    assert kl_rows(q, q, mask).item() == 0.0
    assert js_divergence_rows(p, q, mask).item() == pytest.approx(jensenshannon([0.5, 0.5, 0], [0.5, 0, 0.5]) ** 2)
    assert w1_rows(p, q, mask).item() == pytest.approx(0.25)  # 0.5 mass moves 1 step, divided by k - 1 = 2
