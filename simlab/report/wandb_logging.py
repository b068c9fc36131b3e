"""What a W&B run shows beyond scalars: the results table, a sample of predictions against what people answered,
the report's figures for the run, and the trained adapter as an artifact a later run can name.

Everything is built from the results a run hands over (metrics.json's summary, the rows and predictions), never read
back from its folder, by the same code as ``simlab.report``, so the dashboard and the files on disk cannot disagree.
``model.adapter=wandb:NAME[:ALIAS]`` is resolved by :func:`simlab.simulator.artifacts.resolve_adapter`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path

from simlab.data.population_prompts import prompt_population
from simlab.data.rows import SurveyRow
from simlab.simulator.artifacts import adapter_artifact_name

log = logging.getLogger(__name__)

PREDICTION_SAMPLE = 200  # rows per run in the predictions table: enough to filter by country or question


def results_rows(summary: dict) -> tuple[list[str], list[list]]:
    """(columns, rows): one row per tested subset and one for the paper average, every metric of metrics.json;
    with the uncalibrated 1-JSD when the simulator was calibrated and the noise ceiling where computed."""
    from simlab.metrics.registry import metric_names

    metrics = list(metric_names())
    uncalibrated = (summary.get("uncalibrated") or {}).get("subsets") or {}
    ceiling = summary.get("noise_ceiling") or {}
    columns = ["subset", "n", *metrics]
    if uncalibrated:
        columns.append("one_minus_jsd_uncalibrated")
    if ceiling:
        columns.append("one_minus_jsd_ceiling")
    rows = []
    for subset, values in summary.get("subsets", {}).items():
        row = [subset, values.get("n"), *[values.get(m) for m in metrics]]
        if uncalibrated:
            row.append((uncalibrated.get(subset) or {}).get("one_minus_jsd"))
        if ceiling:
            row.append((ceiling.get(subset) or {}).get("one_minus_jsd"))
        rows.append(row)
    average = summary.get("paper_average")
    if average:
        row = ["paper average", None, *[average.get(m) for m in metrics]]
        if uncalibrated:
            row.append(((summary.get("uncalibrated") or {}).get("paper_average") or {}).get("one_minus_jsd"))
        if ceiling:
            row.append(None)
        rows.append(row)
    return columns, rows


def _shares(letters: Sequence[str], values: Sequence[float]) -> str:
    return " ".join(f"{letter}:{value:.2f}" for letter, value in zip(letters, values))


def prediction_rows(rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
                    sample: int = PREDICTION_SAMPLE, seed: int = 0) -> tuple[list[str], list[list]]:
    """(columns, rows) for a seeded sample of tested rows: who, which question, what people answered, what the
    simulator predicted, and their 1-JSD (the same per-row metric as metrics.json)."""
    import torch

    from simlab.metrics.registry import one_minus_jsd_rows
    from simlab.metrics.scoring import pad_distributions

    cells = [(subset, index) for subset in predictions for index in range(len(predictions[subset]))]
    chosen = sorted(random.Random(seed).sample(range(len(cells)), min(sample, len(cells))))
    picked = [(rows[s][i], predictions[s][i]) for s, i in (cells[c] for c in chosen)]
    subgroups = any(row.attributes for row, _ in picked)  # subgroup rows: which one, and what a [ctrl] prompt named
    columns = ["subset", "country", *(["population", "prompt_population"] if subgroups else []), "question_id",
               "question", "options", "human", "predicted", "human_majority", "predicted_majority", "one_minus_jsd"]
    table = []
    if not chosen:
        return columns, table
    target, mask = pad_distributions([row.target for row, _ in picked])
    predicted, _ = pad_distributions([p for _, p in picked])
    scores = one_minus_jsd_rows(predicted, target, mask).tolist()
    for (row, p), score in zip(picked, scores):
        shown = prompt_population(row)
        table.append([
            row.subset, row.country, *([row.population.group, shown.key if shown else None] if subgroups else []),
            row.question_id, row.question.strip(), " | ".join(row.options),
            _shares(row.letters, row.target), _shares(row.letters, p),
            row.letters[int(torch.tensor(row.target).argmax())], row.letters[int(torch.tensor(p).argmax())],
            round(float(score), 6),
        ])
    return columns, table


def run_figures(summary: dict, records: list[dict], out: Path, label: str) -> list[Path]:
    """The report's figures for one run (per-subset bars, diversity across countries, position bias), drawn from
    its summary and prediction records in hand by ``simlab.report``'s own functions into ``out``."""
    from simlab.report import figures
    from simlab.report.breakdown import diversity

    if not summary.get("subsets"):
        return []
    run = figures.ScoredRun(label, summary)
    out.mkdir(exist_ok=True)
    made = [
        figures.metric_by_subset([run], "one_minus_jsd", out / "one_minus_jsd_by_subset.png", "1-JSD per subset"),
        figures.metric_by_subset([run], "accuracy", out / "accuracy_by_subset.png",
                                 "Accuracy (argmax = human majority) per subset"),
    ]
    subsets = list(summary["subsets"])
    subset = next((s for s in ("C2-Q1", "C3-Q1") if s in subsets), subsets[0])
    points = diversity(records, subset)
    if points:
        made.append(figures.diversity_scatter({label: points}, out / f"diversity_{subset}.png", subset))
    made.append(figures.position_bias_bars([run], subset, out / f"position_bias_{subset}.png"))
    return made


