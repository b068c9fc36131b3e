"""Packed shared-prefix attention in pieces, measured and not merged (experiments/PERFORMANCE.md, "Packed attention in
pieces: measured, not merged").

A packed batch is every group's prefix, then every row's suffix, attended in one sdpa call over the packed length T
with a block mask (simlab.model.shared_prefix.packed_attention_mask): T² scores, though a prefix token sees only its
own group's earlier prefix tokens. In pieces, each prefix runs causally with no mask and the suffix tokens run
against all T keys with their rows of the mask: P²/2 + S·T scores. Every query sees the keys it saw, so the result is
the same up to float rounding. This script checks that on the bench's rows (loss and LoRA gradients, dropout off),
times one layer's attention both ways (forward and backward), then times the bench's shared-prefix training steps
both ways **paired step by step** (each batch in both layouts back to back, alternating which goes first, after one
untimed pass), the measurement that decided against merging it.

    python experiments/packed_pieces.py [--rows 64] [--passes 4] [--precision 32|bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

import simlab.model.shared_prefix as shared_prefix
from simlab.devtools.bench.command import parse_args
from simlab.devtools.bench.methods import SHARED
from simlab.devtools.bench.paths import batch_scores, batches
from simlab.devtools.bench.timing import set_up
from simlab.devtools.bench.workload import grouped_order
from simlab.runs.provenance import cpu_model

ONE_CALL = shared_prefix.packed_answer_hidden_states
NAME = "simlab_pieces"


def pieces_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, simlab_prefixes=(),
                     **kwargs):
    """sdpa over a packed batch in pieces: each prefix causal without a mask, then the rest against every key."""
    kwargs.pop("is_causal", None)
    outputs, start = [], 0
    for length in simlab_prefixes:
        end = start + length
        out, _ = sdpa_attention_forward(module, query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                                        None, dropout=dropout, scaling=scaling, is_causal=True, **kwargs)
        outputs.append(out)
        start = end
    out, _ = sdpa_attention_forward(module, query[:, :, start:], key, value, attention_mask[..., start:, :],
                                    dropout=dropout, scaling=scaling, is_causal=False, **kwargs)
    return torch.cat([*outputs, out], dim=1), None


def prefix_lengths(batch) -> tuple[int, ...]:
    """Each group's prefix length in packed order (prefix tokens have row -1; pads, group -1, are not counted)."""
    group, row = batch["packed_group"], batch["packed_row"]
    return tuple(torch.bincount(group[(row < 0) & (group >= 0)]).tolist())


def pieces_answer_hidden_states(lm, batch):
    """packed_answer_hidden_states with :func:`pieces_attention` in place of one masked sdpa call; the batch's prefix
    lengths are counted once, before timing (:func:`prefix_lengths`), as the collator would ship them."""
    mask = shared_prefix.packed_attention_mask(batch["packed_group"], batch["packed_row"], torch.float32, "sdpa")
    config, before = lm.config, lm.config._attn_implementation
    config._attn_implementation = NAME
    try:
        hidden = lm.get_decoder()(input_ids=batch["packed_ids"], attention_mask=mask,
                                  position_ids=batch["packed_positions"], use_cache=False,
                                  simlab_prefixes=batch["prefix_lengths"]).last_hidden_state
    finally:
        config._attn_implementation = before
    return hidden[0].index_select(0, batch["answer_index"])


LAYOUTS = {"one call": ONE_CALL, "pieces": pieces_answer_hidden_states}


def run_layout(model, batch, layout: str, autocast: bool):
    shared_prefix.packed_answer_hidden_states = LAYOUTS[layout]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, _ = batch_scores(model, batch, SHARED)
    return loss


def check(model, steps, autocast: bool) -> None:
    """Loss and LoRA gradients of every batch in both layouts, dropout off."""
    model.eval()
    worst_loss = worst_grad = 0.0
    for batch in steps:
        grads = []
        for layout in LAYOUTS:
            loss = run_layout(model, batch, layout, autocast)
            loss.backward()
            grads.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
            model.zero_grad(set_to_none=True)
        worst_loss = max(worst_loss, abs(grads[0][0] - grads[1][0]))
        worst_grad = max(worst_grad, max(float((grads[0][1][n] - grads[1][1][n]).abs().max()) for n in grads[0][1]))
    print(f"exactness over {len(steps)} batches (dropout off): max |loss difference| {worst_loss:.2e}, "
          f"max |LoRA grad difference| {worst_grad:.2e}")


