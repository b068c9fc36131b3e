"""The language model's path, shared by task=finetune and task=zeroshot: load data and model (with its adapter
and prior), fit when ``task.fit``, test every subset, save the adapter; then the shared outputs."""

from __future__ import annotations

import logging
import pickle
import time

from omegaconf import DictConfig, OmegaConf

from simlab.runs.rundir import RunDir
from simlab.tasks.common import (
    apply_adapter,
    build_loggers,
    closing_wandb,
    code_state,
    is_multirun,
    job_choice,
    load_data,
    load_simulator,
)
from simlab.tasks.outputs import check_calibration_subset, write_outputs

log = logging.getLogger("simlab")


def run_language_model(cfg: DictConfig) -> dict:
    """Fit (``task.fit``) and test the language model, then write the run's outputs; returns the metrics."""
    started, code = time.time(), code_state()
    mismatches = apply_adapter(cfg)  # the adapter's own prompt, base model and prior (or an error)
    check_optimizer(cfg)  # settings that would fail only after the model loads, checked before it does
    check_calibration_subset(cfg)
    run = RunDir(cfg.paths.output_dir)
    loggers = build_loggers(cfg)
    with closing_wandb():
        datamodule, test_results, predictions, info = fit_and_test(cfg, run, loggers, code=code)
        if mismatches:
            info["adapter_mismatch"] = mismatches
        return write_outputs(cfg, run, datamodule, test_results, predictions, info, loggers=loggers,
                             started=started, code=code)


def check_optimizer(cfg: DictConfig) -> None:
    """A fine-tune's ``module.optimizer``: ``lr`` a finite number > 0 and ``weight_decay`` one >= 0 (the optimizer
    would refuse them only once the model is loaded)."""
    import math

    if not cfg.task.fit:
        return
    optimizer = cfg.module.get("optimizer") or {}
    for key, least in (("lr", None), ("weight_decay", 0.0)):
        if key not in optimizer:  # the optimizer's own default
            continue
        value = optimizer.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not number or (value <= 0 if least is None else value < least):
            bound = "> 0" if least is None else ">= 0"
            raise ValueError(f"module.optimizer.{key} must be a finite number {bound}, got {value!r}")


def fit_and_test(cfg: DictConfig, run: RunDir, loggers: list, code: dict | None = None) -> tuple:
    """Fine-tune and/or test the language model; returns (datamodule, test metrics, predictions, info)."""
    from hydra.utils import instantiate

    from simlab.runs.predictions import predictions_in_row_order
    from simlab.simulator.checkpoints import adapter_from_checkpoint, unsafe_reason
    from simlab.training.callbacks import ResumeCheckpoint
    from simlab.training.distributed import check_launch
    from simlab.training.reuse import load_checkpoint_weights

    datamodule = load_data(cfg)
    simulator = load_simulator(cfg, datamodule)
    lm, prior = simulator.lm, simulator.prior
    if prior is not None:
        log.info("prior from %d rows of %s", len(datamodule.prior_rows), datamodule.prior_subset)
    datamodule.set_tokenizer(lm.tokenizer)
    datamodule.set_prior(prior)
    datamodule.setup()
    module = instantiate(cfg.module, model=lm.model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    resume_checkpoint = next((c for c in callbacks if isinstance(c, ResumeCheckpoint)), None)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    check_launch(trainer, is_multirun())  # no sweep re-run per spawned rank
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    adapter = cfg.model.adapter
    info: dict = {}
    if cfg.task.fit:
        # weights_only: a checkpoint given as ckpt_path= (or resumed) is unpickled as tensors and plain data only
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
        except pickle.UnpicklingError as err:  # only restoring ckpt_path unpickles here
            raise ValueError(f"ckpt_path={cfg.ckpt_path}: {unsafe_reason(err)}") from err
        if trainer.global_step == 0:  # e.g. trainer.max_epochs=0: an untrained adapter must not pass for a fine-tune
            raise ValueError(
                f"the fine-tune took no optimizer step (trainer.max_epochs={cfg.trainer.get('max_epochs')}, "
                f"trainer.limit_train_batches={cfg.trainer.get('limit_train_batches')}, "
                f"{len(datamodule.rows.get(datamodule.train_subset) or [])} training rows): no adapter is saved; "
                f"to score the model as it is, run task=zeroshot")
        if resume_checkpoint is not None and resume_checkpoint.resumed:
            info["resumed_from"] = resume_checkpoint.resumed
        best = next((c.best_model_path for c in trainer.checkpoint_callbacks if getattr(c, "best_model_path", "")), "")
        info.update(best_valid(trainer))
        log.info("testing with %s", best or "the final weights (no best checkpoint)")
        reuse_validation(cfg, best, datamodule, module, trainer, info)
        if module.tested_subsets:
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False, weights_only=True)
        else:  # every test subset reused (a recipe search tests C1-Q2 alone): no test loop, the best weights
            load_checkpoint_weights(module, best)  # as trainer.test(ckpt_path=best) loads them: the adapter saved
            module.take_reused_tests()
        adapter = str(run.adapter_dir)
        if trainer.world_size > 1:  # DDP/FSDP: live weights may be shards; the checkpoint holds them whole
            checkpoint = best or (str(resume_checkpoint.path) if resume_checkpoint is not None else "")
            if not checkpoint:
                raise ValueError(
                    "multi-process fine-tuning writes the adapter from a checkpoint: keep callbacks.checkpoint")
            if trainer.is_global_zero:
                adapter_from_checkpoint(module.model, checkpoint, adapter)
        if trainer.is_global_zero:
            save_trained_simulator(cfg, datamodule, module.model if trainer.world_size == 1 else None, adapter,
                                   simulator, code)
    else:
        trainer.test(module, datamodule=datamodule, verbose=False)
    info.update(model=cfg.model.name, model_source=lm.source, adapter=adapter,
                loss=job_choice("loss"), prior=prior.settings if prior is not None else None)
    predictions = datamodule.merge_option_orders(predictions_in_row_order(module.test_predictions))
    if datamodule.test_option_orders != "given":  # the module scored each option order; score the averages
        from simlab.metrics.scoring import score_subsets

        return datamodule, score_subsets(datamodule.rows, predictions), predictions, info
    return datamodule, module.test_results, predictions, info


