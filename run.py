"""simlab's only Hydra entry point: compose the config, build each piece with instantiate, run the task.

    python run.py                              # fine-tune the embedded model with LoRA, test every subset
    python run.py task=zeroshot                # evaluate the bare model
    python run.py task=baseline baseline=knn   # a baseline: uniform | avg_culture | knn | json_zs
    python run.py model=hf model.path=DIR loss=js
    python run.py -m loss=kl,js,ce,wasserstein # a Hydra multirun sweep (outputs under multirun/)
    python run.py <same overrides> resume=<run dir>   # continue an interrupted fine-tune exactly
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from simlab.rundir import unique_run_dir

log = logging.getLogger("simlab")
# hydra.run.dir: the folder to resume, else a new one per run (date, time and a random part; cached per config)
OmegaConf.register_new_resolver("simlab.run_dir", unique_run_dir, use_cache=True)


def build_loggers(cfg: DictConfig, overrides: list[str]) -> list:
    """The configured loggers; a W&B run is tagged with the job's overrides and, in a sweep, grouped by it."""
    hydra_cfg = HydraConfig.get()
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        extra = {}
        if name == "wandb" and logger_cfg.get("group") is None and hydra_cfg.mode == RunMode.MULTIRUN:
            extra["group"] = hydra_cfg.sweep.dir
        loggers.append(instantiate(logger_cfg, **extra))
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.tags = tuple(overrides)[:64]
    return loggers


def finish_wandb(failed: bool = False) -> None:
    """Close the W&B run so each job of a sweep is its own run (marked failed when the job failed)."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish(exit_code=1 if failed else 0)


def log_metrics(loggers: list, metrics: dict[str, float]) -> None:
    """Metrics computed outside a Trainer (baselines, the paper average), under the module's naming scheme."""
    for logger in loggers:
        if metrics:
            logger.log_metrics(metrics)
            logger.save()


def load_model(cfg: DictConfig):
    """The language model, with a saved adapter (model.adapter) or a fresh LoRA adapter when training."""
    from simlab.model import attach_lora, load_adapter

    lm = instantiate(cfg.model.loader)
    if cfg.model.adapter:
        lm.model = load_adapter(lm.model, cfg.model.adapter, trainable=cfg.task.fit)
    elif cfg.task.fit:
        lm.model = attach_lora(lm.model, instantiate(cfg.model.lora, _convert_="all"))
    return lm


def load_data(cfg: DictConfig):
    """The datamodule with its rows read and checked: bad data fails before any model is loaded."""
    datamodule = instantiate(cfg.data, tokenizer=None)
    datamodule.load_rows()
    log.info("rows per subset: %s", {s: len(r) for s, r in datamodule.rows.items()})
    return datamodule


def attach_prior(cfg: DictConfig, datamodule, lm) -> tuple[dict | None, object | None]:
    """The prior-anchored simulator's prior (prior=survey|similarity), or the one saved with model.adapter (an
    adapter trained on a prior predicts residuals to it); (its build arguments, the prior) or (None, None)."""
    from simlab.priors import build_prior, load_prior_settings

    saved = load_prior_settings(cfg.model.adapter)
    if cfg.get("prior"):
        build = {k: v for k, v in OmegaConf.to_container(cfg.prior, resolve=True).items() if not k.startswith("_")}
        if saved is not None and saved["build"] != build:
            log.warning("prior %s replaces the prior %s saved with %s (prior.json)", build, saved["build"],
                        cfg.model.adapter)
    elif saved is not None:
        build = saved["build"]
        log.info("using the prior saved with %s: %s", cfg.model.adapter, build)
    else:
        return None, None
    countries = sorted({r.country for rows in datamodule.rows.values() for r in rows})
    prior = build_prior(datamodule.prior_rows, model=lm.model, tokenizer=lm.tokenizer, countries=countries, **build)
    log.info("prior from %d rows of %s: %s", len(datamodule.prior_rows), datamodule.prior_subset, prior.settings)
    datamodule.set_prior(prior)
    return build, prior


