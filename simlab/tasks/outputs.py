"""The end every scoring task shares: the calibration step, the analysis, and the run's outputs (predictions.jsonl,
results.md, metrics.json; status.json is the wrapper's, written last)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from omegaconf import DictConfig

from simlab.runs.metrics_file import RunMetrics
from simlab.runs.rundir import RunDir
from simlab.tasks.common import job_overrides, log_metrics

if TYPE_CHECKING:
    from simlab.analysis.post_test import Recalibrated

log = logging.getLogger("simlab")


def wants_calibration(cfg: DictConfig, adapter: str | None) -> bool:
    """calibrate=true: fit a temperature (a fine-tune saves it) or apply the evaluated adapter's saved one;
    null (default): apply a saved one only, never fit; false: the raw option probabilities. Never for a task
    whose predictions are no option probabilities (``task.calibrates: false``, a baseline)."""
    from simlab.simulator.bundle import load_calibration

    if not cfg.task.calibrates or cfg.calibrate is False:
        return False
    if cfg.calibrate:
        return True
    return not cfg.task.fit and load_calibration(adapter) is not None


def check_calibration_subset(cfg: DictConfig) -> None:
    """Before any work: a temperature that will be fitted (:func:`wants_calibration` with no saved one to apply)
    is fitted on ``calibrate_on``, which must be one of the subsets the run tests."""
    from simlab.simulator.bundle import load_calibration

    if not cfg.task.calibrates or cfg.calibrate is not True:
        return
    if not cfg.task.fit and load_calibration(cfg.model.adapter) is not None:
        return  # the adapter's saved temperature is applied, never refitted
    tested = list(cfg.data.test_subsets or [])
    if cfg.calibrate_on not in tested:
        raise ValueError(f"calibrate_on={cfg.calibrate_on}: calibrate=true fits the temperature on it, but it is not "
                         f"one of the subsets this run tests (data.test_subsets={tested})")


def calibrate(cfg: DictConfig, datamodule, predictions: dict, adapter: str | None) -> tuple[Recalibrated, dict]:
    """(the calibrated predictions and their scores, the calibration record). A fine-tune fits the temperature on
    ``calibrate_on`` (the valid split) and saves it with its adapter; evaluating a saved adapter applies the
    temperature saved with it (never refitted), else fits one on ``calibrate_on``."""
    from simlab.analysis.post_test import recalibrate
    from simlab.simulator.bundle import CALIBRATION_FILE, load_calibration, save_calibration

    saved = None if cfg.task.fit else load_calibration(adapter)
    if saved is not None:
        record = {**saved, "source": f"{adapter}/{CALIBRATION_FILE}"}
        return recalibrate(datamodule.rows, predictions, temperature=saved["temperature"]), record
    subset = cfg.calibrate_on
    if subset not in predictions:
        raise ValueError(f"calibrate=true fits the temperature on calibrate_on={subset!r}, which was not tested "
                         f"(tested: {sorted(predictions)}), and {adapter or 'the model'} has no saved calibration.json")
    calibrated = recalibrate(datamodule.rows, predictions, fit_on=subset)
    temperature = calibrated.temperature
    record = {"temperature": temperature, "fitted_on": subset, "rows": len(predictions[subset]), "source": "fitted"}
    if cfg.task.fit:
        save_calibration(adapter, temperature, subset, len(predictions[subset]))
    log.info("temperature %.3f fitted on %s (%d rows)", temperature, subset, len(predictions[subset]))
    return calibrated, record


def write_outputs(cfg: DictConfig, run: RunDir, datamodule, test_results: dict, predictions: dict, info: dict, *,
                  loggers: list, started: float, code: dict | None) -> dict:
    """Calibrate (when asked), analyse and write the run's outputs; returns metrics.json's content ({} on every
    process but rank zero: every rank holds the gathered predictions, rank zero alone writes them)."""
    from simlab.analysis.post_test import analyse
    from simlab.metrics.scoring import score_subsets
    from simlab.runs.metrics_file import summarize
    from simlab.runs.results_table import results_table
    from simlab.training.distributed import is_rank_zero

    if not is_rank_zero():
        return {}
    raw = None
    if wants_calibration(cfg, info.get("adapter")):  # the temperature is part of the simulator
        calibrated, info["calibration"] = calibrate(cfg, datamodule, predictions, info.get("adapter"))
        info["uncalibrated"] = summarize(score_subsets(datamodule.rows, predictions), datamodule.average_subsets)
        raw, predictions, test_results = predictions, calibrated.predictions, calibrated.scores
    extra = analyse(datamodule.rows, predictions, datamodule.average_subsets, seed=cfg.seed)
    summary = summarize(
        test_results,
        datamodule.average_subsets,
        task=cfg.task.name,
        **info,
        prompt_style=cfg.model.prompt_style,
        settings=datamodule.settings,
        **({"data_warnings": datamodule.data_warnings} if datamodule.data_warnings else {}),
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
    log_dashboards(loggers, run, summary, datamodule.rows, predictions,
                   trained_adapter=info.get("adapter") if cfg.task.fit else None, seed=cfg.seed)
    log.info("\n%s", table)
    log.info("outputs in %s", run.path)
    return summary


def log_dashboards(loggers: list, run: RunDir, summary: dict, rows: dict, predictions: dict, *,
                   trained_adapter: str | None, seed: int) -> None:
    """The W&B run's results and predictions tables, figures and the adapter this run trained (as an artifact):
    :func:`simlab.report.wandb_logging.log_run`, from the results in hand."""
    from simlab.report.wandb_logging import log_run

    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            log_run(logger.experiment, summary, rows, predictions, figures_dir=run.figures_dir,
                    adapter=trained_adapter, seed=seed)
