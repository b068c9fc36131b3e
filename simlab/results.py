"""Run outputs: metrics.json, predictions.jsonl and a markdown table, all from the same test pass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .data.rows import SurveyRow
from .rundir import atomic_writer

METRIC_ORDER = ("one_minus_jsd", "emd", "emd_paper", "accuracy", "kl")
AVERAGE_METRICS = ("one_minus_jsd", "emd", "accuracy")


def summarize(
    test_results: dict[str, dict[str, float]],
    average_subsets: Sequence[str],
    **info,
) -> dict:
    """``{**info, "subsets": {...}, "paper_average": {...}}``; the average is over ``average_subsets``
    (all of which must have been tested, or it is left out and says why)."""
    summary = dict(info)
    summary["subsets"] = {name: dict(values) for name, values in test_results.items()}
    missing = [s for s in average_subsets if s not in test_results]
    if average_subsets and not missing:
        summary["paper_average"] = {
            m: sum(test_results[s][m] for s in average_subsets) / len(average_subsets) for m in AVERAGE_METRICS
        }
        summary["paper_average_subsets"] = list(average_subsets)
    elif average_subsets:
        summary["paper_average"] = None
        summary["paper_average_missing"] = missing
    return summary


def write_predictions(
    path: Path, rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
    **extra: dict[str, list[list[float]]],
) -> int:
    """One JSON line per tested row (written atomically); every row of every tested subset must have a prediction.
    ``extra``: more per-row values by field name (e.g. ``predicted_uncalibrated``), keyed like ``predictions``."""
    written = 0
    with atomic_writer(path) as handle:
        for subset, predicted in predictions.items():
            subset_rows = rows[subset]
            if len(predicted) != len(subset_rows):
                raise RuntimeError(f"subset {subset}: {len(predicted)} predictions for {len(subset_rows)} rows")
            for index, row in enumerate(subset_rows):
                record = {
                    "subset": subset,
                    "country": row.country,
                    "question_id": row.question_id,
                    "letters": list(row.letters),
                    **({"prompt_country": row.prompt_country} if row.prompt_country else {}),
                    **({"option_order": list(row.option_order)} if row.option_order else {}),
                    "human": list(row.target),
                    "predicted": predicted[index],
                    **{name: values[subset][index] for name, values in extra.items()},
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    return written


def _title(summary: dict) -> str:
    if summary.get("task") == "baseline":
        return f"baseline: {summary.get('baseline')}"
    return f"{summary.get('task', 'run')}: {summary.get('model', '')} (loss {summary.get('loss') or '-'})"


def results_table(summary: dict) -> str:
    """Markdown tables: one row per subset, then the paper's average; the calibrated metrics if present."""
    lines = [f"# {_title(summary)}", ""]
    settings = {k: v for k, v in (summary.get("settings") or {}).items() if v is True}
    if settings:
        lines += [f"Settings: {', '.join(settings)}", ""]
    lines += _metrics_table(summary, summary.get("noise_ceiling"))
    calibration, uncalibrated = summary.get("calibration"), summary.get("uncalibrated")
    if calibration and uncalibrated:
        lines[2:2] = [f"The calibrated simulator: T = {calibration['temperature']:.3f} "
                      f"({calibration['source']}; fitted on {calibration['fitted_on']}); "
                      f"the numbers before calibration follow the table.", ""]
        lines += ["", "## Before calibration", ""] + _metrics_table(uncalibrated, None)
    calibrated = summary.get("calibrated")
    if calibrated:
        lines += ["", f"## After temperature scaling (T = {calibrated['temperature']:.3f}, fitted on "
                  f"{calibrated['fitted_on']})", ""]
        lines += _metrics_table(calibrated, None)
    lines += ["", "1-JSD: 1 - Jensen-Shannon distance (natural log). EMD: W1 over option positions / (K-1). "
              "EMD (paper): the reference code's scipy wasserstein_distance on probability values, for comparison "
              "only. Ceiling: expected 1-JSD of a perfect simulator against a survey of the same size (rows with n)."]
    return "\n".join(lines) + "\n"


def _metrics_table(summary: dict, ceiling: dict | None) -> list[str]:
    lines = [
        "| subset | n | 1-JSD | EMD | EMD (paper) | accuracy | KL | ceiling 1-JSD |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in summary["subsets"].items():
        cells = " | ".join(f"{values[m]:.4f}" for m in METRIC_ORDER)
        bound = (ceiling or {}).get(name, {}).get("one_minus_jsd")
        lines.append(f"| {name} | {values['n']} | {cells} | {'' if bound is None else f'{bound:.4f}'} |")
    average = summary.get("paper_average")
    if average:
        subsets = ", ".join(summary["paper_average_subsets"])
        lines.append(
            f"| paper average ({subsets}) | | {average['one_minus_jsd']:.4f} | {average['emd']:.4f} | | "
            f"{average['accuracy']:.4f} | | |"
        )
    return lines


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
    from .calibration import calibrate_predictions
    from .ceiling import noise_ceiling
    from .evaluation import score_subsets
    from .position_bias import position_bias

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


def predictions_in_row_order(predictions: dict[str, dict[int, list[float]]]) -> dict[str, list[list[float]]]:
    return {s: [p[i] for i in range(len(p))] for s, p in predictions.items()}
