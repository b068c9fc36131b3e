"""task=zeroshot: test the bare model, or a saved adapter (model.adapter, with the prior and temperature saved
with it), on every test subset; nothing is trained."""

from __future__ import annotations

from omegaconf import DictConfig

from simlab.tasks.lm import run_language_model


def evaluate(cfg: DictConfig) -> dict:
    return run_language_model(cfg)