def run_model(cfg: DictConfig, out: Path, loggers: list) -> tuple:
    """Fine-tune and/or test the language model; returns (datamodule, test metrics, predictions, info)."""
    from simlab.callbacks import ResumeCheckpoint
    from simlab.distributed import adapter_from_checkpoint, check_launch
    from simlab.priors import save_prior_settings
    from simlab.results import predictions_in_row_order

    datamodule = load_data(cfg)
    lm = load_model(cfg)
    datamodule.set_tokenizer(lm.tokenizer)
    prior_build, prior = attach_prior(cfg, datamodule, lm)
    datamodule.setup()
    module = instantiate(cfg.module, model=lm.model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    resume_checkpoint = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_launch(trainer, HydraConfig.get().mode == RunMode.MULTIRUN)  # no sweep re-run per spawned rank
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    adapter = cfg.model.adapter
    info: dict = {}
    if cfg.task.fit:
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
        if resume_checkpoint is not None and resume_checkpoint.resumed:
            info["resumed_from"] = resume_checkpoint.resumed
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), "")
        log.info("testing with %s", best or "the final weights (no best checkpoint)")
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        adapter = str(out / "adapter")
        if trainer.world_size > 1:  # DDP/FSDP: live weights may be shards; the checkpoint holds them whole
            checkpoint = best or (str(resume_checkpoint.path) if resume_checkpoint is not None else "")
            if not checkpoint:
                raise ValueError(
                    "multi-process fine-tuning writes the adapter from a checkpoint: keep callbacks.checkpoint")
            if trainer.is_global_zero:
                adapter_from_checkpoint(module.model, checkpoint, adapter)
        else:
            module.model.save_pretrained(adapter)
        if prior is not None and trainer.is_global_zero:
            save_prior_settings(adapter, prior, prior_build)
    else:
        trainer.test(module, datamodule=datamodule, verbose=False)
    info.update(model=cfg.model.name, model_source=lm.source, adapter=adapter,
                loss=HydraConfig.get().runtime.choices.get("loss"), prior=prior.settings if prior is not None else None)
    predictions = datamodule.merge_option_orders(predictions_in_row_order(module.test_predictions))
    if datamodule.test_option_orders != "given":  # the module scored each option order; score the averages
        from simlab.evaluation import score_subsets

        return datamodule, score_subsets(datamodule.rows, predictions), predictions, info
    return datamodule, module.test_results, predictions, info


def run_baseline(cfg: DictConfig) -> tuple:
    """Fit a baseline on the train subset and predict every test subset."""
    from simlab.evaluation import score_subsets

    if not cfg.get("baseline"):
        raise ValueError("task=baseline needs baseline=<uniform|avg_culture|knn|json_zs>")
    baseline = instantiate(cfg.baseline, _convert_="all")
    datamodule = load_data(cfg)
    if hasattr(baseline, "set_language_model"):
        lm = instantiate(cfg.model.loader)
        baseline.set_language_model(lm)
        datamodule.set_tokenizer(lm.tokenizer)
    datamodule.setup()
    train = datamodule.rows.get(datamodule.train_subset, []) if datamodule.train_subset else []
    if hasattr(baseline, "prior"):  # the survey prior also embeds the test countries
        baseline.fit(train, countries=sorted({r.country for rows in datamodule.rows.values() for r in rows}))
    else:
        baseline.fit(train)
    predictions = {s: baseline.predict(datamodule.rows[s]) for s in datamodule.test_subsets}
    info = {"baseline": HydraConfig.get().runtime.choices.get("baseline"), "baseline_report": baseline.report()}
    if hasattr(baseline, "set_language_model"):
        info.update(model=cfg.model.name, model_source=lm.source)
    return datamodule, score_subsets(datamodule.rows, predictions), predictions, info