def log_run(experiment, summary: dict, rows: dict[str, list[SurveyRow]], predictions: dict[str, list[list[float]]],
            *, figures_dir: Path, adapter: str | None = None, seed: int = 0, sample: int = PREDICTION_SAMPLE) -> None:
    """Log the results table, the predictions sample, the figures (drawn into ``figures_dir``) and the adapter
    the run trained (``adapter``, as an artifact) to the W&B run ``experiment`` (a ``wandb.Run``, e.g.
    ``WandbLogger.experiment``). Everything comes from the results handed over, nothing is read back."""
    import wandb

    from simlab.runs.predictions import prediction_records

    columns, data = results_rows(summary)
    payload = {"results": wandb.Table(columns=columns, data=data)}
    columns, data = prediction_rows(rows, predictions, sample=sample, seed=seed)
    payload["predictions"] = wandb.Table(columns=columns, data=data)
    label = summary.get("model") or summary.get("baseline") or figures_dir.parent.name
    for path in run_figures(summary, list(prediction_records(rows, predictions)), figures_dir, label):
        payload[f"figures/{path.stem}"] = wandb.Image(str(path))
    experiment.log(payload)
    if adapter and Path(adapter).is_dir():
        metadata = {
            "model": summary.get("model"),
            "loss": summary.get("loss"),
            "paper_average": summary.get("paper_average"),
            "calibration": summary.get("calibration"),
            "prior": summary.get("prior"),
            "overrides": summary.get("overrides"),
            "commit": (summary.get("code") or {}).get("commit"),
        }
        artifact = wandb.Artifact(adapter_artifact_name(str(summary.get("model") or "model")), type="model",
                                  metadata=metadata)
        artifact.add_dir(str(adapter))
        experiment.log_artifact(artifact)


def sweep_group(jobs) -> str | None:
    """The W&B group the jobs logged to (a sweep's jobs share one: the sweep folder), read from their run files."""
    from simlab.runs.wandb_offline import read_run, run_files

    for job in jobs:
        for run_file in run_files(job.path):
            group = read_run(run_file).get("group")
            if group:
                return group
    return None


def log_report(report_dir: str | Path, jobs, *, group: str | None = None, project: str = "simlab",
               offline: bool = True) -> Path:
    """Log a report folder (``python -m simlab.report DIR --wandb``) as one W&B run in the jobs' group: one table
    per metric (the report's rows x subsets) and every figure; returns the run's folder."""
    import wandb

    from simlab.report.tables import metric_table, report_metrics

    report_dir = Path(report_dir)
    group = group or sweep_group(jobs)
    run = wandb.init(project=project, dir=str(report_dir), group=group, job_type="report",
                     name=f"report-{report_dir.parent.name or report_dir.name}", mode="offline" if offline else None,
                     reinit="finish_previous")
    try:
        payload = {}
        for metric in report_metrics():
            header, rows = metric_table(jobs, metric)
            payload[f"tables/{metric}"] = wandb.Table(columns=header, data=rows)
        for image in sorted(report_dir.glob("*.png")):
            payload[f"figures/{image.stem}"] = wandb.Image(str(image))
        run.log(payload)
        folder = Path(run.dir).parent
    finally:
        run.finish()
    log.info("report logged to W&B (group %s): %s", group, folder)
    return folder
