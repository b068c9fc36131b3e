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
