"""The frozen base weights stored in bf16 for bf16 autocast runs on one CPU: the same numbers, fewer casts."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig
from pytorch_lightning.accelerators import CPUAccelerator
from transformers import LlamaConfig, LlamaForCausalLM

from simlab.model import attach_lora
from simlab.training.losses import KLDivergenceLoss
from simlab.training.module import SurveyLitModule
from simlab.training.precision import cast_frozen_linear_weights


def tied_lora_model(dropout: float = 0.0):
    """A tiny Llama whose output embedding is its input embedding (as SmolLM2's), with LoRA on q and v."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = attach_lora(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                             target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    return model


def autocast_pass(model, ids: torch.Tensor, seed: int = 0):
    """Logits and LoRA gradients of one bf16 autocast forward and backward (dropout masks from ``seed``)."""
    torch.manual_seed(seed)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(input_ids=ids).logits
    logits.float().logsumexp(-1).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_frozen_weights_cast_once_give_the_autocast_numbers_bit_for_bit(dropout):
    model = tied_lora_model(dropout)
    model.train()
    cast = copy.deepcopy(model)
    count = cast_frozen_linear_weights(cast)
    ids = torch.randint(0, 96, (3, 17), generator=torch.Generator().manual_seed(1))
    logits, grads = autocast_pass(model, ids)
    logits_cast, grads_cast = autocast_pass(cast, ids)
    assert count == 2 * 7  # q, k, v, o, gate, up, down in each of the two layers
    assert torch.equal(logits, logits_cast)
    assert grads.keys() == grads_cast.keys() and all(torch.equal(grads[n], grads_cast[n]) for n in grads)
    lm = cast.get_base_model()
    assert lm.get_input_embeddings().weight.dtype == torch.float32  # the tied head is read outside linear layers
    assert lm.get_output_embeddings().weight is lm.get_input_embeddings().weight
    layer = lm.model.layers[0]
    assert layer.mlp.up_proj.weight.dtype == torch.bfloat16
    assert layer.self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
    assert all(p.dtype == torch.float32 for p in cast.parameters() if p.requires_grad)  # LoRA: trained in float32
    assert cast_frozen_linear_weights(cast) == 0  # once


def module_under(model, precision: str, accelerator=None) -> SurveyLitModule:
    module = SurveyLitModule(model, KLDivergenceLoss())
    module._trainer = SimpleNamespace(precision=precision, accelerator=accelerator or CPUAccelerator(), world_size=1)
    return module


def test_a_bf16_cpu_run_stores_the_frozen_weights_in_bf16_and_a_later_float32_run_is_refused():
    model = tied_lora_model()
    module_under(model, "32-true").setup("fit")
    assert model.get_base_model().model.layers[0].mlp.up_proj.weight.dtype == torch.float32  # float32: untouched
    module = module_under(model, "bf16-mixed")
    module.setup("fit")
    assert model.get_base_model().model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    module.setup("test")  # the same run's test: nothing more to do
    module._trainer = SimpleNamespace(precision="32-true", accelerator=CPUAccelerator(), world_size=1)
    with pytest.raises(ValueError, match="stored in bf16 .* cannot run in precision 32-true"):
        module.setup("test")


# ---------------------------------------------------------------------------------------------- bf16 CPU attention
def attention_inputs(batch=2, heads=4, kv_heads=2, length=9, keys=9, dim=16, dtype=torch.bfloat16):
    generator = torch.Generator().manual_seed(2)
    def tensor(*shape):
        return torch.randn(*shape, generator=generator).to(dtype).requires_grad_()
    return tensor(batch, heads, length, dim), tensor(batch, kv_heads, keys, dim), tensor(batch, kv_heads, keys, dim)


def sdpa_reference(query, key, value, mask, causal):
    """sdpa in float32 on the same inputs, keys and values repeated per query head: [B, T, H, D]."""
    groups = query.shape[1] // key.shape[1]
    out = torch.nn.functional.scaled_dot_product_attention(
        query.float(), key.float().repeat_interleave(groups, 1), value.float().repeat_interleave(groups, 1),
        attn_mask=mask, is_causal=causal and mask is None)
    return out.transpose(1, 2)


def packed_mask(length: int = 9) -> torch.Tensor:
    """A shared-prefix mask: 3 prefix tokens, then two suffixes of 3 that see the prefix and themselves."""
    group = torch.tensor([-1, -1, -1, 0, 0, 0, 1, 1, 1])[:length]
    index = torch.arange(length)
    return ((index[:, None] >= index[None, :]) & ((group[None, :] < 0) | (group[None, :] == group[:, None])))


@pytest.mark.parametrize("case", ["causal", "packed", "padded", "per-head"])
def test_matmul_attention_is_sdpa_to_bf16_rounding_in_values_and_gradients(case):
    from simlab.model.cpu_attention import matmul_attention

    query, key, value = attention_inputs()
    mask, causal = None, case == "causal"
    if case == "packed":
        mask = packed_mask()[None, None].expand(2, 1, 9, 9)
    elif case == "padded":  # left padding: row 1's first two positions are padding (and see nothing)
        mask = packed_mask().tril().clone()[None, None].repeat(2, 1, 1, 1) | torch.ones(9, 9).tril().bool()
        mask[1, :, :, :2] = False
    elif case == "per-head":
        mask = torch.rand(2, 4, 9, 9, generator=torch.Generator().manual_seed(3)) > 0.3
        mask |= torch.eye(9, dtype=torch.bool)
    out = matmul_attention(query, key, value, mask, query.shape[-1] ** -0.5, causal)
    reference = sdpa_reference(query, key, value, mask, causal)
    real = slice(None) if case != "padded" else (slice(None), slice(2, None))  # padding queries: unused values
    assert out.dtype == torch.bfloat16 and out.shape == (2, 9, 4, 16)
    assert (out.float()[real] - reference[real]).abs().max() < 2e-2  # bf16: 8 significant bits
    assert torch.isfinite(out).all()
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(4))
    if case == "padded":
        grad[1, :2] = 0  # the loss never reads a padding position
    grads = torch.autograd.grad(out.float(), (query, key, value), grad)
    references = torch.autograd.grad(reference, (query, key, value), grad)
    for mine, theirs in zip(grads, references):
        assert torch.isfinite(mine).all()
        assert (mine.float() - theirs.float()).abs().max() < 5e-2 * max(1.0, float(theirs.abs().max()))


