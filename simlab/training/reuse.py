"""Taking a test subset's scores from the best checkpoint's validation instead of testing it again.

A fine-tune validates on C1-Q2 and then tests every subset, C1-Q2 included, with the best checkpoint: the same
weights on the same rows (option orders as given, the same precision), so the test would recompute what that
validation computed (~47 s of `make run` on 2 CPU cores): float for float with one loader per subset (the same
batches), up to float rounding when the test subsets share a loader (data.merge_test_subsets: other batches). Each
checkpoint carries its last validation's scores and per-row probabilities (``SurveyLitModule.valid_snapshot``); the
test reuses them only when they are that checkpoint's own (taken at its global step), cover every row of the subset
and came from a single process. ``task.reuse_validation=false`` tests it again; tests/test_run.py checks that both
ways give equal scores and predictions.
"""

from __future__ import annotations

import torch

from simlab.training.module import VALID_SNAPSHOT_KEY


def reusable_validation(checkpoint: str, *, subset: str | None, test_subsets: list[str], option_orders: str,
                        rows: int, world_size: int) -> dict | None:
    """The checkpoint's validation snapshot if the test of ``subset`` would recompute it exactly, else None."""
    if not checkpoint or subset is None or subset not in test_subsets or option_orders != "given" or world_size > 1:
        return None
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
    snapshot = state.get(VALID_SNAPSHOT_KEY)
    if snapshot is None or snapshot.get("step") != state.get("global_step"):
        return None  # a checkpoint saved after training went on past its last validation
    if len(snapshot["predictions"]) != rows:  # e.g. trainer.limit_val_batches: the validation saw part of it
        return None
    return snapshot


def load_checkpoint_weights(module, checkpoint: str) -> None:
    """The checkpoint's trainable weights into ``module``, as ``trainer.test(ckpt_path=...)`` loads them (a
    checkpoint holds the adapter alone): the run saves the adapter it tested even when no test loop runs."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)["state_dict"]
    unexpected = module.load_state_dict(state, strict=False).unexpected_keys
    if unexpected or not state:
        raise ValueError(f"{checkpoint}: weights that are not this model's adapter ({unexpected[:3]}) or none")
