"""Shared-prefix execution: the prompt prefix a group of rows shares runs through the decoder once, then each
row's own tokens (its suffix) attend to the prefix's keys and values.

A batch from :class:`simlab.data.batching.SharedPrefixCollator` holds G prefixes (``prefix_ids`` [G, P],
right-padded) and B suffixes (``input_ids`` [B, S], right-padded), ``row_group`` naming each row's prefix. Two
decoder calls:

1. the prefixes, plainly causal (their right padding comes after every real token, so it changes nothing real),
   with a cache that records each layer's keys and values;
2. the suffixes, with a cache whose ``update`` returns, per layer, the prefix keys/values of each row's group
   followed by the suffix's own (``expand`` to the batch when there is one group, ``index_select`` by group when
   there are several), ``position_ids`` continuing after each row's prefix, and an explicit 4-D attention mask:
   a row's real prefix slots and its own earlier suffix tokens.

A *packed* batch (the collator packs batches of at most ``pack_max_tokens`` tokens) is one decoder call instead:
one sequence holding every group's prefix, then every row's suffix, no padding, each token at its position in its
own prompt (``position_ids``), and a block attention mask (:func:`packed_attention_mask`): a prefix token sees its
group's earlier prefix tokens, a suffix token its group's prefix and its own row's earlier tokens. No cache is
involved, so gradients reach the prefix the ordinary way and any activation checkpointing works. One call of
larger matrices is faster than two for small batches (fewer, larger kernels), but the attention covers the whole
packed length squared, so large evaluation batches keep two passes (measured: simlab.data.batching.PACK_MAX_TOKENS).

The concatenation prefix + suffix is exactly the row's prompt, so the hidden state at the answer slot is the
per-row computation's up to float rounding (tests/test_shared_prefix.py: probabilities, loss and LoRA gradients
to 1e-5 in float32). Gradients flow through the prefix keys/values, so a training step back-propagates through
each shared prefix once, LoRA weights included.

Copies: the cache's ``update`` concatenates (``torch.cat``) the broadcast prefix keys/values with the suffix's,
which materialises [B, kv_heads, P + S, head_dim] per layer (sdpa then may repeat it per query head for GQA, as it
does for any batch). That is a memory copy of O(B·P·kv_dim) per layer against O(B·S·hidden²) of matmuls; the
bench's profile measures it. Avoiding it would need a custom attention kernel over two key blocks.

The prefix pass's own output (its last layer's queries, attention output and MLP) feeds nothing: only its keys and
values do. It is still added to the result with weight 0 (exact: adding 0.0 changes no value and no gradient), so
every module's forward in the prefix pass reaches the loss. Without that, FSDP with bf16 mixed precision lost the
gradient of the last layer's q_proj LoRA weights (that unit ran twice and only its second output was used):
tests/test_shared_prefix_families.py runs it on two CPU ranks.

With compiled decoder layers (:mod:`simlab.model.compilation`) the two passes run eagerly: a cache indexed by the
layer's number would make every layer its own compiled graph. Packed batches run compiled.

Both caches are idempotent (``update`` never grows them), so a decoder layer re-run by non-reentrant activation
checkpointing (torch's ``checkpoint_wrapper``, as the FSDP config applies it) sees what its first run saw. Two
combinations are refused with an error: Hugging Face's own gradient checkpointing during training (its layers
drop the cache argument, which would silently cut the suffix off its prefix) and reentrant activation
checkpointing (its forward runs without autograd, so no gradient would reach the prefix). Attention
implementations other than ``sdpa`` and ``eager`` (flash attention takes no 4-D mask) and sliding-window models
are refused too.
"""

from __future__ import annotations

import functools
import inspect

import torch
from transformers.cache_utils import Cache, DynamicLayer

from simlab.model import compilation, cpu_attention

# sdpa, and simlab's sdpa-or-matrix-products for bf16 training on CPUs, which takes sdpa's masks
SDPA_MASKS = ("sdpa", cpu_attention.NAME)
SUPPORTED_ATTENTION = (*SDPA_MASKS, "eager")


class SharedPrefixUnsupported(ValueError):
    """The model or its wrapping cannot run shared-prefix batches exactly (the message says what to change)."""


class _RecordingLayer(DynamicLayer):
    """Keeps the key/value states of its last call and returns them unchanged (the prefix pass's cache layer)."""

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        self.keys, self.values, self.is_initialized = key_states, value_states, True
        self.device = key_states.device
        return key_states, value_states


