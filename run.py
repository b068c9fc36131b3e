"""simlab's only Hydra entry point: compose the config, build each piece with instantiate, run the task.

    python run.py                              # fine-tune the embedded model with LoRA, test every subset
    python run.py task=zeroshot                # evaluate the bare model
    python run.py model=hf model.path=DIR loss=js
    python run.py -m loss=kl,js,ce,wasserstein # a Hydra multirun sweep (outputs under multirun/)
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("simlab")


def build_loggers(cfg: DictConfig, overrides: list[str]) -> list:
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()]
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.tags = tuple(overrides)[:64]
    return loggers


def finish_wandb() -> None:
    """Close the W&B run so each job of a sweep is its own run."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()


def run(cfg: DictConfig) -> dict:
    import pytorch_lightning as pl

    from simlab.model import attach_lora, load_adapter
    from simlab.results import results_table, summarize, write_json, write_predictions

    started = time.time()
    out = Path(cfg.paths.output_dir)
    choices = HydraConfig.get().runtime.choices
    overrides = list(HydraConfig.get().overrides.task)
    OmegaConf.save(cfg, out / "config_resolved.yaml", resolve=True)
    pl.seed_everything(cfg.seed, workers=True)

    lm = instantiate(cfg.model.loader)
    model = lm.model
    if cfg.model.adapter:
        model = load_adapter(model, cfg.model.adapter, trainable=cfg.task.fit)
    elif cfg.task.fit:
        model = attach_lora(model, instantiate(cfg.model.lora, _convert_="all"))

    datamodule = instantiate(cfg.data, tokenizer=lm.tokenizer)
    datamodule.setup()
    sizes = {name: len(rows) for name, rows in datamodule.rows.items()}
    log.info("rows per subset: %s", sizes)

    module = instantiate(cfg.module, model=model, loss=instantiate(cfg.loss), test_subsets=datamodule.test_subsets)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = build_loggers(cfg, overrides)
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    try:
        if cfg.task.fit:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            log.info("testing with %s", best or "the final weights (no best checkpoint)")
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
            module.model.save_pretrained(out / "adapter")
        else:
            trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        finish_wandb()

    summary = summarize(
        module.test_results,
        datamodule.average_subsets,
        task=cfg.task.name,
        model=cfg.model.name,
        model_source=lm.source,
        adapter=str(out / "adapter") if cfg.task.fit else cfg.model.adapter,
        loss=choices.get("loss"),
        prompt_style=cfg.model.prompt_style,
        seed=cfg.seed,
        overrides=overrides,
        rows=sizes,
        wall_time_s=round(time.time() - started, 1),
    )
    write_json(out / "metrics.json", summary)
    write_predictions(out / "predictions.jsonl", datamodule.rows, module.test_predictions)
    (out / "results.md").write_text(results_table(summary), encoding="utf-8")
    log.info("\n%s", results_table(summary))
    log.info("outputs in %s", out)
    return summary


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
