"""What the tasks share: the Hydra job's facts, the loggers (and closing W&B), the data, the adapter's settings
and the simulator."""

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
    if not datamodule.test_subsets:  # a run that scores nothing would "complete" with no result
        raise ValueError("data.test_subsets is empty: a run must score at least one subset "
                         f"(the data has {sorted(set(datamodule.subset_names.values()))})")
    datamodule.load_rows()
    log.info("rows per subset: %s", {s: len(r) for s, r in datamodule.rows.items()})
    return datamodule


# the settings an adapter imposes (simlab.simulator.bundle), as a run's config asks them: where each is read
# (the data config's copy is what the prompts use) and which command-line overrides make it explicit
SETTING_NAMES = {"prompt_order": "model.prompt_order", "prompt_style": "model.prompt_style",
                 "chat_template": "model.chat_template", "shared_prefix": "model.shared_prefix",
                 "base_model": "model.loader", "dtype": "model.loader.dtype", "prior": "prior"}
EXPLICIT_BY = {
    "prompt_order": ({"model.prompt_order", "data.prompt_order"}, ()),
    "prompt_style": ({"model.prompt_style", "data.prompt_style"}, ()),
    "chat_template": ({"model.chat_template", "data.chat_template"}, ()),
    "shared_prefix": ({"model.shared_prefix", "data.shared_prefix"}, ()),
    "base_model": ({"model", "model.path", "model.hub_id", "model.embedded", "model.name"}, ("model.loader.",)),
    "dtype": ({"model.loader.dtype"}, ()),
    "prior": ({"prior"}, ("prior.",)),
}


def explicit_settings(overrides: list[str]) -> set[str]:
    """The adapter settings a job's command line sets itself (``model.prompt_order=paper``, ``model=hf``,
    ``prior=survey``...): those contradicting the adapter are errors; the others are taken from it."""
    keys = {o.partition("=")[0].lstrip("+~") for o in overrides}
    found = set()
    for setting, (exact, prefixes) in EXPLICIT_BY.items():
        if any(k in exact or (k.startswith(prefixes) and k != "model.loader.dtype") for k in keys):
            found.add(setting)
    if "model.loader.dtype" in keys:
        found.add("dtype")
    return found


def prior_build(cfg: DictConfig) -> dict | None:
    """build_prior's arguments of the config's prior (prior=survey|similarity), None for prior=none."""
    if not cfg.get("prior"):
        return None
    return {k: v for k, v in OmegaConf.to_container(cfg.prior, resolve=True).items() if not k.startswith("_")}


def asked_settings(cfg: DictConfig) -> dict:
    """What the run's config asks of the simulator, in :mod:`simlab.simulator.bundle`'s terms."""
    loader = OmegaConf.to_container(cfg.model.loader, resolve=True)
    asked = {k: cfg.data.get(k, cfg.model.get(k)) for k in ("prompt_order", "prompt_style", "chat_template")}
    asked.update(shared_prefix=bool(cfg.data.get("shared_prefix", cfg.model.get("shared_prefix", False))),
                 base_model={k: v for k, v in loader.items() if k != "_target_"}, dtype=loader.get("dtype"),
                 prior=prior_build(cfg))
    return asked


def apply_adapter(cfg: DictConfig) -> list[dict]:
    """``model.adapter``: resolve a ``wandb:NAME`` reference to a folder, then apply the adapter's own settings
    (prompt, base model, prior) to ``cfg``; a command-line override contradicting them is an error unless
    ``model.allow_mismatch``. Returns the mismatches allowed (recorded in metrics.json)."""
    from omegaconf import open_dict

    from simlab.simulator.artifacts import is_wandb_reference, resolve_adapter
    from simlab.simulator.bundle import read_bundle, resolve_settings

    if is_wandb_reference(cfg.model.adapter):
        cfg.model.adapter = resolve_adapter(cfg.model.adapter, search=list(cfg.paths.wandb_search),
                                            cache=cfg.paths.artifact_cache)
    if not cfg.model.adapter:
        return []
    bundle = read_bundle(cfg.model.adapter)
    asked = asked_settings(cfg)
    resolved, mismatches = resolve_settings(bundle, asked, explicit_settings(job_overrides()),
                                            bool(cfg.model.get("allow_mismatch", False)), SETTING_NAMES)
    with open_dict(cfg):
        for key in ("prompt_order", "prompt_style", "chat_template", "shared_prefix"):
            if resolved[key] != asked[key]:
                cfg.model[key] = cfg.data[key] = resolved[key]
        if resolved["base_model"] != asked["base_model"]:
            target = cfg.model.loader.get("_target_", "simlab.model.load_language_model")
            cfg.model.loader = {"_target_": target, **resolved["base_model"], "dtype": resolved["dtype"]}
            cfg.model.name = (bundle.manifest or {}).get("base_model", {}).get("name") or cfg.model.name
        elif resolved["dtype"] != asked["dtype"]:
            cfg.model.loader.dtype = resolved["dtype"]
        if resolved["prior"] != asked["prior"]:
            cfg.prior = ({"_target_": "simlab.simulator.prior.build_prior", "_partial_": True, **resolved["prior"]}
                         if resolved["prior"] is not None else None)
    return mismatches


def load_simulator(cfg: DictConfig, datamodule):
    """The simulator a run tests (after :func:`apply_adapter`): the model with ``model.adapter``, or a fresh LoRA
    adapter when training; its prior from the data's prior rows. One place assembles it:
    :func:`simlab.simulator.bundle.load_simulator`."""
    from hydra.utils import instantiate

    from simlab.simulator import bundle

    asked = asked_settings(cfg)
    countries = sorted({r.country for rows in datamodule.rows.values() for r in rows})
    lora = instantiate(cfg.model.lora, _convert_="all") if cfg.task.fit and not cfg.model.adapter else None
    loaded = bundle.load_simulator(
        OmegaConf.to_container(cfg.model.loader, resolve=True), cfg.model.adapter, trainable=cfg.task.fit, lora=lora,
        prior=asked.pop("prior"), prior_rows=lambda: datamodule.prior_rows, countries=countries, settings=asked,
        explicit=asked, allow_mismatch=True,  # apply_adapter has settled every mismatch
    )
    return loaded
