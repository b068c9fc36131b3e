"""Metrics against scipy / POT on random ragged batches, accumulation, and the collection's keys."""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from scipy.stats import wasserstein_distance

from simlab.metrics.divergences import majority_option
from simlab.metrics.registry import (
    RowMeanMetric,
    accuracy_rows,
    emd_paper_rows,
    emd_rows,
    kl_div_rows,
    metric_spec,
    one_minus_jsd_rows,
    row_mean_metric,
    survey_metrics,
)

RAGGED_KS = (2, 3, 4, 5, 7, 11, 26)


def _reference_one_minus_jsd(pred: np.ndarray, human: np.ndarray) -> float:
    return 1.0 - jensenshannon(human, pred)


def _reference_emd(pred: np.ndarray, human: np.ndarray) -> float:
    positions = np.arange(len(human), dtype=np.float64)
    return ot.wasserstein_1d(positions, positions, human, pred, p=1) / (len(human) - 1)


def _reference_emd_paper(pred: np.ndarray, human: np.ndarray) -> float:
    return wasserstein_distance(human, pred)


def _reference_accuracy(pred: np.ndarray, human: np.ndarray) -> float:
    """Expected argmax agreement when ties (within 1e-12 relative of the maximum) are broken uniformly at random."""
    tied_pred = [i for i, v in enumerate(pred) if v >= pred.max() * (1 - 1e-12)]
    tied_human = [j for j, v in enumerate(human) if v >= human.max() * (1 - 1e-12)]
    return float(np.mean([float(i == j) for i in tied_pred for j in tied_human]))


def _reference_kl(pred: np.ndarray, human: np.ndarray) -> float:
    return rel_entr(human, np.maximum(pred, 1e-12)).sum()


CASES = {  # name: (per-row function, reference on one row)
    "one_minus_jsd": (one_minus_jsd_rows, _reference_one_minus_jsd),
    "emd": (emd_rows, _reference_emd),
    "emd_paper": (emd_paper_rows, _reference_emd_paper),
    "accuracy": (accuracy_rows, _reference_accuracy),
    "kl": (kl_div_rows, _reference_kl),
}


def _metric(name: str) -> RowMeanMetric:
    """The registered metric's torchmetrics object, as survey_metrics() builds it."""
    metric = row_mean_metric(name)
    assert isinstance(metric, RowMeanMetric) and metric.higher_is_better == metric_spec(name).higher_is_better
    return metric


def _random_distribution(rng: np.random.Generator, k: int) -> np.ndarray:
    p = rng.dirichlet(np.full(k, 0.7))
    if k > 2 and rng.random() < 0.5:
        p[rng.integers(k)] = 0.0  # exact zeros exercise 0 log 0 and the KL clamp
        p /= p.sum()
    return p