def one_layer(prefix: int, rows: int, suffix: int, heads: int = 9, kv_heads: int = 3, dim: int = 64) -> None:
    """One attention call forward and backward at the embedded model's head shapes, median of 10 paired repeats."""
    length = prefix + rows * suffix
    token_row = torch.tensor([-1] * prefix + [r for r in range(rows) for _ in range(suffix)])
    mask = shared_prefix.packed_attention_mask(torch.zeros(length, dtype=torch.long), token_row, torch.float32, "sdpa")
    inputs = [torch.randn(1, h, length, dim, requires_grad=True) for h in (heads, kv_heads, kv_heads)]

    def one(q, k, v):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    def pieces(q, k, v):
        first = F.scaled_dot_product_attention(q[:, :, :prefix], k[:, :, :prefix], v[:, :, :prefix], is_causal=True,
                                               enable_gqa=True)
        rest = F.scaled_dot_product_attention(q[:, :, prefix:], k, v, attn_mask=mask[..., prefix:, :],
                                              enable_gqa=True)
        return torch.cat([first, rest], dim=2)

    def timed(function, repeats: int = 20) -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            function(*inputs).sum().backward()
        return (time.perf_counter() - start) / repeats

    timed(one, 3), timed(pieces, 3)
    pairs = [(timed(one), timed(pieces)) for _ in range(10)]
    a, b = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
    print(f"one layer's attention, forward + backward, T={length} (prefix {prefix}, {rows} suffixes of {suffix}): "
          f"one call {a * 1e3:.2f} ms, pieces {b * 1e3:.2f} ms ({a / b:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="rows of the bench's question-grouped order")
    parser.add_argument("--passes", type=int, default=4, help="timed passes over the batches, each step paired")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    own = parser.parse_args()
    AttentionInterface.register(NAME, pieces_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    args = parse_args(["--no-reference", "--precision", own.precision])
    model, data, bench = set_up(args)
    autocast = own.precision == "bf16"
    rows = grouped_order(data, args.seed)[: own.rows]
    steps = list(batches(data, SHARED, rows, args.train_batch, train=True, seed=args.seed))
    assert all("packed_ids" in batch for batch in steps), "the bench's training batches are packed"
    for batch in steps:
        batch["prefix_lengths"] = prefix_lengths(batch)
    print(f"cpu: {cpu_model()}, {torch.get_num_threads()} threads, precision {own.precision}; {len(steps)} batches "
          f"of {args.train_batch} rows, {sum(int(b['packed_ids'].shape[1]) for b in steps)} packed tokens")
    check(model, steps, autocast)
    one_layer(prefix=150, rows=8, suffix=25)
    optimizer = bench.reset()
    model.train()

    def step(batch, layout: str) -> float:
        start = time.perf_counter()
        loss = run_layout(model, batch, layout, autocast)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        return time.perf_counter() - start

    for batch in steps:  # untimed: allocator, kernels
        step(batch, "one call"), step(batch, "pieces")
    ratios, totals = [], {layout: [] for layout in LAYOUTS}
    for repeat in range(own.passes):
        seconds = {layout: 0.0 for layout in LAYOUTS}
        for i, batch in enumerate(steps):
            order = list(LAYOUTS) if (i + repeat) % 2 == 0 else list(reversed(LAYOUTS))
            took = {layout: step(batch, layout) for layout in order}
            ratios.append(took["one call"] / took["pieces"])
            for layout in LAYOUTS:
                seconds[layout] += took[layout]
        for layout in LAYOUTS:
            totals[layout].append(seconds[layout])
        print(f"pass {repeat + 1}: " + ", ".join(f"{layout} {s:.2f} s" for layout, s in seconds.items()), flush=True)
    low, _, high = statistics.quantiles(ratios, n=4)
    passes = {layout: statistics.median(seconds) for layout, seconds in totals.items()}
    print(f"training steps, one call / pieces: median {statistics.median(ratios):.3f} over {len(ratios)} paired steps "
          f"(quartiles {low:.3f}, {high:.3f}); median pass {passes['one call']:.2f} s against {passes['pieces']:.2f} s")
    shared_prefix.packed_answer_hidden_states = ONE_CALL


if __name__ == "__main__":
    main()
