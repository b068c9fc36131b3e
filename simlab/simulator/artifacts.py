"""A trained simulator logged to W&B: ``model.adapter=wandb:NAME[:ALIAS]`` as a local adapter folder, from the
offline runs on this machine (their staged files), else from the W&B server. The artifact is the adapter folder
whole (weights, simulator.json, prior.json, calibration.json), so it loads as the folder it was logged from."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

WANDB_PREFIX = "wandb:"


def adapter_artifact_name(model_name: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'; one name per model, versions per run."""
    safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in model_name)
    return f"adapter-{safe}"


def is_wandb_reference(adapter: str | None) -> bool:
    return bool(adapter) and str(adapter).startswith(WANDB_PREFIX)


def resolve_adapter(reference: str, search: Sequence[str | Path] = ("outputs", "multirun"),
                    cache: str | Path = "outputs/wandb_artifacts") -> str:
    """``wandb:NAME[:ALIAS]`` -> a local adapter folder. The newest offline run under ``search`` that logged
    artifact NAME is used when there is one (its staged files are copied into ``cache``); otherwise the W&B server
    (``wandb.Api().artifact``, needs ``wandb login``; ALIAS defaults to ``latest``)."""

    spec = reference[len(WANDB_PREFIX):]
    name, _, alias = spec.partition(":")
    if not name:
        raise ValueError(f"model.adapter={reference}: give wandb:<artifact name>[:<alias>]")
    if alias in ("", "latest"):
        local = _offline_artifact(name, search, cache)
        if local is not None:
            log.info("model.adapter=%s: the offline artifact, copied to %s", reference, local)
            return str(local)
    import wandb

    try:
        artifact = wandb.Api().artifact(f"{name}:{alias or 'latest'}" if "/" in name else
                                        f"simlab/{name}:{alias or 'latest'}")
    except Exception as err:  # no login, no network, no such artifact: say what was searched
        raise FileNotFoundError(
            f"model.adapter={reference}: no offline run under {', '.join(map(str, search))} logged artifact {name!r} "
            f"with its files still staged, and the W&B server could not give it ({type(err).__name__}: {err})"
        ) from err
    return artifact.download(root=str(Path(cache) / f"{name}-{alias or 'latest'}"))


def _offline_artifact(name: str, search: Sequence[str | Path], cache: str | Path) -> Path | None:
    """The newest offline run under ``search`` that logged artifact ``name`` with its staged files still there:
    those files copied into ``cache``; None when there is none."""
    from simlab.runs.wandb_offline import read_run, run_files

    newest_first = sorted((f for folder in search if Path(folder).is_dir() for f in run_files(folder)),
                          key=lambda f: f.stat().st_mtime, reverse=True)
    for run_file in newest_first:
        for artifact in reversed(read_run(run_file)["artifacts"]):
            if artifact["name"] != name:
                continue
            if not all(Path(p).is_file() for p in artifact["files"].values()):
                log.warning("%s logged %s, but its staged files are gone (synced?)", run_file, name)
                continue
            target = Path(cache) / f"{name}-{run_file.parent.name}"
            for relative, staged in artifact["files"].items():
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staged, target / relative)
            return target
    return None
