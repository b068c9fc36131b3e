"""Temperature scaling: recovery of a known temperature on ragged synthetic rows, padding invariance,
the never-worse-than-T=1 guarantee, identity at T = 1, and input errors."""

from __future__ import annotations

import math

import pytest
import torch

from simlab.metrics.divergences import masked_softmax
from simlab.metrics.registry import kl_div_rows
from simlab.simulator.temperature import (
    apply_temperature,
    calibrate_predictions,
    fit_temperature,
    logits_from_probs,
)

RAGGED_KS = (2, 3, 4, 5, 7, 11)


def _ragged_batch(true_temperature: float = 2.0, rows: int = 60, seed: int = 0):
    """Logits z (scale 3, ragged K, padded with junk), predictions softmax(z), targets softmax(z / T)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(RAGGED_KS)
    logits = torch.randn(rows, width, generator=gen, dtype=torch.float64) * 3.0
    ks = torch.tensor([RAGGED_KS[i % len(RAGGED_KS)] for i in range(rows)])
    mask = torch.arange(width)[None, :] < ks[:, None]
    logits = logits.masked_fill(~mask, 123.0)  # padded slots hold anything
    preds = masked_softmax(logits, mask)
    target = masked_softmax(logits / true_temperature, mask)
    return logits, preds, target, mask


def _mean_kl(preds, target, mask) -> float:
    return float(kl_div_rows(preds, target, mask).mean())


@pytest.mark.parametrize("true_temperature", [0.5, 2.0])
def test_recovers_temperature_from_logits(true_temperature):
    logits, _, target, mask = _ragged_batch(true_temperature)
    assert fit_temperature(logits, target, mask) == pytest.approx(true_temperature, abs=1e-2)


def test_recovers_temperature_from_probabilities():
    _, preds, target, mask = _ragged_batch(2.0)
    temperature = fit_temperature(logits_from_probs(preds, mask), target, mask)
    assert temperature == pytest.approx(2.0, abs=1e-2)


def test_softmax_of_log_probs_equals_scaled_logits():
    logits, preds, _, mask = _ragged_batch()
    for temperature in (0.3, 1.0, 2.5):
        from_probs = apply_temperature(logits_from_probs(preds, mask), mask, temperature)
        from_logits = apply_temperature(logits, mask, temperature)
        torch.testing.assert_close(from_probs, from_logits, atol=1e-10, rtol=0)


def test_calibrate_predictions_on_ragged_lists():
    _, preds, target, mask = _ragged_batch(2.0)
    ks = mask.sum(dim=-1).tolist()
    valid_pred = [preds[i, :k].tolist() for i, k in enumerate(ks)]
    valid_target = [target[i, :k].tolist() for i, k in enumerate(ks)]
    temperature, calibrated = calibrate_predictions(valid_pred, valid_target, {"test": valid_pred, "empty": []})
    assert temperature == pytest.approx(2.0, abs=1e-2)
    assert calibrated["empty"] == []
    assert [len(row) for row in calibrated["test"]] == ks
    for got, want in zip(calibrated["test"], valid_target):
        assert sum(got) == pytest.approx(1.0, abs=1e-12)
        assert got == pytest.approx(want, abs=1e-4)


def test_fitted_temperature_never_increases_valid_kl():
    for seed in range(4):
        # targets that are not a tempered copy of the predictions: an arbitrary mismatch
        logits, preds, _, mask = _ragged_batch(seed=seed)
        gen = torch.Generator().manual_seed(100 + seed)
        target = masked_softmax(torch.randn(mask.shape, generator=gen, dtype=torch.float64), mask)
        temperature = fit_temperature(logits, target, mask)
        assert temperature > 0
        calibrated = apply_temperature(logits, mask, temperature)
        assert _mean_kl(calibrated, target, mask) <= _mean_kl(preds, target, mask) + 1e-12


def test_returns_one_when_already_calibrated():
    logits, preds, _, mask = _ragged_batch()
    assert fit_temperature(logits, preds, mask) == pytest.approx(1.0, abs=1e-4)


def test_temperature_one_is_identity():
    logits, preds, _, mask = _ragged_batch()
    torch.testing.assert_close(apply_temperature(logits, mask, 1.0), preds, atol=1e-15, rtol=0)
    assert bool((apply_temperature(logits, mask, 3.0)[~mask] == 0).all())
    _, calibrated = calibrate_predictions([[0.2, 0.8]], [[0.2, 0.8]], {"test": [[0.1, 0.2, 0.7], [0.4, 0.6]]})
    # the valid rows are already perfect, so T = 1 and test predictions come back unchanged
    assert calibrated["test"][0] == pytest.approx([0.1, 0.2, 0.7], abs=1e-12)
    assert calibrated["test"][1] == pytest.approx([0.4, 0.6], abs=1e-12)


def test_padding_does_not_change_fit():
    logits, _, target, mask = _ragged_batch(2.0, rows=12)
    padded = fit_temperature(logits, target, mask)
    wide_logits = torch.cat([logits, torch.full((12, 5), float("nan"), dtype=torch.float64)], dim=1)
    wide_target = torch.cat([target, torch.zeros(12, 5, dtype=torch.float64)], dim=1)
    wide_mask = torch.cat([mask, torch.zeros(12, 5, dtype=torch.bool)], dim=1)
    assert fit_temperature(wide_logits, wide_target, wide_mask) == pytest.approx(padded, abs=1e-9)

    # rows with the same K, fitted unpadded ([n, 3], all real) and inside the padded [n, 11] batch
    same_k = [i for i in range(12) if int(mask[i].sum()) == 3]
    k = 3
    alone = fit_temperature(logits[same_k, :k], target[same_k, :k], mask[same_k, :k])
    inside = fit_temperature(logits[same_k], target[same_k], mask[same_k])
    assert alone == pytest.approx(inside, abs=1e-9)


def test_float32_inputs():
    logits, _, target, mask = _ragged_batch(2.0)
    temperature = fit_temperature(logits.float(), target.float(), mask)
    assert temperature == pytest.approx(2.0, abs=1e-2)
    assert apply_temperature(logits.float(), mask, temperature).dtype == torch.float32


def test_bad_inputs():
    logits, _, target, mask = _ragged_batch(rows=4)
    with pytest.raises(ValueError, match="non-empty"):
        fit_temperature(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3, dtype=torch.bool))
    nan_logits = logits.clone()
    nan_logits[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(nan_logits, target, mask)
    nan_target = target.clone()
    nan_target[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_temperature(logits, nan_target, mask)
    with pytest.raises(ValueError, match="shapes"):
        fit_temperature(logits, target[:, :3], mask)
    empty_row = mask.clone()
    empty_row[2] = False
    with pytest.raises(ValueError, match="at least one real option"):
        fit_temperature(logits, target, empty_row)
    with pytest.raises(ValueError, match="bounds"):
        fit_temperature(logits, target, mask, bounds=(0.0, 10.0))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(logits, mask, bad)
    with pytest.raises(ValueError, match="NaN"):
        logits_from_probs(torch.tensor([[math.nan, 0.5]]), torch.tensor([[True, True]]))
    with pytest.raises(ValueError, match="no valid predictions"):
        calibrate_predictions([], [], {})
    with pytest.raises(ValueError, match="valid row 0"):
        calibrate_predictions([[0.5, 0.5]], [[0.2, 0.3, 0.5]], {})
    with pytest.raises(ValueError, match="1 valid predictions for 2"):
        calibrate_predictions([[0.5, 0.5]], [[0.5, 0.5], [0.5, 0.5]], {})


def test_recalibrate_is_the_task_step_and_the_analysis():
    """Re-scoring after calibration, written once: a fitted temperature and a saved one give the same scores as
    scoring the rescaled predictions by hand, and the post-test analysis reports exactly those."""
    from simlab.analysis.post_test import analyse, recalibrate
    from simlab.data.rows import SurveyRow
    from simlab.metrics.scoring import score_subsets
    from simlab.simulator.temperature import rescale_predictions

    _, preds, target, mask = _ragged_batch(2.0)
    ks = mask.sum(dim=-1).tolist()
    letters = "ABCDEFGHIJK"

    def row(i, k):
        return SurveyRow("V", str(i), "Japan", "", "q", tuple(f"({c})x" for c in letters[:k]), tuple(letters[:k]),
                         tuple(target[i, :k].tolist()), None, "f", i)

    rows = {"V": [row(i, k) for i, k in enumerate(ks)], "T": [row(i, k) for i, k in enumerate(ks)]}
    predicted = {s: [preds[i, :k].tolist() for i, k in enumerate(ks)] for s in rows}
    fitted = recalibrate(rows, predicted, fit_on="V")
    assert fitted.temperature == pytest.approx(2.0, abs=1e-2)
    assert fitted.predictions == rescale_predictions(predicted, fitted.temperature)
    assert fitted.scores == score_subsets(rows, fitted.predictions)
    assert fitted.scores["T"]["kl"] < score_subsets(rows, predicted)["T"]["kl"]
    saved = recalibrate(rows, predicted, temperature=fitted.temperature)
    assert saved == fitted
    calibrated = analyse(rows, predicted, ["V", "T"], calibrate_on="V", ceiling_samples=5)["calibrated"]
    assert calibrated["temperature"] == fitted.temperature and calibrated["fitted_on"] == "V"
    assert calibrated["subsets"] == fitted.scores
    with pytest.raises(ValueError, match="either a temperature or the subset"):
        recalibrate(rows, predicted, temperature=1.5, fit_on="V")
    with pytest.raises(ValueError, match="fitted on 'C9', which was not tested"):
        recalibrate(rows, predicted, fit_on="C9")
