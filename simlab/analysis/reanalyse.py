"""Recompute a finished run's post-test analysis (position bias, noise ceiling, effective respondents, temperature
scaling) from its predictions.jsonl, without the model: temperature scaling of option probabilities equals scaling
the option logits, so it needs only the saved distributions.

    python -m simlab.analysis.reanalyse RUN_DIR --out DIR [--calibrate-on C1-Q2] [--limit-eval-per-subset 200]

With ``--limit-eval-per-subset N`` every metric is recomputed on the same seeded sample of N rows per subset
that a run with ``data.limit_eval_per_subset=N`` tests, so full runs and sampled runs compare on equal rows (a
run's prediction intervals, recorded in its metrics.json, are applied to the sample again).

The rows are re-read with the run's own data config (config_resolved.yaml), and every prediction line must
match its row (subset, country, question, option letters, human shares): a mismatch is an error, never skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from simlab.analysis.post_test import analyse
from simlab.common import commandline
from simlab.data.datamodule import SurveyDataModule
from simlab.metrics.scoring import score_subsets
from simlab.paths import REPO_ROOT
from simlab.runs.metrics_file import RunMetrics, summarize
from simlab.runs.predictions import copy_predictions
from simlab.runs.provenance import git_state
from simlab.runs.results_table import results_table
from simlab.runs.rundir import RunDir

RECOMPUTED = RunMetrics.recomputed_keys()  # the metrics.json keys computed again from the predictions


def load_run_rows(run_dir: Path, **overrides):
    """The run's rows, rebuilt from its resolved data config (same files, settings and seed)."""
    config = RunDir(run_dir).read_config()
    data = {k: v for k, v in config["data"].items() if k != "_target_"}
    data.update(overrides)
    datamodule = SurveyDataModule(None, **data)
    datamodule.setup()
    return datamodule


def reanalyse(run_dir: str | Path, out: str | Path, calibrate_on: str | None = None, seed: int = 0,
              limit_eval_per_subset: int | None = None) -> dict:
    """Write ``out``/metrics.json (the run's metrics with a fresh analysis), results.md and the predictions
    (all of them, or the sample); returns the new metrics."""
    run_dir, out = Path(run_dir), Path(out)
    metrics = RunDir(run_dir).read_metrics()
    datamodule = load_run_rows(run_dir)
    predictions = RunDir(run_dir).predictions_for_rows(datamodule.rows)
    rows = {s: datamodule.rows[s] for s in predictions}
    if limit_eval_per_subset is not None:
        sample = load_run_rows(run_dir, limit_eval_per_subset=limit_eval_per_subset).rows
        by_row = {(r.source, r.index): p for s in predictions for r, p in zip(rows[s], predictions[s])}
        rows = {s: sample[s] for s in predictions}
        predictions = {s: [by_row[(r.source, r.index)] for r in rows[s]] for s in predictions}
        kept = {k: v for k, v in metrics.items() if k not in RECOMPUTED}
        scores = score_subsets(rows, predictions)
        if kept.get("intervals"):  # the run's intervals, applied again to the sample (the record holds all of them)
            from simlab.simulator.intervals import ConformalIntervals, score_subsets_intervals

            intervals = ConformalIntervals.from_dict(kept["intervals"], where=f"{run_dir}: metrics.json 'intervals'")
            interval_scores = score_subsets_intervals(intervals, rows, predictions)[2]
            scores = {s: {**values, **interval_scores[s]} for s, values in scores.items()}
        metrics = summarize(scores, datamodule.average_subsets, **kept)
        metrics["rows"] = {s: len(r) for s, r in rows.items()}
        metrics["limit_eval_per_subset"] = limit_eval_per_subset
    extra = analyse(rows, predictions, datamodule.average_subsets, calibrate_on=calibrate_on, seed=seed)
    metrics.update(extra)
    metrics["reanalysed_from"] = str(run_dir.resolve())
    metrics["reanalysis_code"] = git_state(REPO_ROOT)
    out.mkdir(parents=True, exist_ok=True)  # outputs first, status.json last (a folder the report can trust)
    source, target = RunDir(run_dir), RunDir(out)
    if limit_eval_per_subset is None:
        copy_predictions(source.predictions_file, target.predictions_file)
    else:
        target.write_predictions(rows, predictions)
    target.write_results(results_table(metrics))
    target.write_metrics(metrics)
    target.write_status("completed", metrics.get("overrides") or [], reanalysed_from=metrics["reanalysed_from"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = commandline.parser("reanalyse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir")
    parser.add_argument("--out", required=True, help="folder for the re-analysed metrics.json (not the run itself)")
    parser.add_argument("--calibrate-on", default=None, help="fit one temperature on this tested subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise ceiling's resampling")
    parser.add_argument("--limit-eval-per-subset", type=int, default=None,
                        help="recompute everything on the seeded sample a data.limit_eval_per_subset=N run tests")
    args = parser.parse_args(argv)
    if Path(args.out).resolve() == Path(args.run_dir).resolve():
        parser.error("--out must differ from the run folder (the run's own outputs are kept as they were)")
    reanalyse(args.run_dir, args.out, args.calibrate_on, args.seed, args.limit_eval_per_subset)
    print(RunDir(args.out).metrics_file)


if __name__ == "__main__":
    main()
