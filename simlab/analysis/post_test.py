"""What is computed from a run's predictions after its test pass: position bias, the sampling-noise ceiling and
the scores after one temperature fitted on the valid split."""

from __future__ import annotations

from collections.abc import Sequence

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
    sampling-noise ceiling, and (``calibrate_on`` = a tested subset, normally the valid split) every
    metric again after one temperature fitted on that subset."""
    from simlab.analysis.ceiling import noise_ceiling
    from simlab.analysis.position_bias import position_bias
    from simlab.metrics.scoring import score_subsets
    from simlab.simulator.temperature import calibrate_predictions

    extra: dict = {
        "position_bias": {
            s: position_bias([r.target for r in rows[s]], predictions[s]) for s in predictions
        },
        "noise_ceiling": {s: noise_ceiling(rows[s], samples=ceiling_samples, seed=seed) for s in predictions},
    }
    if calibrate_on:
        if calibrate_on not in predictions:
            raise ValueError(f"calibrate_on={calibrate_on!r} was not tested (tested: {sorted(predictions)})")
        temperature, calibrated = calibrate_predictions(
            predictions[calibrate_on], [list(r.target) for r in rows[calibrate_on]], predictions
        )
        scores = score_subsets(rows, calibrated)
        extra["calibrated"] = summarize(scores, average_subsets, temperature=temperature, fitted_on=calibrate_on)
    return extra
