"""Assemble a report folder from collected jobs: tables (md/csv/tex), figures, per-dimension breakdown."""

from __future__ import annotations

import logging
from pathlib import Path

from tqdm.auto import tqdm

from simlab.report import figures
from simlab.report.breakdown import diversity, load_dimensions, per_country, per_dimension
from simlab.report.collect import Job
from simlab.report.tables import (
    latex_table,
    markdown_table,
    metric_table,
    metric_title,
    report_metrics,
    status_table,
    write_long_csv,
)
from simlab.runs.metrics_file import RunMetrics

log = logging.getLogger(__name__)


def _default_subset(jobs: list[Job]) -> str | None:
    tested = [s for j in jobs if j.ok for s in j.metrics["subsets"]]
    for preferred in ("C2-Q1", "C3-Q1"):  # the paper's per-country figures use unseen-country subsets
        if preferred in tested:
            return preferred
    return tested[0] if tested else None


def write_report(jobs: list[Job], out: str | Path, subset: str | None = None,
                 questionnaire: str | Path | None = None, title: str = "simlab report") -> Path:
    """Write report.md, tables.csv, tables.tex, breakdown_dimension.csv and the PNG figures into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    done = [j for j in jobs if j.ok]
    subset = subset or _default_subset(jobs)
    lines = [f"# {title}", "", f"{len(jobs)} jobs: " + ", ".join(
        f"{sum(j.status == s for j in jobs)} {s}" for s in dict.fromkeys(
            ("completed", "failed", "skipped", "incomplete", *(j.status for j in jobs)))
        if any(j.status == s for j in jobs)), "", "## Jobs", "", status_table(jobs), ""]

    tex = []
    for metric in report_metrics():  # the metrics registered with in_report, in registration order
        header, rows = metric_table(jobs, metric)
        lines += [f"## {metric_title(metric)}", "", markdown_table(header, rows), ""]
        tex.append(latex_table(header, rows, metric_title(metric)))
    (out / "tables.tex").write_text("\n\n".join(tex) + "\n", encoding="utf-8")
    write_long_csv(jobs, out / "tables.csv", report_metrics())
    lines += ["Avg: the paper's average over its five reported subsets, where the job tested them. "
              "`tables.csv` (long format) and `tables.tex` hold the same numbers.", ""]

    if not done:
        lines += ["No completed job: no figures."]
        (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return out / "report.md"

    # by folder: two jobs may share a label
    records = {j.path: j.predictions() for j in tqdm(done, desc="report: reading predictions", unit="job",
                                                      disable=len(done) < 2)}
    lines += ["## Figures", ""]
    fig = figures.metric_by_subset(done, "accuracy", out / "accuracy_by_subset.png",
                                   "Accuracy (argmax = human majority) per subset")
    lines += [f"![accuracy per subset]({fig.name})", ""]
    fig = figures.metric_by_subset(done, "one_minus_jsd", out / "one_minus_jsd_by_subset.png", "1-JSD per subset")
    lines += [f"![1-JSD per subset]({fig.name})", ""]

    model_jobs = [j for j in done if RunMetrics.from_dict(j.metrics).answers_from_model]
    if subset:
        points = {j.label: diversity(records[j.path], subset) for j in model_jobs}
        fig = figures.diversity_scatter(points, out / f"diversity_{subset}.png", subset)
        lines += [f"![diversity across countries]({fig.name})", "", "| row | questions | people | model |",
                  "|---|---:|---:|---:|"]
        for label, rows in points.items():
            if rows:
                lines.append(f"| {label} | {len(rows)} | {sum(r['human'] for r in rows) / len(rows):.4f} | "
                             f"{sum(r['model'] for r in rows) / len(rows):.4f} |")
        lines += ["", "Mean pairwise 1-JSD between countries per question (higher = countries more alike).", ""]
        by_country = {j.label: per_country(records[j.path], subset) for j in done}
        fig = figures.per_country_bars(by_country, subset, out / f"countries_{subset}.png")
        lines += [f"![per-country scores]({fig.name})", ""]
        fig = figures.position_bias_bars(done, subset, out / f"position_bias_{subset}.png")
        lines += [f"![position bias]({fig.name})", ""]

    if questionnaire:
        dimensions = load_dimensions(questionnaire)
        lines += ["## 1-JSD per questionnaire dimension", ""]
        csv_lines = ["row,subset,dimension,one_minus_jsd,n"]
        for job in done:
            breakdown = per_dimension(records[job.path], dimensions)
            subsets = list(breakdown)
            dims = sorted({d for per in breakdown.values() for d in per})
            header = ["dimension", *subsets]
            rows = [[d, *[f"{breakdown[s][d]['one_minus_jsd']:.4f} ({breakdown[s][d]['n']})" if d in breakdown[s]
                          else "-" for s in subsets]] for d in dims]
            lines += [f"### {job.label}", "", markdown_table(header, rows), ""]
            for s, per in breakdown.items():
                for d, v in per.items():
                    csv_lines.append(f'"{job.label}",{s},"{d}",{v["one_minus_jsd"]},{v["n"]}')
        lines += ["Cells: mean 1-JSD (rows).", ""]
        (out / "breakdown_dimension.csv").write_text("\n".join(csv_lines) + "\n", encoding="utf-8")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("report written to %s", path)
    return path