def ragged_batch(seed: int, ks=RAGGED_KS, width: int | None = None, pad_value: float = 0.0):
    """Padded preds/target/mask plus the unpadded (pred, human) rows; padded slots hold ``pad_value``."""
    rng = np.random.default_rng(seed)
    width = width or max(ks)
    preds = torch.full((len(ks), width), pad_value, dtype=torch.float64)
    target = torch.full((len(ks), width), pad_value, dtype=torch.float64)
    mask = torch.zeros(len(ks), width, dtype=torch.bool)
    rows = []
    for i, k in enumerate(ks):
        pred, human = _random_distribution(rng, k), _random_distribution(rng, k)
        preds[i, :k], target[i, :k], mask[i, :k] = torch.from_numpy(pred), torch.from_numpy(human), True
        rows.append((pred, human))
    return preds, target, mask, rows


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rows_and_metric_match_reference(name, seed):
    row_fn, reference = CASES[name]
    assert metric_spec(name).rows is row_fn
    preds, target, mask, rows = ragged_batch(seed)
    expected = np.array([reference(pred, human) for pred, human in rows])

    per_row = row_fn(preds, target, mask)
    assert per_row.dtype == torch.float64 and per_row.shape == (len(rows),)
    np.testing.assert_allclose(per_row.numpy(), expected, atol=1e-6, rtol=0)

    metric = _metric(name)
    metric.update(preds, target, mask)
    assert metric.compute().item() == pytest.approx(expected.mean(), abs=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_values_in_padded_slots_are_ignored(name):
    row_fn, _ = CASES[name]
    clean = ragged_batch(seed=5)
    noisy = ragged_batch(seed=5, width=30, pad_value=0.9)
    torch.testing.assert_close(row_fn(*noisy[:3]), row_fn(*clean[:3]), atol=1e-12, rtol=0)


@pytest.mark.parametrize("name", list(CASES))
def test_float32_inputs_are_scored_in_float64(name):
    row_fn, reference = CASES[name]
    preds, target, mask, _ = ragged_batch(seed=6)
    preds32, target32 = preds.float(), target.float()
    expected = [
        reference(preds32[i, :k].double().numpy(), target32[i, :k].double().numpy())
        for i, k in enumerate(mask.sum(-1).tolist())
    ]
    per_row = row_fn(preds32, target32, mask)
    assert per_row.dtype == torch.float64
    np.testing.assert_allclose(per_row.numpy(), expected, atol=1e-6, rtol=0)


def test_emd_paper_ignores_option_positions_unlike_emd():
    human = torch.tensor([[0.7, 0.2, 0.1]], dtype=torch.float64)
    reversed_pred = torch.tensor([[0.1, 0.2, 0.7]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    assert emd_paper_rows(reversed_pred, human, mask).item() == pytest.approx(0.0, abs=1e-12)
    assert emd_rows(reversed_pred, human, mask).item() == pytest.approx(0.6, abs=1e-12)  # 0.6 mass, 2 steps, /2


def test_accuracy_on_hand_made_case():
    preds = torch.tensor(
        [
            [0.6, 0.4, 0.0, 0.0],  # agrees
            [0.1, 0.2, 0.7, 0.0],  # disagrees
            [0.5, 0.5, 0.0, 0.0],  # two-way tie, one of them the human majority: 0.5
            [0.2, 0.3, 0.5, 0.0],  # padded slot value would win if not masked; real argmax 2 agrees
        ],
        dtype=torch.float64,
    )
    target = torch.tensor(
        [[0.9, 0.1, 0, 0], [0.2, 0.5, 0.3, 0], [0.8, 0.2, 0, 0], [0.1, 0.1, 0.8, 0]], dtype=torch.float64
    )
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    preds[3, 3] = 0.99
    assert accuracy_rows(preds, target, mask).tolist() == [1.0, 0.0, 0.5, 1.0]
    metric = _metric("accuracy")
    metric.update(preds, target, mask)
    assert metric.compute().item() == pytest.approx(0.625)


@pytest.mark.parametrize("k", RAGGED_KS)
def test_accuracy_of_a_uniform_guess_is_one_over_k(k):
    rng = np.random.default_rng(k)
    humans = torch.from_numpy(np.stack([rng.dirichlet(np.ones(k)) for _ in range(k)]))
    humans[torch.arange(k), torch.arange(k)] = 2.0  # every option is the human majority once
    humans /= humans.sum(-1, keepdim=True)
    mask = torch.ones(k, k, dtype=torch.bool)
    exact = torch.full((k, k), 1.0 / k, dtype=torch.float64)
    via_softmax = torch.softmax(torch.full((k, k), 0.3, dtype=torch.float32), dim=-1)  # float32, as a model gives
    jittered = exact * (1 + 1e-14 * torch.arange(k, dtype=torch.float64))  # last-bit differences still tie
    for uniform in (exact, via_softmax, jittered):
        np.testing.assert_allclose(accuracy_rows(uniform, humans, mask).numpy(), 1.0 / k, rtol=0, atol=1e-15)


def test_accuracy_of_a_clear_argmax_is_unchanged_by_the_tie_rule():
    preds, target, mask, _ = ragged_batch(seed=7)  # random rows: no ties
    first_index = (majority_option(preds, mask) == majority_option(target, mask)).to(torch.float64)
    torch.testing.assert_close(accuracy_rows(preds, target, mask), first_index, atol=0, rtol=0)
    nearly_tied = torch.tensor([[0.4, 0.4 * (1 - 1e-9), 0.2]], dtype=torch.float64)  # a real, if tiny, difference
    mask3 = torch.ones(1, 3, dtype=torch.bool)
    assert accuracy_rows(nearly_tied, torch.tensor([[0.1, 0.6, 0.3]], dtype=torch.float64), mask3).item() == 0.0


def test_accuracy_counts_human_ties_too():
    mask = torch.ones(3, 4, dtype=torch.bool)
    human = torch.tensor([[0.4, 0.4, 0.1, 0.1]] * 3, dtype=torch.float64)
    preds = torch.tensor(
        [
            [0.7, 0.1, 0.1, 0.1],  # names one of the two human majorities: 1/2
            [0.4, 0.4, 0.1, 0.1],  # the same tie: a random pick on each side agrees half the time
            [0.3, 0.1, 0.3, 0.3],  # three-way tie, one shared: 1 / (3 * 2)
        ],
        dtype=torch.float64,
    )
    np.testing.assert_allclose(accuracy_rows(preds, human, mask).numpy(), [0.5, 0.5, 1 / 6], rtol=0, atol=1e-15)


def test_accuracy_metric_over_batches_is_the_mean_of_its_rows():
    """Two updates (one with ties) compute the mean over every row, not the mean of the batch means."""
    first = ragged_batch(seed=8)[:3]
    k = 5
    tied = (torch.full((3, k), 1.0 / k, dtype=torch.float64),
            torch.tensor([[0.5, 0.2, 0.1, 0.1, 0.1], [0.1, 0.1, 0.1, 0.2, 0.5], [0.3, 0.3, 0.2, 0.1, 0.1]],
                         dtype=torch.float64),
            torch.ones(3, k, dtype=torch.bool))
    metric = _metric("accuracy")
    metric.update(*first)
    metric.update(*tied)
    rows = torch.cat([accuracy_rows(*first), accuracy_rows(*tied)])
    assert rows[-3:].tolist() == pytest.approx([0.2, 0.2, 0.2])
    assert metric.compute().item() == pytest.approx(rows.mean().item(), abs=1e-15)


def _pad_to(x: torch.Tensor, width: int) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


@pytest.mark.parametrize("name", list(CASES))
def test_two_updates_equal_one_update_on_the_concatenation(name):
    first = ragged_batch(seed=7, ks=(2, 5, 3))
    second = ragged_batch(seed=8, ks=(26, 4, 11, 2))
    width = max(first[0].shape[1], second[0].shape[1])
    concatenated = [torch.cat([_pad_to(a, width), _pad_to(b, width)]) for a, b in zip(first[:3], second[:3])]

    accumulated = _metric(name)
    accumulated.update(*first[:3])
    accumulated.update(*second[:3])
    at_once = _metric(name)
    at_once.update(*concatenated)
    torch.testing.assert_close(accumulated.compute(), at_once.compute(), atol=1e-12, rtol=0)


def test_survey_metrics_keys_and_independent_states():
    metrics = survey_metrics()
    assert set(metrics.keys()) == {"one_minus_jsd", "emd", "emd_paper", "accuracy", "kl"}

    # A perfect first batch gives identical states for one_minus_jsd and accuracy (and for emd, emd_paper
    # and kl); the metrics must still not share state afterwards.
    preds, target, mask, _ = ragged_batch(seed=9)
    metrics.update(target.clone(), target, mask)
    worse = ragged_batch(seed=10)
    metrics.update(*worse[:3])
    results = metrics.compute()
    for name, (row_fn, _) in CASES.items():
        all_preds = torch.cat([target, worse[0]])
        all_target = torch.cat([target, worse[1]])
        all_mask = torch.cat([mask, worse[2]])
        expected = row_fn(all_preds, all_target, all_mask).mean()
        torch.testing.assert_close(results[name], expected, atol=1e-12, rtol=0, msg=name)
