"""Run outputs: metrics.json, predictions.jsonl and a markdown table, all from the same test pass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .data.rows import SurveyRow
from .metrics import metric_names, registered_metrics
from .rundir import atomic_writer

CEILING_NOTE = "Ceiling: expected 1-JSD of a perfect simulator against a survey of the same size (rows with n)."


def summarize(
    test_results: dict[str, dict[str, float]],
    average_subsets: Sequence[str],
    **info,
) -> dict:
    """``{**info, "subsets": {...}, "paper_average": {...}}``; the average is over ``average_subsets``
    (all of which must have been tested, or it is left out and says why), of the metrics registered with
    ``in_average`` (:mod:`simlab.metrics`)."""
    summary = dict(info)
    summary["subsets"] = {name: dict(values) for name, values in test_results.items()}
    missing = [s for s in average_subsets if s not in test_results]
    if average_subsets and not missing:
        summary["paper_average"] = {
            m: sum(test_results[s][m] for s in average_subsets) / len(average_subsets)
            for m in metric_names(in_average=True)
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
    notes = [f"{spec.title}: {spec.description}" for spec in registered_metrics() if spec.description]
    lines += ["", " ".join([*notes, CEILING_NOTE])]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    """A markdown table row; an empty cell is written "| |"."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _metrics_table(summary: dict, ceiling: dict | None) -> list[str]:
    """One column per registered metric (in registration order), then the noise ceiling; a metric a summary
    lacks (one registered after the run) shows "-"; the paper average fills the averaged metrics' columns."""
    specs = registered_metrics()
    lines = [
        _row(["subset", "n", *(spec.title for spec in specs), "ceiling 1-JSD"]),
        "|---|---:|" + "---:|" * (len(specs) + 1),
    ]
    for name, values in summary["subsets"].items():
        cells = " | ".join("-" if values.get(s.name) is None else f"{values[s.name]:.4f}" for s in specs)
        bound = (ceiling or {}).get(name, {}).get("one_minus_jsd")
        lines.append(f"| {name} | {values['n']} | {cells} | {'' if bound is None else f'{bound:.4f}'} |")
    average = summary.get("paper_average")
    if average:
        subsets = ", ".join(summary["paper_average_subsets"])
        cells = [f"{average[s.name]:.4f}" if s.in_average and average.get(s.name) is not None else "" for s in specs]
        lines.append(_row([f"paper average ({subsets})", "", *cells, ""]))
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
