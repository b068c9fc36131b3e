"""LoRA dropout on CPUs with masks drawn 32 bits at a time from torch's generator, the same on every CPU.

peft applies ``nn.Dropout`` to the input of each LoRA matrix pair (p 0.05 in the paper). On a CPU torch draws
that mask with ``bernoulli_``: a serial loop that takes two 32-bit draws of the generator per element and converts
each to a double. It was 8% of a training step of the embedded model (experiments/PERFORMANCE.md, "bf16 on CPUs").
And torch's CPU kernel (``bernoulli_scalar_kernel``) takes MKL's own generator, seeded from torch's, on Intel CPUs
only, so one seed trained on other masks on an Intel CPU than on an AMD one. :class:`LoraDropout` draws one 32-bit
integer per element instead (64-bit ``randint`` draws viewed as two 32-bit lanes) and drops an element when its
integer falls in the lowest ``round(p * 2**32)`` values: dropout with probability p (to 2**-32), kept elements
scaled by 1 / (1 - p) as torch's are, from the same generator (so seeds, checkpointed generator states and exact
resume work as before), in 0.6 of the time forward and backward (experiments/lora_dropout.py), and the same masks
on any CPU. Off the CPU (CUDA's fused dropout is fast) and outside training it is ``nn.Dropout`` itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

LANE_VALUES = 2**32  # the values a 32-bit lane takes, each equally likely
LOWEST_LANE = -(2**31)


def drop_threshold(p: float) -> int:
    """The lane value below which an element is dropped: round(p * 2**32) of the 2**32 values lie below it."""
    return LOWEST_LANE + round(p * LANE_VALUES)


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of ``x`` (on a CPU, 0 < p < 1) with one 32-bit draw of torch's default generator per element."""
    n = x.numel()
    # one 64-bit draw per two elements (``randint``, not ``random_``, which torch.compile cannot trace); its range
    # leaves out one of the 2**64 values, far below any effect
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 1) // 2,), dtype=torch.int64, device=x.device)
    lanes = words.view(torch.int32)[:n].view(x.shape)
    # the kept elements' factor as a tensor of x's dtype, as torch's own dropout makes it: one product forward and
    # one backward (a boolean mask and a scale are two of each, slower than the masks saved)
    noise = (lanes >= drop_threshold(p)).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * noise


class LoraDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training masks come from :func:`cpu_dropout` (the module docstring says why);
    with ``torch_masks`` set (:func:`torch_masks`), torch's own."""

    torch_masks = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.torch_masks or not self.training or not 0.0 < self.p < 1.0 or x.device.type != "cpu":
            return super().forward(x)
        return cpu_dropout(x, self.p)


def use_lora_dropout(model: nn.Module) -> int:
    """Swap every dropout in the model's LoRA layers (peft's ``lora_dropout`` dicts) for :class:`LoraDropout` of
    the same p, in place; returns how many. Identity (p 0) entries are left as they are."""
    swapped = 0
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if not isinstance(dropouts, nn.ModuleDict):
            continue
        for name, dropout in list(dropouts.items()):
            if type(dropout) is nn.Dropout:
                replacement = LoraDropout(dropout.p, dropout.inplace)
                replacement.train(dropout.training)
                dropouts[name] = replacement
                swapped += 1
    return swapped


@contextlib.contextmanager
def torch_masks(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Within the block the model's :class:`LoraDropout` layers draw torch's masks (``bernoulli_``), as peft's
    ``nn.Dropout`` would: what the bench's reference method runs."""
    layers = [m for m in model.modules() if isinstance(m, LoraDropout)] if enabled else []
    for layer in layers:
        layer.torch_masks = True
    try:
        yield
    finally:
        for layer in layers:
            layer.torch_masks = False
