"""A run's inputs checked before anything is deleted: ``overwrite=true`` removes the old run's outputs only once the
new run's data, model, adapter and checkpoint are known to be there (a typo in ``data.root`` must not leave neither
run). Cheap checks only (paths exist and data files open); the task reads and checks their contents later."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def check_inputs(cfg: DictConfig) -> None:
    """Raise the error the run would meet reading its inputs: the data root and every data file (found, readable;
    none when ``task.reads_data_files`` is false, as for simulate), a local model path (a folder with config.json),
    ``model.adapter`` (a folder), ``ckpt_path`` (a file), the simulate task's input files. A user error naming the
    setting."""
    from simlab.data.selection import check_files_exist, data_file
    from simlab.paths import data_root

    data = cfg.get("data")
    if data is not None:
        root = data_root(data.get("root"))
        files = list(data.get("files") or []) if cfg.task.get("reads_data_files", True) else []  # e.g. simulate
        check_files_exist(files, root)
        for name in files:
            with open(data_file(name, root), "rb") as handle:  # unreadable (permissions): PermissionError here
                handle.read(1)
    if uses_model(cfg):
        from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

        try:
            path = cfg.model.loader.get("path")
        except (MissingMandatoryValue, InterpolationToMissingValueError):  # model=hf without model.path=...
            raise ValueError("model.path is not set: this model config needs model.path=<a local HF model folder>"
                             ) from None
        check_model_path(path)
    adapter = cfg.model.get("adapter") if cfg.get("model") is not None else None
    if adapter and not str(adapter).startswith("wandb:") and not Path(adapter).expanduser().is_dir():
        raise FileNotFoundError(f"model.adapter={adapter}: no such adapter folder")
    if cfg.get("ckpt_path") and not cfg.get("resume") and not Path(cfg.ckpt_path).expanduser().is_file():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint file")
    simulate = cfg.get("simulate")  # task=simulate only
    for key in ("input", "observed"):
        value = (simulate or {}).get(key)
        if value and not Path(value).expanduser().is_file():
            raise FileNotFoundError(f"simulate.{key}={value}: no such file")


def uses_model(cfg: DictConfig) -> bool:
    """Whether the task loads the language model: every task whose config says so (``task.loads_model``), and a
    baseline that asks for it (e.g. json_zs: it has ``set_language_model``)."""
    if cfg.task.get("loads_model", True):
        return True
    if not cfg.get("baseline") or not cfg.baseline.get("_target_"):
        return False
    from hydra.utils import get_class

    return hasattr(get_class(cfg.baseline._target_), "set_language_model")


def check_model_path(path: str | None) -> None:
    """A ``model.path`` that names a local folder: it exists and holds config.json (a hub id is not checked here:
    whether it is cached is the loader's question)."""
    from simlab.model.loading import ModelNotAvailable, _looks_like_path

    if not path:
        return
    local = Path(path).expanduser()
    if local.exists() and not (local / "config.json").is_file():
        raise ModelNotAvailable(f"model.path {local} exists but has no config.json: not an HF model folder")
    if not local.exists() and _looks_like_path(str(path)):
        raise ModelNotAvailable(f"model.path {local} does not exist (a local Hugging Face model folder is needed)")


def check_before_overwrite(cfg: DictConfig, out: str | Path) -> None:
    """With ``overwrite=true`` and another run's outputs in ``out``: :func:`check_inputs` first, its error (the same
    type) saying that nothing was deleted. Without outputs to lose, errors come from the run itself (status.json)."""
    from simlab.runs.status import leftover_outputs

    if not cfg.get("overwrite") or cfg.get("resume") or not Path(out).is_dir() or not leftover_outputs(out):
        return
    try:
        check_inputs(cfg)
    except (FileNotFoundError, NotADirectoryError, PermissionError, ValueError) as err:
        raise type(err)(f"overwrite=true: nothing deleted in {out}, the new run's inputs are not usable: "
                        f"{' '.join(str(err).split())}") from err
