"""A candidate LoRA dropout for CPUs, measured and not merged: masks from one 32-bit draw of torch's generator per
element, against torch's ``nn.Dropout`` (``bernoulli_``: a serial loop of two 32-bit draws and a double per
element), forward and backward on the shapes of one shared-prefix training step of the embedded model
(SmolLM2-135M: hidden 576, the paper's LoRA on q_proj and v_proj of 30 layers, about 350 packed tokens for 8 rows).
The two alternate in one process; medians of the repeats and their ratio, after a check that the candidate drops
with probability p and scales what it keeps by 1 / (1 - p).

The candidate was simlab's default at commit e519d96 (``simlab.model.lora_dropout`` there, swapped into every LoRA
layer) and was reverted: its masks are another draw, so training takes another trajectory, and ``make run`` moved
by more than issue 24 allows (experiments/PERFORMANCE.md, "LoRA dropout from 32-bit draws").

    python experiments/lora_dropout.py [--tokens 350] [--repeats 15] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from torch import nn

from simlab.runs.provenance import cpu_model

HIDDEN, LAYERS, TARGETS, P = 576, 30, 2, 0.05  # SmolLM2-135M with the paper's LoRA (q_proj, v_proj; p 0.05)


def drop_threshold(p: float) -> int:
    """The 32-bit lane value below which an element is dropped: round(p * 2**32) of the 2**32 values lie below."""
    return -(2**31) + round(p * 2**32)


def cpu_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout of ``x`` with one 32-bit draw of torch's default generator per element: 64-bit ``randint`` draws
    viewed as two 32-bit lanes (their range leaves out one of the 2**64 values), the kept elements' factor as a
    tensor of x's dtype, as torch's own dropout makes it (one product forward, one backward)."""
    n = x.numel()
    words = torch.randint(-(2**63), 2**63 - 1, ((n + 1) // 2,), dtype=torch.int64, device=x.device)
    lanes = words.view(torch.int32)[:n].view(x.shape)
    noise = (lanes >= drop_threshold(p)).to(x.dtype).mul_(1.0 / (1.0 - p))
    return x * noise


class LoraDropout(nn.Dropout):
    """``nn.Dropout`` whose CPU training masks come from :func:`cpu_dropout`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not 0.0 < self.p < 1.0 or x.device.type != "cpu":
            return super().forward(x)
        return cpu_dropout(x, self.p)


def check(p: float = P, rows: int = 1000, cols: int = 1001) -> str:
    """The candidate drops within 5 standard errors of p and scales kept elements exactly as torch does."""
    x = torch.randn(rows, cols) + 5.0
    y = cpu_dropout(x, p)
    kept = y != 0
    rate = 1.0 - float(kept.float().mean())
    if abs(rate - p) > 5 * math.sqrt(p * (1 - p) / x.numel()) or not torch.equal(y[kept], x[kept] * (1 / (1 - p))):
        raise SystemExit(f"the candidate dropout is wrong: drop rate {rate:.5f} for p {p}, or its scaling")
    return f"check: drop rate {rate:.5f} for p {p} over {x.numel()} elements, kept elements scaled by 1/(1-p)"


def step_seconds(layer: nn.Module, x: torch.Tensor, calls: int) -> float:
    """Seconds for ``calls`` dropouts of ``x`` and their backward, as one training step makes them."""
    start = time.perf_counter()
    for _ in range(calls):
        layer(x).sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=350)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    args = parser.parse_args()
    print(check())
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    x = torch.randn(1, args.tokens, HIDDEN, dtype=dtype, requires_grad=True)
    layers = {"torch nn.Dropout": nn.Dropout(P), "candidate (32-bit draws)": LoraDropout(P)}
    calls = LAYERS * TARGETS
    seconds: dict[str, list[float]] = {name: [] for name in layers}
    for layer in layers.values():  # untimed warm-up
        step_seconds(layer.train(), x, calls)
    for repeat in range(args.repeats):  # in turns, so a change of the machine's speed reaches both
        for name in list(layers)[repeat % 2:] + list(layers)[: repeat % 2]:
            seconds[name].append(step_seconds(layers[name], x, calls))
    print(f"cpu: {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, "
          f"{calls} dropouts of [{args.tokens}, {HIDDEN}] forward and backward a step, p {P}")
    medians = {name: statistics.median(values) for name, values in seconds.items()}
    for name, value in medians.items():
        print(f"{name}: {value * 1000:.1f} ms a step (median of {args.repeats})")
    torch_ms, candidate_ms = medians.values()
    print(f"candidate / torch: {candidate_ms / torch_ms:.2f} of the time ({torch_ms / candidate_ms:.2f}x faster)")


if __name__ == "__main__":
    main()