def calibrate(cfg: DictConfig, datamodule, predictions: dict, adapter: str | None) -> tuple[dict, dict, dict]:
    """(raw predictions, calibrated predictions, calibration record). A fine-tune fits the temperature on
    ``calibrate_on`` (the valid split) and saves it with its adapter; evaluating a saved adapter applies the
    temperature saved with it (never refitted), else fits one on ``calibrate_on``."""
    from simlab.calibration import calibrate_predictions, load_calibration, rescale_predictions, save_calibration

    saved = None if cfg.task.fit else load_calibration(adapter)
    if saved is not None:
        record = {**saved, "source": f"{adapter}/calibration.json"}
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


def wants_calibration(cfg: DictConfig, adapter: str | None) -> bool:
    """calibrate=true: fit a temperature (a fine-tune saves it) or apply the evaluated adapter's saved one;
    null (default): apply a saved one only, never fit; false: the raw option probabilities."""
    from simlab.calibration import load_calibration

    if cfg.task.name == "baseline" or cfg.calibrate is False:
        return False
    if cfg.calibrate:
        return True
    return not cfg.task.fit and load_calibration(adapter) is not None


def run(cfg: DictConfig) -> dict:
    import pytorch_lightning as pl

    from simlab.distributed import is_rank_zero
    from simlab.evaluation import score_subsets
    from simlab.provenance import git_state
    from simlab.results import analyse, results_table, summarize, write_predictions
    from simlab.rundir import CONFIG_FILE, write_json, write_text

    started = time.time()
    code = git_state(Path(__file__).resolve().parent)  # at the start: the code that runs, not what is checked out later
    out = Path(cfg.paths.output_dir)
    overrides = list(HydraConfig.get().overrides.task)
    if is_rank_zero() and not cfg.resume:  # one set of outputs per job, however many processes train it
        write_text(out / CONFIG_FILE, OmegaConf.to_yaml(cfg, resolve=True))
    pl.seed_everything(cfg.seed, workers=True)

    if cfg.task.name == "simulate":
        from simlab.simulate import simulate_task

        return simulate_task(OmegaConf.to_container(cfg, resolve=True), out)
    loggers = build_loggers(cfg, overrides)
    failed = True
    try:
        if cfg.task.name == "baseline":
            datamodule, test_results, predictions, info = run_baseline(cfg)
            log_metrics(loggers,
                        {f"test/{s}/{m}": v for s, vs in test_results.items() for m, v in vs.items() if m != "n"})
        else:
            datamodule, test_results, predictions, info = run_model(cfg, out, loggers)
        if not is_rank_zero():  # every rank holds the gathered predictions; rank 0 alone writes them
            failed = False
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
            overrides=overrides,
            code=code,
            rows={s: len(r) for s, r in datamodule.rows.items()},
            wall_time_s=round(time.time() - started, 1),
        )
        summary.update(extra)
        # every output atomically, metrics.json after the predictions; main() writes status.json last
        write_predictions(out / "predictions.jsonl", datamodule.rows, predictions,
                          **({"predicted_uncalibrated": raw} if raw is not None else {}))
        write_text(out / "results.md", results_table(summary))
        write_json(out / "metrics.json", summary)
        log_metrics(loggers, {f"test/paper_average/{m}": v for m, v in (summary.get("paper_average") or {}).items()})
        log.info("\n%s", results_table(summary))
        log.info("outputs in %s", out)
        failed = False
    finally:
        finish_wandb(failed)
    return summary


def _caused_by(err: BaseException, kind: type) -> BaseException | None:
    while err is not None:
        if isinstance(err, kind):
            return err
        err = err.__cause__ or err.__context__
    return None


