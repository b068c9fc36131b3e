"""task=finetune: LoRA fine-tune on the train subset (validating on the valid subset), test every subset with the
best adapter, save the adapter (and its prior and temperature) in the run folder."""

from __future__ import annotations

from omegaconf import DictConfig

from simlab.tasks.lm import run_language_model


def finetune(cfg: DictConfig) -> dict:
    return run_language_model(cfg)
