"""simlab's only Hydra entry point: compose the config, then run the task it names (conf/task/*.yaml: task.run)
through one wrapper that claims the run folder and records the run's fate in status.json (simlab.tasks).

    python run.py                              # fine-tune the embedded model with LoRA, test every subset
    python run.py task=zeroshot                # evaluate the bare model
    python run.py task=baseline baseline=knn   # a baseline: uniform | avg_culture | knn | json_zs
    python run.py model=hf model.path=DIR loss=js
    python run.py -m loss=kl,js,ce,wasserstein # a Hydra multirun sweep (outputs under multirun/)
    python run.py <same overrides> resume=<run dir>   # continue an interrupted fine-tune exactly
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig, OmegaConf

from simlab.runs.status import safe_dirname, sqlite_storage, unique_run_dir
from simlab.tasks import objective, run_task

# hydra.run.dir: the folder to resume, else a new one per run (date, time and a random part; cached per config)
OmegaConf.register_new_resolver("simlab.run_dir", unique_run_dir, use_cache=True)
# hparams_search: the Optuna study's SQLite file under the sweep folder (made first)
OmegaConf.register_new_resolver("simlab.sqlite", sqlite_storage, use_cache=True)
# a sweep job's folder name: its overrides as one safe path component (no "/" or "..")
OmegaConf.register_new_resolver("simlab.dirname", safe_dirname)


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """The task's result; a sweeper (hparams_search=...) optimises the number named by ``optimized_metric``."""
    return objective(run_task(cfg), cfg.get("optimized_metric"))


if __name__ == "__main__":
    main()
