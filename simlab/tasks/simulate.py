"""task=simulate: answer distributions for new questions per country (simlab.simulate.simulate_task)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def simulate(cfg: DictConfig) -> dict:
    from simlab.simulate import simulate_task
    from simlab.tasks.common import resolve_model_adapter

    resolve_model_adapter(cfg)
    return simulate_task(OmegaConf.to_container(cfg, resolve=True), Path(cfg.paths.output_dir))
