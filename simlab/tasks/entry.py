"""The one Hydra main that ``python run.py``, ``simlab run`` and :func:`simlab.evaluate` share.

The configs are conf/ at the top of a clone; an installed wheel carries the same files as ``simlab/conf``
(setup.py maps conf/ there), so an installed simlab runs without a clone. Output folders (``outputs/``,
``multirun/``) are relative to the current directory, wherever the code lies.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from simlab.common.extras import MissingExtra
from simlab.runs.status import safe_dirname, sqlite_storage, unique_run_dir

PACKAGE_CONF = Path(__file__).resolve().parents[1] / "conf"  # in an installed wheel
CHECKOUT_CONF = Path(__file__).resolve().parents[2] / "conf"  # in a clone (and an editable install)
CONFIG_NAME = "config"
VERSION_BASE = "1.3"

# Choices whose code lives in extras: (config group, option; None: any) -> (module it needs, extra that installs it)
PLUGIN_EXTRAS = {
    ("baseline", "knn"): ("sentence_transformers", "knn"),
    ("method", "knn"): ("sentence_transformers", "knn"),
    ("hparams_search", None): ("hydra_plugins.hydra_optuna_sweeper", "search"),
    ("hydra/sweeper", "optuna"): ("hydra_plugins.hydra_optuna_sweeper", "search"),
    ("hydra/launcher", "slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_slurm"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "submitit_local"): ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    ("hydra/launcher", "joblib"): ("hydra_plugins.hydra_joblib_launcher", "joblib"),
}


def config_dir() -> Path:
    """The folder of config.yaml: the copy inside the installed package, else conf/ of the clone."""
    for folder in (PACKAGE_CONF, CHECKOUT_CONF):
        if (folder / f"{CONFIG_NAME}.yaml").is_file():
            return folder
    raise FileNotFoundError(f"simlab's configs are missing: neither {PACKAGE_CONF} nor {CHECKOUT_CONF} holds "
                            f"{CONFIG_NAME}.yaml; reinstall simlab")


def register_resolvers() -> None:
    """The ``${simlab.*:...}`` resolvers the configs use (once per process)."""
    # hydra.run.dir: the folder to resume, else a new one per run (date, time and a random part; cached per config)
    if not OmegaConf.has_resolver("simlab.run_dir"):
        OmegaConf.register_new_resolver("simlab.run_dir", unique_run_dir, use_cache=True)
    # hparams_search: the Optuna study's SQLite file under the sweep folder (made first)
    if not OmegaConf.has_resolver("simlab.sqlite"):
        OmegaConf.register_new_resolver("simlab.sqlite", sqlite_storage, use_cache=True)
    # a sweep job's folder name: its overrides as one safe path component (no "/" or "..")
    if not OmegaConf.has_resolver("simlab.dirname"):
        OmegaConf.register_new_resolver("simlab.dirname", safe_dirname)


def check_plugins(overrides: Sequence[str]) -> None:
    """Raise :class:`MissingExtra` for an override that needs an extra that is not installed, before any work (a
    Hydra plugin would otherwise be an unknown config option, the KNN baseline an error deep in the job). A sweep's
    ``a,b`` lists are read option by option."""
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if not sep:
            continue
        for option in {v.strip() for v in value.split(",")} - {"null", ""}:
            for (group, wanted), (module, extra) in PLUGIN_EXTRAS.items():
                if key == group and wanted in (None, option) and not installed(module):
                    raise MissingExtra(override, extra)


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def job(cfg: DictConfig) -> float | None:
    """The task's result; a sweeper (hparams_search=...) optimises the number named by ``optimized_metric``."""
    from simlab.tasks.wrapper import objective, run_task

    return objective(run_task(cfg), cfg.get("optimized_metric"))


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> float | None:
    """Run Hydra on ``argv`` (default: the command line's arguments), as ``python run.py <overrides>`` does."""
    import hydra

    args = list(sys.argv[1:] if argv is None else argv)
    prog = prog or Path(sys.argv[0]).name
    try:
        check_plugins(args)
    except MissingExtra as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    register_resolvers()
    from simlab.tasks import wrapper

    wrapper.ONE_LINE_ERRORS = True  # a command line: a user error is one line (the traceback goes to run.log)
    sys.argv = [prog, *args]  # Hydra reads its overrides (and --help, -m...) from sys.argv
    return hydra.main(config_path=str(config_dir()), config_name=CONFIG_NAME, version_base=VERSION_BASE)(job)()
