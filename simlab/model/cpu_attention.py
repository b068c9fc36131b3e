"""An attention implementation for bf16 training on CPUs: plain matrix products where sdpa's CPU kernel is slow.

Under bf16 autocast on a CPU, sdpa runs its flash-attention kernel, whose backward was the largest cost of a
shared-prefix training step after the linear layers (``python -m simlab.devtools.bench --precision bf16 --profile``,
AMD EPYC, 2 threads: attention 23% of the step, linear layers 48%). The same attention as matrix products
(transformers' eager attention, here without copying keys and values per query head, with a float32 softmax) made
one attention call forward and backward 1.8x and whole training steps ~1.09x faster there
(``python experiments/bf16_cpu.py``, ``python experiments/train_steps.py --precision bf16 --attention``); in float32
sdpa was faster, and evaluation gained nothing (so its predictions stay sdpa's). So :data:`NAME` decides per call:
matrix products when autograd records a bf16 pass on a CPU, sdpa otherwise. Its masks are sdpa's (boolean: True
where a query may attend), so shared-prefix batches pass theirs as they do to sdpa. Measured in
experiments/PERFORMANCE.md ("bf16 on CPUs").
"""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "simlab_sdpa"


def matmul_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                     scaling: float, causal: bool) -> torch.Tensor:
    """Softmax attention as matrix products: query [B, H, T, D], key and value [B, KV, L, D] (H a multiple of KV,
    grouped-query heads sharing their key/value head without a copy), ``mask`` boolean (True: may attend) or
    additive, broadcastable to [B, H, T, L]; None with ``causal``: each query sees the keys up to its own position
    (queries aligned to the last keys). Products in autocast's dtype (else the values'), scores and softmax in
    float32. Returns [B, T, H, D].

    Masked scores get float32's lowest value rather than -inf, as transformers' eager attention does: a query that
    may attend to nothing (a padding position) gets finite, unused values instead of NaN in the backward pass."""
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else value.dtype
    query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)  # rotary embeddings leave q, k in float32
    batch, heads, length, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * length, dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, groups, length, keys).float() * scaling
    if mask is None and causal and length > 1:
        mask = torch.ones(length, keys, dtype=torch.bool, device=query.device).tril(keys - length)
    if mask is not None:
        if mask.dtype == torch.bool:
            mask = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device).masked_fill_(
                ~mask, torch.finfo(torch.float32).min)
        mask = mask.float()  # an additive mask in another dtype
        while mask.dim() < 4:
            mask = mask.unsqueeze(0)
        mask_heads = mask.shape[1]
        mask = (mask.view(mask.shape[0], kv_heads, groups, length, keys) if mask_heads == heads
                else mask.view(mask.shape[0], 1, 1, length, keys))
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1).to(value.dtype).view(batch, kv_heads, groups * length, keys)
    output = torch.matmul(weights, value).view(batch, heads, length, dim)
    return output.transpose(1, 2).contiguous()


def uses_matmul(query: torch.Tensor, dropout: float, kwargs: dict) -> bool:
    """A bf16 pass on a CPU (bf16 autocast, or bf16 inputs) that autograd records, with nothing only sdpa's path
    knows (attention dropout, sliding windows, soft-capping, sink logits)."""
    extras = any(kwargs.get(name) is not None for name in ("sliding_window", "softcap", "s_aux"))
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    return (query.device.type == "cpu" and (autocast_bf16 or query.dtype == torch.bfloat16)
            and torch.is_grad_enabled() and not dropout and not extras)


def attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                      is_causal=None, **kwargs):
    """transformers' attention-function interface: (output [B, T, H, D], None)."""
    if not uses_matmul(query, dropout, kwargs):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    return matmul_attention(query, key, value, attention_mask, scaling, bool(causal)), None


def register() -> None:
    """Make :data:`NAME` an attention implementation transformers knows, with sdpa's masks."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def use_for_training(lm) -> bool:
    """Switch a transformers model that runs sdpa to :data:`NAME`; True if it now runs it."""
    implementation = getattr(lm.config, "_attn_implementation", None)
    if implementation == NAME:
        return True
    if implementation != "sdpa":
        return False
    register()
    lm.set_attn_implementation(NAME)
    return True
