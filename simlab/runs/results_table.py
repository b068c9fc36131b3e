"""results.md: the run's markdown tables (one row per subset, the paper's average, the calibrated and
uncalibrated scores), columns from the metric registry."""

from __future__ import annotations

from collections.abc import Sequence

from simlab.metrics.intervals import registered_interval_metrics
from simlab.metrics.registry import registered_metrics
from simlab.runs.metrics_file import RunMetrics

CEILING_NOTE = "Ceiling: expected 1-JSD of a perfect simulator against a survey of the same size (rows with n)."
RESPONDENTS_NOTE = ("Respondents: this simulator is worth about k respondents per population on the subset: a sample "
                    "of k real answers drawn from the true shares would score the same mean 1-JSD (>= / <=: beyond "
                    "the range tried).")


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
    lines += _metrics_table(summary, summary.get("noise_ceiling"), summary.get("effective_respondents"))
    if summary.get("intervals"):
        lines += ["", _intervals_line(summary["intervals"])]
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
    level = _interval_level(summary)
    notes += [f"{spec.title(level)}: {spec.describe(level)}" for spec in registered_interval_metrics()
              if level is not None and spec.description]
    notes.append(CEILING_NOTE)
    if summary.get("effective_respondents"):
        notes.append(RESPONDENTS_NOTE)
    lines += ["", " ".join(notes)]
    return "\n".join(lines) + "\n"


def _row(cells: Sequence[str]) -> str:
    """A markdown table row; an empty cell is written "| |"."""
    return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"


def _interval_level(summary: dict) -> float | None:
    """The level of the run's prediction intervals when its subsets were scored with them, else None."""
    return (summary.get("intervals") or {}).get("level")


def _intervals_line(record: dict) -> str:
    """What the run's prediction intervals are, and how they covered questions they were not fitted on."""
    text = (f"Prediction intervals: {100 * record['level']:g}% split conformal ({record['score']} score), fitted on "
            f"{record.get('fitted_on')} ({record.get('questions')} questions as the exchangeable units; "
            f"{record.get('source', 'fitted')}).")
    if record.get("quantile") is None:
        text += " Too few questions to certify the level: every interval is [0, 1]."
    check = record.get("split_half")
    if check:
        text += (f" Fitted on half of those questions and measured on the other half ({check['splits']} random "
                 f"halvings): coverage {check['coverage']:.3f} (min {check['coverage_min']:.3f}), width "
                 f"{check['width']:.3f}.")
    return text


def _respondents(record: dict | None) -> str:
    if not record:
        return ""
    return {"at_least": ">= ", "at_most": "<= "}.get(record.get("bound"), "") + str(record["k"])


def _metrics_table(summary: dict, ceiling: dict | None, respondents: dict | None = None) -> list[str]:
    """One column per registered metric (in registration order), then the interval metrics when the run has
    intervals, the noise ceiling, and the effective respondents when computed; a metric a summary lacks (one
    registered after the run) shows "-"; the paper average fills the averaged metrics' columns."""
    specs = registered_metrics()
    level = _interval_level(summary)
    interval = [(spec.name(level), spec.title(level)) for spec in registered_interval_metrics()] if level else []
    extra = ["respondents"] if respondents else []
    lines = [
        _row(["subset", "n", *(spec.title for spec in specs), *(title for _, title in interval), "ceiling 1-JSD",
              *extra]),
        "|---|---:|" + "---:|" * (len(specs) + len(interval) + 1 + len(extra)),
    ]
    for name, values in summary["subsets"].items():
        cells = " | ".join("-" if values.get(s) is None else f"{values[s]:.4f}"
                           for s in [*(spec.name for spec in specs), *(key for key, _ in interval)])
        bound = (ceiling or {}).get(name, {}).get("one_minus_jsd")
        worth = f" {_respondents(respondents.get(name))} |" if respondents else ""
        lines.append(f"| {name} | {values['n']} | {cells} | {'' if bound is None else f'{bound:.4f}'} |{worth}")
    average = summary.get("paper_average")
    if average:
        subsets = ", ".join(summary["paper_average_subsets"])
        cells = [f"{average[s.name]:.4f}" if s.in_average and average.get(s.name) is not None else "" for s in specs]
        lines.append(_row([f"paper average ({subsets})", "", *cells, *([""] * (len(interval) + 1 + len(extra)))]))
    return lines
