"""The end every scoring task shares: the calibration step, the analysis, and the run's outputs (predictions.jsonl,
results.md, metrics.json; status.json is the wrapper's, written last)."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig

from simlab.runs.metrics_file import RunMetrics
from simlab.runs.rundir import RunDir
from simlab.tasks.common import job_overrides, log_metrics

log = logging.getLogger("simlab")


def wants_calibration(cfg: DictConfig, adapter: str | None) -> bool:
    """calibrate=true: fit a temperature (a fine-tune saves it) or apply the evaluated adapter's saved one;
    null (default): apply a saved one only, never fit; false: the raw option probabilities."""
    from simlab.simulator.bundle import load_calibration

    if cfg.task.name == "baseline" or cfg.calibrate is False:
        return False
    if cfg.calibrate:
        return True
    return not cfg.task.fit and load_calibration(adapter) is not None


def calibrate(cfg: DictConfig, datamodule, predictions: dict, adapter: str | None) -> tuple[dict, dict, dict]:
    """(raw predictions, calibrated predictions, calibration record). A fine-tune fits the temperature on
    ``calibrate_on`` (the valid split) and saves it with its adapter; evaluating a saved adapter applies the
    temperature saved with it (never refitted), else fits one on ``calibrate_on``."""
    from simlab.simulator.bundle import CALIBRATION_FILE, load_calibration, save_calibration
    from simlab.simulator.temperature import calibrate_predictions, rescale_predictions

    saved = None if cfg.task.fit else load_calibration(adapter)
    if saved is not None:
        record = {**saved, "source": f"{adapter}/{CALIBRATION_FILE}"}
        return predictions, rescale_predictions(predictions, saved["temperature"]), record
    subset = cfg.calibrate_on
    if subset not in predictions:
        raise ValueError(f"calibrate=true fits the temperature on calibrate_on={subset!r}, which was not tested "
                         f"(tested: {sorted(predictions)}), and {adapter or 'the model'} has no saved calibration.json")
    temperature, calibrated = calibrate_predictions(
        predictions[subset], [list(r.target) for r in datamodule.rows[subset]], predictions
    )
    record = {"temperature": temperature, "fitted_on": subset, "rows": len(predictions[subset]), "source": "fitted"}
    if cfg.task.fit:
        save_calibration(adapter, temperature, subset, len(predictions[subset]))
    log.info("temperature %.3f fitted on %s (%d rows)", temperature, subset, len(predictions[subset]))
    return predictions, calibrated, record


def write_outputs(cfg: DictConfig, run: RunDir, datamodule, test_results: dict, predictions: dict, info: dict, *,
                  loggers: list, started: float, code: dict | None) -> dict:
    """Calibrate (when asked), analyse and write the run's outputs; returns metrics.json's content ({} on every
    process but rank zero: every rank holds the gathered predictions, rank zero alone writes them)."""
    from simlab.analysis.post_test import analyse
    from simlab.metrics.scoring import score_subsets
    from simlab.report.results_table import results_table
    from simlab.runs.metrics_file import summarize
    from simlab.training.distributed import is_rank_zero

    if not is_rank_zero():
        return {}
    raw = None
    if wants_calibration(cfg, info.get("adapter")):  # the temperature is part of the simulator
        raw, predictions, info["calibration"] = calibrate(cfg, datamodule, predictions, info.get("adapter"))
        info["uncalibrated"] = summarize(score_subsets(datamodule.rows, raw), datamodule.average_subsets)
        test_results = score_subsets(datamodule.rows, predictions)
    extra = analyse(datamodule.rows, predictions, datamodule.average_subsets, seed=cfg.seed)
    summary = summarize(
        test_results,
        datamodule.average_subsets,
        task=cfg.task.name,
        **info,
        prompt_style=cfg.model.prompt_style,
        settings=datamodule.settings,
        seed=cfg.seed,
        overrides=job_overrides(),
        code=code,
        rows={s: len(r) for s, r in datamodule.rows.items()},
        wall_time_s=round(time.time() - started, 1),
    )
    summary.update(extra)
    metrics = RunMetrics.from_dict(summary)
    # every output atomically, metrics.json after the predictions; the wrapper writes status.json last
    run.write_predictions(datamodule.rows, predictions, **({"predicted_uncalibrated": raw} if raw is not None else {}))
    table = results_table(summary)
    run.write_results(table)
    run.write_metrics(metrics)
    log_metrics(loggers, {f"test/paper_average/{m}": v for m, v in (summary.get("paper_average") or {}).items()})
    log_dashboards(loggers, run, summary, datamodule.rows, predictions, adapter=info.get("adapter"), seed=cfg.seed)
    log.info("\n%s", table)
    log.info("outputs in %s", run.path)
    return summary


def log_dashboards(loggers: list, run: RunDir, summary: dict, rows: dict, predictions: dict, *,
                   adapter: str | None, seed: int) -> None:
    """The W&B run's results and predictions tables, figures and adapter artifact (simlab.report.wandb_logging)."""
    from simlab.report.wandb_logging import log_run

    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            log_run(logger.experiment, run.path, summary, rows, predictions, adapter=adapter, seed=seed)
