"""LoRA dropout's cost in one training step of the embedded model: torch's ``nn.Dropout`` (``bernoulli_``) against
simlab's :class:`~simlab.model.lora_dropout.LoraDropout` (32-bit draws), forward and backward, on the shapes a
step of the bench's shared-prefix training has (SmolLM2-135M: hidden 576, LoRA on q_proj and v_proj of 30 layers,
about 350 packed tokens a step of 8 rows). The two alternate in one process; medians of the repeats and their ratio.
Cited in experiments/PERFORMANCE.md ("LoRA dropout").

    python experiments/lora_dropout.py [--tokens 350] [--repeats 15] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from simlab.model.lora_dropout import LoraDropout
from simlab.runs.provenance import cpu_model

HIDDEN, LAYERS, TARGETS, P = 576, 30, 2, 0.05  # SmolLM2-135M with the paper's LoRA (q_proj, v_proj; p 0.05)


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
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    x = torch.randn(1, args.tokens, HIDDEN, dtype=dtype, requires_grad=True)
    layers = {"torch nn.Dropout": nn.Dropout(P), "simlab LoraDropout": LoraDropout(P)}
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
    torch_ms, simlab_ms = medians.values()
    print(f"simlab / torch: {simlab_ms / torch_ms:.2f} of the time ({torch_ms / simlab_ms:.2f}x faster)")


if __name__ == "__main__":
    main()
