"""What the tasks share: the Hydra job's facts, the loggers (and closing W&B), the data, the model, the prior."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("simlab")


# ---------------------------------------------------------------------------------------------- the Hydra job
def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def job_overrides() -> list[str]:
    """The job's command-line overrides (none when a task is called outside Hydra)."""
    hydra_cfg = _hydra()
    return list(hydra_cfg.overrides.task) if hydra_cfg is not None else []


def job_choice(group: str) -> str | None:
    """The option chosen for a config group (e.g. loss=js gives "js"); None outside Hydra."""
    hydra_cfg = _hydra()
    return hydra_cfg.runtime.choices.get(group) if hydra_cfg is not None else None


def is_multirun() -> bool:
    from hydra.types import RunMode

    hydra_cfg = _hydra()
    return hydra_cfg is not None and hydra_cfg.mode == RunMode.MULTIRUN


def code_state() -> dict | None:
    """The code that runs (git commit, dirty or not), read at the start: not what is checked out later."""
    from simlab.paths import REPO_ROOT
    from simlab.runs.provenance import git_state

    return git_state(REPO_ROOT)


# ---------------------------------------------------------------------------------------------- loggers
def build_loggers(cfg: DictConfig) -> list:
    """The configured loggers; a W&B run is tagged with the job's overrides and, in a sweep, grouped by it."""
    from hydra.utils import instantiate

    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        extra = {}
        if name == "wandb" and logger_cfg.get("group") is None and is_multirun():
            extra["group"] = _hydra().sweep.dir
        loggers.append(instantiate(logger_cfg, **extra))
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            logger.experiment.tags = tuple(job_overrides())[:64]
    return loggers


def log_metrics(loggers: list, metrics: dict[str, float]) -> None:
    """Metrics computed outside a Trainer (baselines, the paper average), under the module's naming scheme."""
    for logger in loggers:
        if metrics:
            logger.log_metrics(metrics)
            logger.save()


def finish_wandb(failed: bool = False) -> None:
    """Close the W&B run so each job of a sweep is its own run (marked failed when the job failed)."""
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish(exit_code=1 if failed else 0)


@contextlib.contextmanager
def closing_wandb() -> Iterator[None]:
    """Finish the W&B run when the block ends: failed when it raised, else done."""
    failed = True
    try:
        yield
        failed = False
    finally:
        finish_wandb(failed)


# ---------------------------------------------------------------------------------------------- data, model, prior
def load_data(cfg: DictConfig):
    """The datamodule with its rows read and checked: bad data fails before any model is loaded."""
    from hydra.utils import instantiate

    datamodule = instantiate(cfg.data, tokenizer=None)
    datamodule.load_rows()
    log.info("rows per subset: %s", {s: len(r) for s, r in datamodule.rows.items()})
    return datamodule


def load_model(cfg: DictConfig):
    """The language model, with a saved adapter (model.adapter) or a fresh LoRA adapter when training."""
    from hydra.utils import instantiate

    from simlab.model import attach_lora, load_adapter

    lm = instantiate(cfg.model.loader)
    if cfg.model.adapter:
        lm.model = load_adapter(lm.model, cfg.model.adapter, trainable=cfg.task.fit)
    elif cfg.task.fit:
        lm.model = attach_lora(lm.model, instantiate(cfg.model.lora, _convert_="all"))
    return lm


def attach_prior(cfg: DictConfig, datamodule, lm) -> tuple[dict | None, object | None]:
    """The prior-anchored simulator's prior (prior=survey|similarity), or the one saved with model.adapter (an
    adapter trained on a prior predicts residuals to it); (its build arguments, the prior) or (None, None)."""
    from simlab.simulator.prior import build_prior, load_prior_settings

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


def resolve_model_adapter(cfg: DictConfig) -> None:
    """``model.adapter=wandb:NAME[:ALIAS]``: the adapter a W&B run logged as an artifact, as a local folder (from
    the offline runs under ``paths.wandb_search``, else the W&B server); a folder path is left as it is."""
    from simlab.report.wandb_logging import is_wandb_reference, resolve_adapter

    if is_wandb_reference(cfg.model.adapter):
        cfg.model.adapter = resolve_adapter(cfg.model.adapter, search=list(cfg.paths.wandb_search),
                                            cache=cfg.paths.artifact_cache)
