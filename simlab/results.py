"""Run outputs: metrics.json, predictions.jsonl and a markdown table, all from the same test pass."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from .data.rows import SurveyRow

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


def write_json(path: Path, payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_predictions(
    path: Path, rows: dict[str, list[SurveyRow]], predictions: dict[str, dict[int, list[float]]]
) -> int:
    """One JSON line per tested row; every row of every tested subset must have a prediction."""
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "w", encoding="utf-8") as handle:
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
                    "human": list(row.target),
                    "predicted": predicted[index],
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                written += 1
    return written


def results_table(summary: dict) -> str:
    """A markdown table: one row per subset, then the paper's average."""
    lines = [
        f"# {summary.get('task', 'run')}: {summary.get('model', '')} (loss {summary.get('loss', '-')})",
        "",
        "| subset | n | 1-JSD | EMD | EMD (paper) | accuracy | KL |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, values in summary["subsets"].items():
        cells = " | ".join(f"{values[m]:.4f}" for m in METRIC_ORDER)
        lines.append(f"| {name} | {values['n']} | {cells} |")
    average = summary.get("paper_average")
    if average:
        subsets = ", ".join(summary["paper_average_subsets"])
        lines.append(
            f"| paper average ({subsets}) | | {average['one_minus_jsd']:.4f} | {average['emd']:.4f} | | "
            f"{average['accuracy']:.4f} | |"
        )
    lines += ["", "1-JSD: 1 - Jensen-Shannon distance (natural log). EMD: W1 over option positions / (K-1). "
              "EMD (paper): the reference code's scipy wasserstein_distance on probability values, for comparison only."]
    return "\n".join(lines) + "\n"
