"""What is computed from a run's predictions after its test pass: position bias, the sampling-noise ceiling, what the
simulator is worth in respondents and the scores after one temperature (:func:`recalibrate`, also the calibration
step of a scoring task)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from simlab.data.rows import SurveyRow
from simlab.runs.metrics_file import summarize


def analyse(
    rows: dict[str, list[SurveyRow]],
    predictions: dict[str, list[list[float]]],
    average_subsets: Sequence[str] = (),
    calibrate_on: str | None = None,
    ceiling_samples: int = 200,
    seed: int = 0,
) -> dict:
    """Everything computed from the predictions after the test pass: per-subset position bias, the
    sampling-noise ceiling, the effective number of respondents (:mod:`simlab.analysis.respondents`), and
    (``calibrate_on`` = a tested subset, normally the valid split) every metric again after one temperature fitted
    on that subset."""
    from simlab.analysis.ceiling import noise_ceiling
    from simlab.analysis.position_bias import position_bias
    from simlab.analysis.respondents import subset_effective_respondents

    extra: dict = {
        "position_bias": {
            s: position_bias([r.target for r in rows[s]], predictions[s]) for s in predictions
        },
        "noise_ceiling": {s: noise_ceiling(rows[s], samples=ceiling_samples, seed=seed) for s in predictions},
        "effective_respondents": subset_effective_respondents(rows, predictions, seed=seed),
    }
    if calibrate_on:
        if calibrate_on not in predictions:
            raise ValueError(f"calibrate_on={calibrate_on!r} was not tested (tested: {sorted(predictions)})")
        calibrated = recalibrate(rows, predictions, fit_on=calibrate_on)
        extra["calibrated"] = summarize(calibrated.scores, average_subsets, temperature=calibrated.temperature,
                                        fitted_on=calibrate_on)
    return extra


@dataclass(frozen=True)
class Recalibrated:
    """Every tested subset's predictions after one temperature, and their scores (``score_subsets``)."""

    temperature: float
    predictions: dict[str, list[list[float]]]
    scores: dict[str, dict[str, float]]


def recalibrate(
    rows: dict[str, list[SurveyRow]],
    predictions: dict[str, list[list[float]]],
    *,
    temperature: float | None = None,
    fit_on: str | None = None,
) -> Recalibrated:
    """Apply ``temperature`` (a saved one), or one fitted on ``fit_on``'s rows, to every subset's predictions and
    score them again: re-scoring after calibration, for the task's calibration step and the post-test analysis."""
    from simlab.metrics.scoring import score_subsets
    from simlab.simulator.temperature import calibrate_predictions, rescale_predictions

    if (temperature is None) == (fit_on is None):
        raise ValueError("recalibrate: give either a temperature or the subset to fit one on")
    if fit_on is not None:
        if fit_on not in predictions:
            raise ValueError(f"the temperature is fitted on {fit_on!r}, which was not tested (tested: "
                             f"{sorted(predictions)})")
        temperature, calibrated = calibrate_predictions(
            predictions[fit_on], [list(r.target) for r in rows[fit_on]], predictions
        )
    else:
        calibrated = rescale_predictions(predictions, temperature)
    return Recalibrated(temperature, calibrated, score_subsets(rows, calibrated))
