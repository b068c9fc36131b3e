"""simlab.training.reuse: a checkpoint's validation snapshot is reused only where the test would recompute it."""

from __future__ import annotations

import pytest
import torch

from simlab.training.module import VALID_SNAPSHOT_KEY
from simlab.training.reuse import reusable_validation

SNAPSHOT = {"step": 12, "metrics": {"one_minus_jsd": 0.8}, "predictions": {0: [0.5, 0.5], 1: [0.2, 0.8]}}
SUBSETS = ["C1-Q2", "C1-Q3"]


def checkpoint(tmp_path, global_step=12, snapshot=SNAPSHOT) -> str:
    path = tmp_path / "best.ckpt"
    state = {"global_step": global_step, "state_dict": {"w": torch.zeros(2)}}
    if snapshot is not None:
        state[VALID_SNAPSHOT_KEY] = snapshot
    torch.save(state, path)
    return str(path)


def reuse(path, **changes):
    arguments = dict(subset="C1-Q2", test_subsets=SUBSETS, option_orders="given", rows=2, world_size=1)
    return reusable_validation(path, **{**arguments, **changes})


def test_the_snapshot_of_the_checkpoints_own_validation_is_reused(tmp_path):
    assert reuse(checkpoint(tmp_path)) == SNAPSHOT


@pytest.mark.parametrize("changes", [
    {"option_orders": "cyclic"},  # the test scores rotated option orders the validation never saw
    {"world_size": 2},  # each rank's validation held its shard of the predictions
    {"rows": 3},  # the validation scored part of the subset (limit_val_batches)
    {"subset": "C1-Q1"},  # the valid subset is not tested
    {"subset": None},
])
def test_no_reuse_where_the_test_would_compute_something_else(tmp_path, changes):
    assert reuse(checkpoint(tmp_path), **changes) is None


def test_no_reuse_from_a_checkpoint_saved_after_training_went_on(tmp_path):
    assert reuse(checkpoint(tmp_path, global_step=20)) is None  # its weights are not the validated ones
    assert reuse(checkpoint(tmp_path, snapshot=None)) is None
    assert reuse("") is None


def test_the_checkpoints_adapter_is_loaded_when_no_test_loop_runs(tmp_path, tiny_llama_dir):
    """Every test subset reused (a recipe search): the run still saves the best checkpoint's adapter, not the final
    weights, as trainer.test(ckpt_path=best) would have loaded it."""
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    from simlab.model import attach_lora
    from simlab.training.losses import KLDivergenceLoss
    from simlab.training.module import SurveyLitModule
    from simlab.training.reuse import load_checkpoint_weights

    base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    model = attach_lora(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    module = SurveyLitModule(model, KLDivergenceLoss(), test_subsets=["C1-Q2"])
    trainable = {n: p for n, p in module.named_parameters() if p.requires_grad}
    best = {n: torch.full_like(p, 0.5) for n, p in trainable.items()}
    torch.save({"global_step": 3, "state_dict": best}, tmp_path / "best.ckpt")
    load_checkpoint_weights(module, str(tmp_path / "best.ckpt"))
    assert all(torch.equal(p, best[n]) for n, p in trainable.items())
    torch.save({"state_dict": {"not.a.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="not this model's adapter"):
        load_checkpoint_weights(module, str(tmp_path / "other.ckpt"))
