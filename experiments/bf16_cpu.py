"""Why a bf16 run on one CPU prepares its model as it does (:func:`simlab.training.precision.prepare_for_bf16_cpu`),
measured in one process with alternating pairs: (1) evaluation with the frozen weights stored in float32 (autocast
casts them per call) against bf16; (2) evaluation with sdpa against transformers' eager attention (matrix
products); (3) one attention call, forward and backward, sdpa against :func:`simlab.model.cpu_attention.
matmul_attention` on a packed shared-prefix shape, in bf16 and float32. Cited in experiments/PERFORMANCE.md
("bf16 on CPUs"). Training steps themselves: ``python experiments/train_steps.py --precision bf16 --attention``.

    python experiments/bf16_cpu.py [--rows 288] [--pairs 4]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

from simlab.devtools.bench.command import parse_args
from simlab.devtools.bench.methods import SHARED
from simlab.devtools.bench.paths import evaluate
from simlab.devtools.bench.timing import set_up
from simlab.devtools.bench.workload import grouped_order
from simlab.model.cpu_attention import matmul_attention
from simlab.training.precision import cast_frozen_linear_weights


def paired(label: str, first: tuple[str, callable], second: tuple[str, callable], pairs: int) -> None:
    """Each pair runs both, in alternating order; prints every value and the medians."""
    values = {first[0]: [], second[0]: []}
    for pair in range(pairs):
        for name, run in (first, second) if pair % 2 == 0 else (second, first):
            values[name].append(run())
    a, b = (statistics.median(values[name]) for name in values)
    print(f"{label}: {first[0]} {[round(v, 2) for v in values[first[0]]]} (median {a:.2f}), {second[0]} "
          f"{[round(v, 2) for v in values[second[0]]]} (median {b:.2f}); ratio {b / a:.2f}", flush=True)


def attention_ms(fn, repeats: int = 20) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def attention_case(dtype: torch.dtype, prefix: int = 160, rows: int = 8, suffix: int = 30):
    """sdpa and matmul_attention closures (forward + backward) on SmolLM2's heads (9 query, 3 key/value, 64 dims)
    over a packed batch: one prefix, ``rows`` suffixes that each see it and themselves."""
    length = prefix + rows * suffix
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, 9, length, 64, generator=generator).to(dtype).requires_grad_()
    key, value = (torch.randn(1, 3, length, 64, generator=generator).to(dtype).requires_grad_() for _ in range(2))
    group = torch.full((length,), -1)
    for row in range(rows):
        group[prefix + row * suffix: prefix + (row + 1) * suffix] = row
    index = torch.arange(length)
    sees = (group[None, :] < 0) | (group[None, :] == group[:, None])  # the prefix, or its own suffix
    mask = ((index[:, None] >= index[None, :]) & sees)[None, None]
    grad = torch.randn(1, length, 9, 64, generator=generator).to(dtype)

    def sdpa():
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, enable_gqa=True).transpose(1, 2)
        torch.autograd.grad(out, (query, key, value), grad)

    def matmul():
        torch.autograd.grad(matmul_attention(query, key, value, mask, 0.125, False), (query, key, value), grad)

    return length, sdpa, matmul


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=288, help="C1-Q2 rows of the evaluation pairs")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--eval-batch", type=int, default=72, help="data.eval_batch_size's default")
    own = parser.parse_args()
    args = parse_args(["--no-reference", "--rows", str(own.rows)])  # float32 weights, sdpa: as loaded
    model, data, _ = set_up(args)
    rows = grouped_order(data, args.seed)
    stored_bf16 = copy.deepcopy(model)
    cast_frozen_linear_weights(stored_bf16)

    def rate(m) -> float:
        start = time.perf_counter()
        evaluate(m, data, SHARED, rows, own.eval_batch, True)  # bf16 autocast, as a bf16 run evaluates
        return len(rows) / (time.perf_counter() - start)

    paired(f"bf16 evaluation, rows/s ({len(rows)} rows, batch {own.eval_batch})",
           ("weights float32", lambda: rate(model)), ("weights bf16", lambda: rate(stored_bf16)), own.pairs)
    lm = stored_bf16.get_base_model()

    def rate_with(implementation: str) -> float:
        lm.set_attn_implementation(implementation)
        return rate(stored_bf16)

    paired("bf16 evaluation, rows/s", ("sdpa", lambda: rate_with("sdpa")), ("eager", lambda: rate_with("eager")),
           own.pairs)
    for dtype in (torch.bfloat16, torch.float32):
        length, sdpa, matmul = attention_case(dtype)
        paired(f"attention forward+backward, ms ({length} packed tokens, {dtype})",
               ("sdpa", lambda sdpa=sdpa: attention_ms(sdpa)), ("matmul", lambda matmul=matmul: attention_ms(matmul)),
               own.pairs)


if __name__ == "__main__":
    main()
