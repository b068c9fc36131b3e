"""Learning-rate schedules for fine-tuning, built by the module once the number of optimizer steps is known.

Each is a function ``(optimizer, total_steps, steps_per_epoch) -> (scheduler, interval)`` with its settings bound by
``functools.partial`` (Hydra ``_partial_: true``), so the config names the schedule and the module supplies the
run's length.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, StepLR


def paper_step(optimizer: Optimizer, total_steps: int, steps_per_epoch: int,
               gamma: float = 0.85) -> tuple[LRScheduler, str]:
    """The paper's StepLR: the learning rate times ``gamma`` after every epoch."""
    return StepLR(optimizer, step_size=1, gamma=gamma), "epoch"


def warmup_cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_fraction: float = 0.06,
                  final_ratio: float = 0.0) -> tuple[LRScheduler, str]:
    """Linear warm-up over ``warmup_fraction`` of the steps, then a cosine decay to ``final_ratio`` of the rate."""
    if not 0 <= warmup_fraction < 1 or not 0 <= final_ratio <= 1:
        raise ValueError(
            f"warmup_fraction must be in [0, 1) and final_ratio in [0, 1], got {warmup_fraction}, {final_ratio}")
    total = max(1, int(total_steps))
    warmup = int(round(warmup_fraction * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor), "step"
