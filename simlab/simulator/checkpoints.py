"""Lightning checkpoints to adapter folders: under FSDP (or for another checkpoint than the one a run saved as its
adapter) the weights are taken from a checkpoint. Checkpoints are read with ``weights_only=True``: a crafted
checkpoint cannot run code."""

from __future__ import annotations

from pathlib import Path

import torch

from simlab.training.distributed import clean_param_name


def load_checkpoint_weights(checkpoint_path: str | Path) -> dict:
    """A Lightning checkpoint's ``state_dict``, unpickled with tensors and plain containers only."""
    try:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle.UnpicklingError and friends: say which file and why
        raise ValueError(f"{checkpoint_path}: {unsafe_reason(err)}") from err
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ValueError(f"{checkpoint_path}: no 'state_dict' in the checkpoint")
    return checkpoint["state_dict"]


def unsafe_reason(err: BaseException) -> str:
    """Why a weights-only load refused a file, in one line: torch's message also suggests loading it unsafely."""
    import re

    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found:
        return (f"not a checkpoint simlab can read safely: it names code to run on loading ({found.group(1)}), and "
                f"checkpoints are loaded weights only (tensors and plain data)")
    return f"not a checkpoint simlab can read safely (weights only): {' '.join(str(err).split())[:300]}"


def adapter_from_checkpoint(
    peft_model, checkpoint_path: str | Path, out_dir: str | Path, prefix: str = "model.", adapter_name: str = "default",
    state: dict | None = None,
) -> Path:
    """Write a peft adapter folder from a Lightning checkpoint of :class:`simlab.training.module.SurveyLitModule`.

    Under FSDP the live LoRA weights are shards, so ``peft_model.save_pretrained()`` would save fragments; the
    checkpoint holds them whole (full state dict, gathered on rank 0). The files are written here rather than
    by ``save_pretrained(state_dict=...)``, which picks keys by the live model's module names and so saves
    nothing once wrappers have renamed them. Call it on rank 0 only: it does no collective. ``prefix`` is the
    attribute holding the peft model inside the LightningModule; ``state``: the checkpoint's state_dict when the
    caller has read it already (:func:`load_checkpoint_weights`).
    """
    import copy

    from safetensors.torch import save_file

    checkpoint_path = Path(checkpoint_path)
    if not checkpoint_path.is_file():
        raise FileNotFoundError(
            f"{checkpoint_path} is not a single-file checkpoint (a sharded FSDP checkpoint is a folder; use the "
            f"fsdp trainer's state_dict_type=full)"
        )
    if state is None:
        state = load_checkpoint_weights(checkpoint_path)
    marker = f".{adapter_name}."
    tensors = {
        clean_param_name(k[len(prefix):]).replace(marker, "."): v.contiguous()
        for k, v in state.items()
        if k.startswith(prefix) and "lora_" in k and marker in k
    }
    if not tensors:
        raise ValueError(f"{checkpoint_path} holds no LoRA weights of adapter {adapter_name!r} under {prefix!r}")
    config = copy.deepcopy(peft_model.peft_config[adapter_name])
    config.inference_mode = True
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out_dir))
    save_file(tensors, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    return out_dir


def adapter_from_run_checkpoint(checkpoint_path: str | Path, out_dir: str | Path) -> Path:
    """A simulator folder from a checkpoint of a simlab run (``<run dir>/checkpoints/<name>.ckpt``): the adapter,
    its simulator.json from that run's config_resolved.yaml (model, prompt, LoRA, prior settings; the training
    files' fingerprint) and the prior.json the run saved (``simlab adapter-from-ckpt CKPT OUT``). The run's
    calibration.json is not copied: it was fitted for the adapter the run saved, not necessarily this checkpoint."""
    import shutil

    import peft

    from simlab.data.selection import data_file
    from simlab.model import attach_lora
    from simlab.paths import data_root
    from simlab.runs.rundir import RunDir
    from simlab.simulator.bundle import (
        PRIOR_FILE,
        load_model,
        manifest_from_config,
        training_fingerprint,
        write_manifest,
    )

    run = RunDir(Path(checkpoint_path).resolve().parents[1])
    if not run.config_file.is_file():
        raise FileNotFoundError(f"{checkpoint_path}: no {run.config_file} beside its checkpoints folder, so the "
                                f"model and LoRA settings of the run that wrote it are unknown")
    cfg = run.read_config()  # refuses a foreign _target_ before anything is instantiated
    if not Path(checkpoint_path).is_file():
        raise FileNotFoundError(f"{checkpoint_path} is not a single-file checkpoint")
    state = load_checkpoint_weights(checkpoint_path)  # weights only, and before a model is loaded for nothing
    model_cfg = cfg["model"]
    lora = peft.LoraConfig(**{k: v for k, v in model_cfg["lora"].items() if k != "_target_"})
    model = attach_lora(load_model(model_cfg["loader"]).model, lora)
    out = adapter_from_checkpoint(model, checkpoint_path, out_dir, state=state)
    data_cfg = cfg.get("data") or {}
    root = data_root(data_cfg.get("root"))
    files = [data_file(name, root) for name in data_cfg.get("files") or []]
    prior = cfg.get("prior")
    build = {k: v for k, v in prior.items() if not str(k).startswith("_")} if prior else None
    code = run.read_metrics().get("code") if run.metrics_file.is_file() else None  # the code that trained it
    manifest = manifest_from_config(cfg, prior_build=build, code=code,
                                    data=training_fingerprint([f for f in files if f.is_file()],
                                                              data_cfg.get("train_subset")))
    if (run.adapter_dir / PRIOR_FILE).is_file():
        shutil.copyfile(run.adapter_dir / PRIOR_FILE, Path(out) / PRIOR_FILE)
    write_manifest(out, manifest)
    return out
