"""The paper's table layout: one row per job (method/model/setting), one column per subset plus the average,
one block per metric, written as markdown, CSV (long format) and LaTeX."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from simlab.common.spreadsheet import spreadsheet_cell
from simlab.metrics.registry import metric_names, metric_spec
from simlab.report.collect import Job


def report_metrics() -> tuple[str, ...]:
    """The metrics with a table in the report: those registered with ``in_report`` (:mod:`simlab.metrics.registry`)."""
    return metric_names(in_report=True)


def metric_title(metric: str) -> str:
    """A report table's title: the registered metric's ``table_title``, e.g. "1-JSD (higher is better)"."""
    return metric_spec(metric).table_title


def subsets_of(jobs: list[Job]) -> list[str]:
    """Subsets in the order the jobs tested them (first appearance)."""
    order: list[str] = []
    for job in jobs:
        for subset in (job.metrics or {}).get("subsets", {}):
            if subset not in order:
                order.append(subset)
    return order


def metric_table(jobs: list[Job], metric: str) -> tuple[list[str], list[list[str]]]:
    """(header, rows) for one metric; a job that did not complete shows its status in every cell."""
    subsets = subsets_of(jobs)
    has_average = any((j.metrics or {}).get("paper_average") for j in jobs)
    header = ["row", *subsets] + (["avg"] if has_average else [])
    rows = []
    for job in jobs:
        if not job.ok:
            rows.append([job.label, *[job.status] * (len(header) - 1)])
            continue
        cells = []
        for subset in subsets:
            value = job.metrics["subsets"].get(subset, {}).get(metric)
            cells.append("-" if value is None else f"{value:.4f}")
        if has_average:
            average = (job.metrics.get("paper_average") or {}).get(metric)
            cells.append("-" if average is None else f"{average:.4f}")
        rows.append([job.label, *cells])
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]], numeric: bool = True) -> str:
    """Markdown; with ``numeric`` every column after the first is right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + ("---:|" if numeric else "---|") * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def latex_table(header: list[str], rows: list[list[str]], caption: str) -> str:
    def esc(text: str) -> str:
        return text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")

    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
             r"\toprule", " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{esc(caption)}}}", r"\end{table}"]
    return "\n".join(lines)


def status_table(jobs: list[Job]) -> str:
    rows = [[j.label, j.status, (j.reason.splitlines() or [""])[0][:160], str(j.path)] for j in jobs]
    return markdown_table(["row", "status", "reason", "folder"], rows, numeric=False)


def write_long_csv(jobs: list[Job], path: Path, metrics: Sequence[str] | None = None) -> None:
    """One line per job x subset x metric (including the paper average), with the job's status; ``metrics``
    defaults to the report's (:func:`report_metrics`). Text cells are spreadsheet-safe (a ``+key=value`` label
    is no formula)."""
    metrics = report_metrics() if metrics is None else metrics
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["row", "status", "metric", "subset", "value", "folder"])
        label = spreadsheet_cell
        for job in jobs:
            if not job.ok:
                writer.writerow([label(job.label), job.status, "", "", "", label(str(job.path))])
                continue
            for metric in metrics:
                for subset, values in job.metrics["subsets"].items():
                    writer.writerow([label(job.label), job.status, metric, label(subset), values.get(metric),
                                     label(str(job.path))])
                average = (job.metrics.get("paper_average") or {}).get(metric)
                if average is not None:
                    writer.writerow([label(job.label), job.status, metric, "avg", average, label(str(job.path))])