class _PrefixLayer(DynamicLayer):
    """Returns each row's prefix keys/values followed by the new (suffix) states; stores nothing."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, row_group: torch.Tensor | None, batch_size: int):
        super().__init__()
        self.prefix_keys, self.prefix_values = keys, values
        self.row_group, self.batch_size = row_group, batch_size
        self.keys, self.values, self.is_initialized, self.device = keys, values, True, keys.device

    def _per_row(self, states: torch.Tensor) -> torch.Tensor:
        if self.row_group is None:  # one prefix: a broadcast view, no copy
            return states.expand(self.batch_size, -1, -1, -1)
        return states.index_select(0, self.row_group)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys = torch.cat([self._per_row(self.prefix_keys).to(key_states.dtype), key_states], dim=-2)
        values = torch.cat([self._per_row(self.prefix_values).to(value_states.dtype), value_states], dim=-2)
        return keys, values

    def get_seq_length(self) -> int:
        return self.prefix_keys.shape[-2]


def check_supported(decoder, config, two_pass: bool = True) -> None:
    """Raise :class:`SharedPrefixUnsupported` for a model or wrapping that shared-prefix execution cannot run
    exactly (``two_pass``: also the checkpointing that the cache of the two-pass layout cannot survive)."""
    implementation = _implementation(config)
    if implementation not in SUPPORTED_ATTENTION:
        raise SharedPrefixUnsupported(
            f"shared-prefix execution needs attention implementation sdpa or eager (it passes a 4-D mask), the model "
            f"uses {implementation!r}: load it with attn_implementation='sdpa' or set data.shared_prefix=false"
        )
    layer_types = getattr(config, "layer_types", None)
    sliding = any(t != "full_attention" for t in layer_types) if layer_types else (
        getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True)
    )
    if sliding:
        raise SharedPrefixUnsupported(
            "shared-prefix execution builds a full causal mask; this model has sliding-window or non-attention "
            "layers: set data.shared_prefix=false"
        )
    if not two_pass or not torch.is_grad_enabled():
        return
    for module in decoder.modules():
        if getattr(module, "gradient_checkpointing", False) is True and module.training:
            raise SharedPrefixUnsupported(
                "Hugging Face gradient checkpointing drops the cache a shared-prefix batch needs during training: "
                "use torch activation checkpointing (non-reentrant, as trainer=fsdp does) or data.shared_prefix=false"
            )
        impl = getattr(module, "checkpoint_impl", None)
        if impl is not None and getattr(impl, "name", "") == "REENTRANT":
            raise SharedPrefixUnsupported(
                "reentrant activation checkpointing runs its forward without autograd, so no gradient would reach a "
                "shared prefix: use CheckpointImpl.NO_REENTRANT (the default) or data.shared_prefix=false"
            )


def cache_argument(decoder) -> str:
    """The name under which the decoder's forward takes a cache: ``cache`` (transformers >= 5.25) or
    ``past_key_values`` (earlier 5.x, and a deprecated alias later). An unknown keyword would be swallowed by the
    forward's ``**kwargs``, leaving the suffixes without their prefix, so neither name is an error."""
    name = _cache_keyword(type(decoder))
    if name is not None:
        return name
    raise SharedPrefixUnsupported(
        f"shared-prefix execution passes the prefix's keys/values as a cache, and {type(decoder).__name__}.forward "
        f"takes neither cache nor past_key_values: set data.shared_prefix=false"
    )


@functools.cache
def _cache_keyword(decoder_class: type) -> str | None:
    """Once per decoder class: the signature does not change between the batches of a run."""
    parameters = inspect.signature(decoder_class.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in parameters), None)


def _implementation(config) -> str:
    return getattr(config, "_attn_implementation", None) or "eager"


def _as_mask(allowed: torch.Tensor, dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """The boolean mask as the attention implementation takes it: sdpa as is, eager as an additive float mask."""
    if implementation in SDPA_MASKS:
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, torch.finfo(dtype).min)


