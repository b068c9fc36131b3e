"""Steady-state shared-prefix training steps on the embedded model: the bench's rows and batches, each step timed after
two untimed passes over the same batches (the bench's 3-step repeats also pay for memory a process touches for the
first time). With ``--split-attention`` the packed batches' attention is also computed block by block (each prefix
causal, each group's suffixes against their prefix and their own earlier tokens, padded to the longest) instead of
one sdpa call over the packed length with a block mask, paired in the same process. With ``--profile`` a torch
profile of one steady-state pass. With ``--precision bf16 --attention`` under bf16 autocast, the model prepared as a
bf16 CPU run prepares it (:func:`simlab.training.precision.prepare_for_bf16_cpu`), sdpa's attention against
simlab_sdpa's matrix products (:mod:`simlab.model.cpu_attention`), paired in the same process. Cited in
experiments/PERFORMANCE.md ("Shared-prefix training in steady state", "bf16 on CPUs").

    python experiments/train_steps.py [--split-attention] [--profile] [--precision bf16 --attention]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import simlab.model.shared_prefix as shared_prefix
from simlab.data.batching import computed_tokens
from simlab.devtools.bench.command import parse_args
from simlab.devtools.bench.meters import linear_flops_per_token, matmul_peak
from simlab.devtools.bench.methods import SHARED
from simlab.devtools.bench.paths import batch_scores, batches, train_steps
from simlab.devtools.bench.timing import set_up
from simlab.devtools.bench.workload import grouped_order
from simlab.model import cpu_attention

PACKED = shared_prefix.packed_answer_hidden_states


def block_layout(token_group: torch.Tensor, token_row: torch.Tensor) -> tuple[list, torch.Tensor]:
    """Per group: its prefix span, its suffixes' token indices padded to the longest ([R, S]), which are real, and
    the [R, 1, S, P + S] mask; then the permutation back from (prefixes, suffixes by group) to packed order."""
    prefix = token_row < 0
    groups = []
    for g in range(int(token_group.max()) + 1):
        span = torch.nonzero(prefix & (token_group == g)).flatten()
        start, end = int(span[0]), int(span[-1]) + 1
        rows = [torch.nonzero(token_row == r).flatten() for r in torch.unique(token_row[~prefix & (token_group == g)])]
        width = max(len(r) for r in rows)
        index = torch.stack([torch.cat([r, r[:1].expand(width - len(r))]) for r in rows])
        real = torch.stack([torch.arange(width) < len(r) for r in rows])
        causal = torch.ones(width, width, dtype=torch.bool).tril()
        mask = torch.cat([torch.ones(len(rows), width, end - start, dtype=torch.bool),
                          causal[None] & real[:, None, :]], dim=-1)[:, None]
        groups.append((start, end, index, real, mask))
    order = torch.cat([torch.arange(s, e) for s, e, *_ in groups] + [index[real] for _, _, index, real, _ in groups])
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel())
    return groups, inverse


def per_row(states: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """[heads, T, d] gathered at a group's padded suffix indices [R, S]: [R, heads, S, d]."""
    return states[:, index.flatten()].unflatten(1, index.shape).transpose(0, 1)


def block_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, simlab_blocks=None,
                    **kwargs):
    """The packed attention block by block (an attention function for transformers' AttentionInterface)."""
    groups, inverse = simlab_blocks
    q, k, v = query[0], key[0], value[0]  # [heads, T, head_dim]
    gqa = q.shape[0] != k.shape[0]
    prefixes, suffixes = [], []
    for start, end, index, real, mask in groups:
        span = slice(start, end)
        prefixes.append(F.scaled_dot_product_attention(q[None, :, span], k[None, :, span], v[None, :, span],
                                                       is_causal=True, scale=scaling, enable_gqa=gqa)[0])
        rows = index.shape[0]
        keys = torch.cat([k[None, :, span].expand(rows, -1, -1, -1), per_row(k, index)], dim=2)
        values = torch.cat([v[None, :, span].expand(rows, -1, -1, -1), per_row(v, index)], dim=2)
        out = F.scaled_dot_product_attention(per_row(q, index), keys, values, attn_mask=mask, scale=scaling,
                                             enable_gqa=gqa)
        suffixes.append(out.transpose(1, 2)[real])  # [real tokens, heads, head_dim]
    ordered = torch.cat([p.transpose(0, 1) for p in prefixes] + suffixes)
    return ordered.index_select(0, inverse)[None], None