def save_trained_simulator(cfg: DictConfig, datamodule, model, adapter: str, simulator, code: dict | None) -> None:
    """The fine-tune's simulator folder: the adapter (``model``; None when written from a checkpoint), its prior
    and simulator.json (base model, prompt, LoRA, prior, the training data's fingerprint, the code)."""
    from simlab.data.selection import data_file
    from simlab.paths import data_root
    from simlab.simulator.bundle import manifest_from_config, save_simulator, training_fingerprint

    root = data_root(cfg.data.root)
    fingerprint = training_fingerprint([data_file(f, root) for f in cfg.data.files], datamodule.train_subset,
                                       datamodule.rows.get(datamodule.train_subset))
    manifest = manifest_from_config(OmegaConf.to_container(cfg, resolve=True), prior_build=simulator.prior_build,
                                    data=fingerprint, code=code)
    save_simulator(model, adapter, manifest, prior=simulator.prior, prior_build=simulator.prior_build)


def reuse_validation(cfg: DictConfig, best: str, datamodule, module, trainer, info: dict) -> None:
    """Take the valid subset's test scores from the best checkpoint's validation when the test would recompute
    them exactly (simlab.training.reuse; ``task.reuse_validation``)."""
    from simlab.training.reuse import reusable_validation

    subset = datamodule.valid_subset
    if not cfg.task.get("reuse_validation", False) or not best:
        return
    snapshot = reusable_validation(best, subset=subset, test_subsets=datamodule.test_subsets,
                                   option_orders=datamodule.test_option_orders,
                                   rows=len(datamodule.rows.get(subset) or []), world_size=trainer.world_size)
    if snapshot is None:
        return
    module.reused_tests = {subset: snapshot}
    datamodule.reused_tests = {subset}
    info["reused_validation"] = {"subset": subset, "step": snapshot["step"], "checkpoint": best}
    log.info("%s: scores and predictions of the best checkpoint's validation (step %d: the same weights and "
             "rows), not tested again (task.reuse_validation=false tests it)", subset, snapshot["step"])


def best_valid(trainer) -> dict:
    """``{"best_valid": {metric, value, checkpoint}}``: the validation score of the adapter that was tested (the
    objective of a recipe search: never a test subset); empty when no checkpoint callback monitored one."""
    for callback in trainer.checkpoint_callbacks:
        score = getattr(callback, "best_model_score", None)
        if getattr(callback, "monitor", None) and score is not None:
            return {"best_valid": {"metric": callback.monitor, "value": float(score),
                                   "checkpoint": callback.best_model_path}}
    return {}
