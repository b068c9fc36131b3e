"""results.md: the run's markdown tables (one row per subset, the paper's average, the calibrated and
uncalibrated scores), columns from the metric registry."""

from __future__ import annotations

from collections.abc import Sequence

from simlab.metrics.registry import registered_metrics
from simlab.runs.metrics_file import RunMetrics

CEILING_NOTE = "Ceiling: expected 1-JSD of a perfect simulator against a survey of the same size (rows with n)."


def _title(summary: dict) -> str:
    if RunMetrics.from_dict(summary).is_baseline:
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