def test_the_attention_is_sdpa_itself_without_autograd_in_float32_or_with_dropout():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from simlab.model.cpu_attention import attention_forward, uses_matmul

    module = SimpleNamespace(is_causal=True, num_key_value_groups=2)
    for dtype in (torch.bfloat16, torch.float32):
        query, key, value = (t.detach() for t in attention_inputs(dtype=dtype))
        with torch.no_grad():
            mine, _ = attention_forward(module, query, key, value, None, scaling=0.25)
            theirs, _ = sdpa_attention_forward(module, query, key, value, None, scaling=0.25)
        assert torch.equal(mine, theirs)
    query, _, _ = attention_inputs()
    assert uses_matmul(query, 0.0, {}) and not uses_matmul(query, 0.1, {})
    assert not uses_matmul(query, 0.0, {"sliding_window": 4})
    assert not uses_matmul(query.float(), 0.0, {})
    with torch.autocast("cpu", dtype=torch.bfloat16):  # rotary embeddings hand float32 queries to attention
        assert uses_matmul(query.float(), 0.0, {})
        with torch.no_grad():
            assert not uses_matmul(query.float(), 0.0, {})


def test_bf16_training_on_a_cpu_runs_the_matmul_attention_and_evaluation_keeps_sdpa():
    from simlab.model import cpu_attention
    from simlab.training.precision import prepare_for_bf16_cpu

    model = tied_lora_model()
    lm = model.get_base_model()
    assert lm.config._attn_implementation == "sdpa"
    done = prepare_for_bf16_cpu(model)
    assert done == {"frozen_weights_in_bf16": 14, "attention": cpu_attention.NAME}
    assert lm.config._attn_implementation == cpu_attention.NAME
    ids = torch.randint(0, 96, (2, 11), generator=torch.Generator().manual_seed(5))
    calls = []
    original = cpu_attention.matmul_attention
    cpu_attention.matmul_attention = lambda *a, **k: calls.append(1) or original(*a, **k)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            trained = model(input_ids=ids).logits
            with torch.no_grad():
                evaluated = model(input_ids=ids).logits
    finally:
        cpu_attention.matmul_attention = original
    assert len(calls) == 2  # the two layers of the pass with autograd; none in the no-grad pass
    assert (trained.float() - evaluated.float()).abs().max() < 0.1  # bf16 rounding apart, the same model
