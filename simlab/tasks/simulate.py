"""task=simulate: answer distributions for new questions per country (simlab.simulate.simulate_task)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf


def simulate(cfg: DictConfig) -> dict:
    from simlab.simulate import simulate_task
    from simlab.tasks.common import apply_adapter

    apply_adapter(cfg)  # the adapter's own prompt, base model and prior (or an error naming the override)
    return simulate_task(OmegaConf.to_container(cfg, resolve=True), Path(cfg.paths.output_dir))