def _attention_mask(batch: dict[str, torch.Tensor], dtype: torch.dtype, implementation: str) -> torch.Tensor:
    """[B, 1, S, P + S]: a row's real prefix slots, then causal over its own suffix (right padding comes last)."""
    row_group = batch["row_group"]
    prefix_valid = batch["prefix_mask"].bool().index_select(0, row_group)  # [B, P]
    size, width = batch["input_ids"].shape
    causal = torch.ones((width, width), dtype=torch.bool, device=prefix_valid.device).tril()
    allowed = torch.cat(
        [prefix_valid[:, None, :].expand(size, width, -1), causal[None].expand(size, -1, -1)], dim=-1
    )[:, None]
    return _as_mask(allowed, dtype, implementation)


def answer_hidden_states(lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, H] final hidden state at each row's answer slot, computed with each group's prefix run once."""
    decoder = lm.get_decoder()
    config = lm.config
    check_supported(decoder, config)
    ids = batch["input_ids"]
    if batch["prefix_ids"].shape[1] == 0:  # nothing shared: the suffixes are the whole prompts
        hidden = decoder(input_ids=ids, attention_mask=batch["attention_mask"], use_cache=False).last_hidden_state
        return hidden[torch.arange(ids.shape[0], device=ids.device), batch["answer_index"]]
    layers = (config.get_text_config().num_hidden_layers if hasattr(config, "get_text_config")
              else config.num_hidden_layers)
    recorder = Cache(layers=[_RecordingLayer() for _ in range(layers)])
    cache = cache_argument(decoder)
    with compilation.eager():  # the caches are indexed by layer: compiled, each layer would be its own graph
        return _two_passes(decoder, config, batch, recorder, cache)


def _two_passes(decoder, config, batch: dict[str, torch.Tensor], recorder: Cache, cache: str) -> torch.Tensor:
    """The prefix pass recording each layer's keys and values into ``recorder``, then the suffix pass over them."""
    ids = batch["input_ids"]
    size, width = ids.shape
    groups = batch["prefix_ids"].shape[0]
    rows = torch.arange(size, device=ids.device)
    prefix_hidden = decoder(input_ids=batch["prefix_ids"], use_cache=True, **{cache: recorder}).last_hidden_state
    if not all(layer.is_initialized for layer in recorder.layers):
        raise SharedPrefixUnsupported(
            f"{type(decoder).__name__} did not write the prefix's keys/values into the cache passed as {cache}= "
            f"(an unsupported transformers version?): set data.shared_prefix=false"
        )
    row_group = None if groups == 1 else batch["row_group"]
    shared = Cache(layers=[_PrefixLayer(layer.keys, layer.values, row_group, size) for layer in recorder.layers])
    positions = batch["prefix_lengths"].index_select(0, batch["row_group"])[:, None] + torch.arange(
        width, device=ids.device
    )[None]
    implementation = _implementation(config)
    mask = _attention_mask(batch, decoder.get_input_embeddings().weight.dtype, implementation)
    hidden = decoder(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{cache: shared}
    ).last_hidden_state
    answer = hidden[rows, batch["answer_index"]]
    if prefix_hidden.requires_grad:  # the prefix pass's output joins the graph, with weight 0 (see the docstring)
        answer = answer + 0.0 * prefix_hidden.sum()
    return answer


def packed_attention_mask(token_group: torch.Tensor, token_row: torch.Tensor, dtype: torch.dtype,
                          implementation: str) -> torch.Tensor:
    """[1, 1, T, T] for a packed sequence: earlier tokens of the same group that are prefix tokens or of the same
    row (prefixes come first, so a prefix token sees only its group's earlier prefix tokens)."""
    index = torch.arange(token_group.shape[0], device=token_group.device)
    allowed = (
        (index[None, :] <= index[:, None])
        & (token_group[:, None] == token_group[None, :])
        & ((token_row[None, :] < 0) | (token_row[:, None] == token_row[None, :]))
    )[None, None]
    return _as_mask(allowed, dtype, implementation)


def packed_answer_hidden_states(lm, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, H] final hidden state at each row's answer slot, from one decoder call over a packed batch."""
    decoder = lm.get_decoder()
    config = lm.config
    check_supported(decoder, config, two_pass=False)
    implementation = _implementation(config)
    mask = packed_attention_mask(batch["packed_group"], batch["packed_row"],
                                 decoder.get_input_embeddings().weight.dtype, implementation)
    hidden = decoder(
        input_ids=batch["packed_ids"], attention_mask=mask, position_ids=batch["packed_positions"], use_cache=False
    ).last_hidden_state
    return hidden[0].index_select(0, batch["answer_index"])
