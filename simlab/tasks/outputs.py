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
    from simlab.simulator.intervals import ConformalIntervals

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


def calibrate(cfg: DictConfig, datamodule, predictions: dict, adapter: str | None
              ) -> tuple[Recalibrated, dict, ConformalIntervals | None]:
    """(the calibrated predictions and their scores, the calibration record, the prediction intervals). A fine-tune
    fits the temperature on ``calibrate_on`` (the valid split), then the intervals on the calibrated predictions
    of the same rows, and saves both with its adapter; evaluating a saved adapter applies what was saved with it
    (never refitted; a calibration.json without intervals gives none), else fits them on ``calibrate_on``."""
    from simlab.analysis.post_test import recalibrate
    from simlab.simulator.bundle import CALIBRATION_FILE, load_calibration, save_calibration, saved_intervals

    saved = None if cfg.task.fit else load_calibration(adapter)
    if saved is not None:
        source = f"{adapter}/{CALIBRATION_FILE}"
        intervals = saved_intervals(saved, source)
        if intervals is None and interval_settings(cfg):
            log.warning("%s has no prediction intervals (saved before simlab fitted them): this run reports no "
                        "coverage or interval width", source)
        record = {**{k: v for k, v in saved.items() if k != "intervals"}, "source": source}
        return recalibrate(datamodule.rows, predictions, temperature=saved["temperature"]), record, intervals
    subset = cfg.calibrate_on
    if subset not in predictions:
        raise ValueError(f"calibrate=true fits the temperature on calibrate_on={subset!r}, which was not tested "
                         f"(tested: {sorted(predictions)}), and {adapter or 'the model'} has no saved calibration.json")
    calibrated = recalibrate(datamodule.rows, predictions, fit_on=subset)
    temperature = calibrated.temperature
    intervals = fit_run_intervals(cfg, datamodule, calibrated.predictions)
    record = {"temperature": temperature, "fitted_on": subset, "rows": len(predictions[subset]), "source": "fitted"}
    if cfg.task.fit:
        save_calibration(adapter, temperature, subset, len(predictions[subset]),
                         intervals=intervals.to_dict() if intervals is not None else None)
    log.info("temperature %.3f fitted on %s (%d rows)", temperature, subset, len(predictions[subset]))
    return calibrated, record, intervals


def interval_settings(cfg: DictConfig) -> dict | None:
    """fit_intervals' settings from ``intervals`` (level, score, delta, check_splits); None when
    ``intervals.level`` is null (no intervals)."""
    settings = cfg.get("intervals")
    if not settings or settings.get("level") is None:
        return None
    return {k: settings[k] for k in ("level", "score", "delta", "check_splits") if settings.get(k) is not None}


def intervals_source(cfg: DictConfig) -> str | None:
    """``intervals.source``: a finished run whose intervals are applied instead of fitting new ones."""
    return (cfg.get("intervals") or {}).get("source") or None


def intervals_of_run(folder: str) -> ConformalIntervals:
    """The intervals a finished run fitted (its metrics.json ``intervals``): a baseline's, for data without the
    valid split (Pew), so its widths compare with the model's intervals fitted on C1-Q2."""
    from simlab.simulator.intervals import ConformalIntervals

    record = RunDir(folder).read_metrics().get("intervals")
    if not record:
        raise ValueError(f"intervals.source={folder}: its metrics.json has no intervals (run it with calibrate=true)")
    return ConformalIntervals.from_dict(record, where=f"intervals.source={folder}: metrics.json 'intervals'")


def fit_run_intervals(cfg: DictConfig, datamodule, predictions: dict) -> ConformalIntervals | None:
    """Conformal intervals fitted on ``calibrate_on``'s predictions (already calibrated where a temperature is),
    its questions the exchangeable units, or those of the run ``intervals.source``; None when ``intervals.level``
    is null."""
    from simlab.simulator.intervals import fit_on_rows

    settings = interval_settings(cfg)
    if settings is None:
        return None
    if intervals_source(cfg):
        return intervals_of_run(intervals_source(cfg))
    subset = cfg.calibrate_on
    if subset not in predictions:
        raise ValueError(f"prediction intervals are fitted on calibrate_on={subset!r}, which was not tested "
                         f"(tested: {sorted(predictions)}); set intervals.level=null for none")
    intervals = fit_on_rows(datamodule.rows[subset], predictions[subset], fitted_on=subset, seed=cfg.seed, **settings)
    log.info("%g%% intervals fitted on %s (%d questions): q = %s (%s score)", 100 * intervals.level, subset,
             intervals.questions, intervals.quantile, intervals.score)
    return intervals


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
    raw, intervals, bounds = None, None, {}
    if wants_calibration(cfg, info.get("adapter")):  # the temperature is part of the simulator
        calibrated, info["calibration"], intervals = calibrate(cfg, datamodule, predictions, info.get("adapter"))
        info["uncalibrated"] = summarize(score_subsets(datamodule.rows, predictions), datamodule.average_subsets)
        raw, predictions, test_results = predictions, calibrated.predictions, calibrated.scores
    elif cfg.calibrate and not cfg.task.calibrates:  # a baseline: no temperature, but its intervals
        intervals = fit_run_intervals(cfg, datamodule, predictions)
    if intervals is not None:  # coverage and width beside the point metrics of every subset
        from simlab.simulator.intervals import score_subsets_intervals

        lower, upper, interval_scores = score_subsets_intervals(intervals, datamodule.rows, predictions)
        test_results = {s: {**values, **interval_scores.get(s, {})} for s, values in test_results.items()}
        source = info.get("calibration", {}).get("source", "fitted")
        if source == "fitted" and intervals_source(cfg):
            source = f"{intervals_source(cfg)}/metrics.json"
        info["intervals"] = {**intervals.to_dict(), "source": source}
        bounds = {"interval_lower": lower, "interval_upper": upper}
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
    run.write_predictions(datamodule.rows, predictions, **({"predicted_uncalibrated": raw} if raw is not None else {}),
                          **bounds)
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
