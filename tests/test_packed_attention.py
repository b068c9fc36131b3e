"""Packed shared-prefix attention in pieces (simlab.model.packed_attention): each prefix causal on its own, the
suffixes and pads against the whole sequence, equal to one call with the block mask (outputs and gradients); the
collator's prefix lengths reach it through the decoder, and compiled layers keep one call."""

from __future__ import annotations

import types

import pytest
import torch
from test_shared_prefix import assert_same, datamodule, lora_model, scores
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from simlab.data.batching import PadCollator, SharedPrefixCollator
from simlab.model import compilation, cpu_attention, packed_attention
from simlab.model.shared_prefix import packed_attention_mask

HEADS, KV_HEADS, DIM = 6, 2, 8


def packed_layout(prefixes: list[int], suffixes: list[list[int]], pads: int) -> tuple[torch.Tensor, torch.Tensor]:
    """token_group and token_row as the collator lays them out: every prefix, then every row's suffix, then pads."""
    group = [g for g, length in enumerate(prefixes) for _ in range(length)]
    row = [-1] * len(group)
    rows = [(g, length) for g, lengths in enumerate(suffixes) for length in lengths]
    for r, (g, length) in enumerate(rows):
        group += [g] * length
        row += [r] * length
    return torch.tensor(group + [-1] * pads), torch.tensor(row + [-1] * pads)


@pytest.mark.parametrize("prefixes, suffixes, pads", [([9], [[3, 1, 4, 2]], 0), ([5, 7, 1], [[2, 3], [1], [4, 2]], 3)])
def test_pieces_equal_one_call_with_the_block_mask(prefixes, suffixes, pads):
    group, row = packed_layout(prefixes, suffixes, pads)
    length = group.shape[0]
    mask = packed_attention_mask(group, row, torch.float32, "sdpa")
    module = types.SimpleNamespace(num_key_value_groups=HEADS // KV_HEADS, is_causal=True, training=False)
    torch.manual_seed(0)
    inputs = [torch.randn(1, heads, length, DIM, requires_grad=True) for heads in (HEADS, KV_HEADS, KV_HEADS)]
    pieces = []

    def attend(module, query, key, value, attention_mask, **kwargs):
        pieces.append((query.shape[2], key.shape[2], attention_mask is None, kwargs["is_causal"]))
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    one, _ = sdpa_attention_forward(module, *inputs, mask, scaling=DIM ** -0.5)
    split, _ = packed_attention.attend_in_pieces(attend, module, *inputs, mask, tuple(prefixes), scaling=DIM ** -0.5)
    assert split.shape == one.shape == (1, length, HEADS, DIM)
    assert float((split - one).detach().abs().max()) < 1e-6
    weights = torch.randn_like(one)  # a loss that weighs every output
    grads_one = torch.autograd.grad((one * weights).sum(), inputs)
    grads_split = torch.autograd.grad((split * weights).sum(), inputs)
    assert max(float((a - b).abs().max()) for a, b in zip(grads_one, grads_split)) < 1e-5
    # each prefix causal without a mask over its own keys, then the rest against every key with its mask rows
    assert pieces == [(p, p, True, True) for p in prefixes] + [(length - sum(prefixes), length, False, False)]


def test_a_packed_batch_is_attended_in_pieces_with_the_collators_prefix_lengths(tmp_path, tiny_tokenizer,
                                                                                tiny_llama_dir, monkeypatch):
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    items = list(enumerate(dm.datasets["V"].encoded))
    packed = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6,
                                  pack_length_multiple=16)(items)
    lengths = packed["packed_prefix_lengths"]
    assert len(lengths) > 1 and all(isinstance(n, int) for n in lengths)
    group, row = packed["packed_group"], packed["packed_row"]
    assert bool((row[: sum(lengths)] < 0).all()) and int(row[sum(lengths)]) >= 0  # the prefixes lead
    assert [int(((group == g) & (row < 0)).sum()) for g in range(len(lengths))] == list(lengths)
    model = lora_model(tiny_llama_dir)
    model.eval()
    assert model.get_base_model().config._attn_implementation == "sdpa"
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    seen = []
    real = packed_attention.attend_in_pieces
    monkeypatch.setattr(packed_attention, "attend_in_pieces",
                        lambda *args, **kwargs: seen.append(args[6]) or real(*args, **kwargs))
    assert_same(expected, scores(model, packed))
    assert model.get_base_model().config._attn_implementation == cpu_attention.NAME  # switched at the first batch
    assert seen == [lengths] * 2  # both layers


def test_compiled_layers_attend_in_one_call(tmp_path, tiny_tokenizer, tiny_llama_dir, monkeypatch):
    torch._dynamo.reset()
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    items = list(enumerate(dm.datasets["V"].encoded))
    packed = SharedPrefixCollator(tiny_tokenizer.pad_token_id, 0.0, pack_max_tokens=10**6)(items)
    model = lora_model(tiny_llama_dir)
    model.eval()
    expected = scores(model, PadCollator(tiny_tokenizer.pad_token_id)(items))
    compilation.compile_decoder_layers(model)
    seen = []
    real = packed_attention.attend_in_pieces
    monkeypatch.setattr(packed_attention, "attend_in_pieces",
                        lambda *args, **kwargs: seen.append(1) or real(*args, **kwargs))
    try:
        assert_same(expected, scores(model, packed))
    finally:
        torch._dynamo.reset()
    assert not seen