def block_answer_hidden_states(lm, batch):
    """packed_answer_hidden_states with :func:`block_attention` in place of one masked sdpa call."""
    from transformers import AttentionInterface

    AttentionInterface.register("simlab_blocks", block_attention)
    blocks = block_layout(batch["packed_group"], batch["packed_row"])
    config, before = lm.config, lm.config._attn_implementation
    config._attn_implementation = "simlab_blocks"
    try:
        hidden = lm.get_decoder()(input_ids=batch["packed_ids"], position_ids=batch["packed_positions"],
                                  use_cache=False, simlab_blocks=blocks).last_hidden_state
    finally:
        config._attn_implementation = before
    return hidden[0].index_select(0, batch["answer_index"])


def timed_pass(model, optimizer, data, rows: list[int], batch_size: int, seed: int, autocast: bool = False) -> float:
    """Seconds for one pass of the bench's training steps (its own loop) over ``rows``."""
    start = time.perf_counter()
    train_steps(model, optimizer, data, SHARED, rows, batch_size, seed=seed, autocast=autocast)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=64, help="rows of the bench's question-grouped order")
    parser.add_argument("--split-attention", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--precision", choices=["32", "bf16"], default="32",
                        help="bf16: autocast, the model prepared as a bf16 CPU run prepares it")
    parser.add_argument("--attention", action="store_true",
                        help="with --precision bf16: sdpa against simlab_sdpa (matrix products while training), "
                             "paired in this process")
    own = parser.parse_args()
    args = parse_args(["--no-reference", "--precision", own.precision])
    model, data, bench = set_up(args)
    autocast = own.precision == "bf16"
    rows = grouped_order(data, args.seed)[: own.rows]
    steps = list(batches(data, SHARED, rows, args.train_batch, train=True, seed=args.seed))
    tokens = sum(computed_tokens(batch) for batch in steps)
    model.eval()  # exactness of the block attention, dropout off
    if own.split_attention:
        with torch.no_grad():
            for batch in steps:
                shared_prefix.packed_answer_hidden_states = PACKED
                one, _ = batch_scores(model, batch, SHARED)
                shared_prefix.packed_answer_hidden_states = block_answer_hidden_states
                other, _ = batch_scores(model, batch, SHARED)
                print(f"block attention: loss difference {abs(float(one) - float(other)):.2e}")
    layouts = ["packed", "blocks", "packed", "blocks"] if own.split_attention else ["packed"]
    flop = 2 * linear_flops_per_token(model) * tokens  # the bench's count: decoder linears, forward + input grads
    peak = matmul_peak(model)
    print(f"matmul peak (the bench's: F.linear on one layer's shapes x 2048 tokens): {peak:.1f} GFLOP/s")
    lm = model.get_base_model()
    prepared = lm.config._attn_implementation
    if own.attention:
        layouts = ["packed", f"packed/{cpu_attention.NAME}", "packed", f"packed/{cpu_attention.NAME}"]
    for layout in layouts:
        packed = layout.startswith("packed")
        shared_prefix.packed_answer_hidden_states = PACKED if packed else block_answer_hidden_states
        if own.attention:
            lm.set_attn_implementation(prepared if layout.endswith(cpu_attention.NAME) else "sdpa")
            layout = f"{layout} ({lm.config._attn_implementation})"
        optimizer = bench.reset()
        first, _, steady = (timed_pass(model, optimizer, data, rows, args.train_batch, args.seed, autocast)
                            for _ in range(3))
        print(f"{layout}: {len(steps)} steps, {tokens} tokens; first pass {first:.2f} s, steady pass "
              f"{steady:.2f} s ({steady / len(steps):.3f} s a step, {flop / steady / 1e9:.1f} "
              f"model GFLOP/s, {flop / steady / 1e9 / peak:.2f} of the matmul peak)", flush=True)
    if own.profile:
        from torch.profiler import ProfilerActivity, profile

        shared_prefix.packed_answer_hidden_states = PACKED
        optimizer = bench.reset()
        for _ in range(2):
            timed_pass(model, optimizer, data, rows, args.train_batch, args.seed, autocast)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            timed_pass(model, optimizer, data, rows, args.train_batch, args.seed, autocast)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