def _log_to_files(message: str) -> None:
    """Write the current exception's traceback into the run's log file(s) only (the console gets Hydra's own)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, sys.exc_info())
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def resume_command(overrides: list[str], out: Path) -> str:
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+~") not in ("resume", "overwrite")]
    return shlex.join(["python", "run.py", *kept, f"resume={out}"])


def prepare_resume(cfg: DictConfig, out: Path) -> None:
    """resume=<run dir>: the same config as the interrupted run (else an error naming what differs), and its
    last checkpoint as ckpt_path."""
    from simlab.rundir import CONFIG_FILE, RunDirError, config_differences

    if not cfg.task.fit:
        raise RunDirError(f"resume={out}: only fine-tuning resumes; a {cfg.task.name} run is simply run again")
    saved = out / CONFIG_FILE
    if not saved.is_file():
        raise RunDirError(f"resume={out}: no {CONFIG_FILE} there, so not a simlab run that can be resumed")
    differences = config_differences(
        OmegaConf.to_container(OmegaConf.load(saved), resolve=True), OmegaConf.to_container(cfg, resolve=True),
        ignore=("resume", "ckpt_path", "overwrite"),
    )
    if differences:
        raise RunDirError(
            f"resume={out}: the config differs from the interrupted run's ({'; '.join(differences[:10])}); give the "
            f"same overrides as the original command (its status.json has them)"
        )
    checkpoint = out / "checkpoints" / "last.ckpt"
    if not checkpoint.is_file():
        raise RunDirError(f"resume={out}: no checkpoints/last.ckpt (stopped before its first checkpoint): run it again")
    if cfg.ckpt_path and Path(cfg.ckpt_path).resolve() != checkpoint.resolve():
        raise RunDirError(f"resume={out} resumes from {checkpoint}; drop ckpt_path={cfg.ckpt_path}")
    cfg.ckpt_path = str(checkpoint)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Claim the run folder, run the job and record its fate in status.json.

    status.json says ``running`` first and the outcome last: ``completed``; ``interrupted`` by SIGINT/SIGTERM
    (with the checkpoint and the command that resumes it; exit code 128 + the signal); ``skipped`` in a sweep
    when the model is not on this machine (the sweep goes on); ``failed`` otherwise (the error is logged to
    run.log and re-raised, so Hydra still runs a sweep's remaining jobs and then exits with the error)."""
    from simlab.distributed import is_rank_zero
    from simlab.interrupt import RunInterrupted, raise_on_signals, signal_name
    from simlab.model import ModelNotAvailable
    from simlab.rundir import claim, write_status

    out = Path(cfg.paths.output_dir)
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    owner = False  # whether this run owns the folder's status.json (never touch another run's)
    try:
        with raise_on_signals():
            if cfg.resume:
                prepare_resume(cfg, out)
            if is_rank_zero():
                claim(out, resume=bool(cfg.resume), overwrite=bool(cfg.overwrite))
                write_status(out, "running", overrides, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             resumed_from=cfg.ckpt_path if cfg.resume else None)
                owner = True
            run(cfg)
    except RunInterrupted as err:
        log.warning("%s. Resume with: %s", err, resume_command(overrides, out) if err.checkpoint else "(nothing saved)")
        if owner:
            write_status(out, "interrupted", overrides, signal=signal_name(err.signum), checkpoint=err.checkpoint,
                         step=err.step, message=str(err), resume_command=resume_command(overrides, out))
        raise SystemExit(err.exit_code) from None
    except BaseException as err:
        missing = _caused_by(err, ModelNotAvailable)  # instantiate() wraps the loader's error
        if missing is not None and hydra_cfg.mode == RunMode.MULTIRUN:
            log.warning("job skipped: %s", missing)
            if owner:
                write_status(out, "skipped", overrides, reason=str(missing))
            return
        _log_to_files(f"run failed: {type(err).__name__}: {err}")
        if owner:
            write_status(out, "failed", overrides, error=f"{type(err).__name__}: {err}",
                         traceback=traceback.format_exc())
        raise
    if owner:
        write_status(out, "completed", overrides)


if __name__ == "__main__":
    main()
