"""simlab's LoRA dropout (simlab.model.lora_dropout): dropout with probability p and torch's scaling, masks that
depend only on torch's generator, swapped into every LoRA layer attach_lora and load_adapter make."""

import math

import pytest
import torch
from peft import LoraConfig
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from simlab.model import attach_lora
from simlab.model.lora_dropout import LoraDropout, cpu_dropout, drop_threshold, torch_masks


def tiny_lora(dropout: float):
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    torch.manual_seed(0)
    return attach_lora(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                                            target_modules=["q_proj", "v_proj"]))


@pytest.mark.parametrize("p", [0.05, 0.3])
def test_it_drops_with_probability_p_and_scales_what_it_keeps_as_torch_does(p):
    x = torch.randn(1000, 1001) + 5.0  # no zeros of its own; an odd count (the last 64-bit draw half used)
    torch.manual_seed(1)
    y = cpu_dropout(x, p)
    kept = y != 0
    n = x.numel()
    assert abs((n - int(kept.sum())) / n - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(y[kept], x[kept] * (1.0 / (1.0 - p)))
    assert drop_threshold(p) == -(2**31) + round(p * 2**32)


def test_the_masks_come_from_torchs_generator_only():
    """The same seed gives the same mask at any thread count, the next draw another, and the mask is the
    generator's 64-bit draws read as 32-bit lanes (torch's mt19937 on every CPU; its bernoulli_ takes MKL's
    generator on Intel CPUs)."""
    x = torch.ones(64, 33)
    masks = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            masks.append(cpu_dropout(x, 0.3) != 0)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(masks[0], masks[1])
    assert not torch.equal(masks[0], cpu_dropout(x, 0.3) != 0)
    torch.manual_seed(0)
    words = torch.randint(-(2**63), 2**63 - 1, (4,), dtype=torch.int64).view(torch.int32)
    torch.manual_seed(0)
    assert (cpu_dropout(torch.ones(8), 0.3) != 0).tolist() == (words >= drop_threshold(0.3)).tolist()


def test_gradients_pass_through_the_kept_elements_only():
    x = torch.randn(40, 50, requires_grad=True)
    torch.manual_seed(3)
    y = cpu_dropout(x, 0.2)
    y.sum().backward()
    kept = (y != 0).float()
    assert torch.allclose(x.grad, kept / 0.8)


def test_attach_lora_swaps_every_dropout_and_eval_or_p0_is_the_identity():
    model = tiny_lora(0.1)
    dropouts = [d for m in model.modules() if isinstance(getattr(m, "lora_dropout", None), nn.ModuleDict)
                for d in m.lora_dropout.values()]
    assert len(dropouts) == 4 and all(type(d) is LoraDropout and d.p == 0.1 for d in dropouts)
    layer = dropouts[0]
    x = torch.randn(6, 32)
    layer.eval()
    assert torch.equal(layer(x), x)
    untouched = tiny_lora(0.0)
    assert not any(isinstance(m, LoraDropout) for m in untouched.modules())


def test_torch_masks_gives_peft_dropouts_masks_back():
    """What the bench's reference method runs: inside the block the layers draw as nn.Dropout does."""
    model = tiny_lora(0.3)
    layer = next(m for m in model.modules() if isinstance(m, LoraDropout))
    layer.train()
    x = torch.randn(16, 32)
    torch.manual_seed(5)
    expected = nn.functional.dropout(x, 0.3, training=True)
    with torch_masks(model):
        torch.manual_seed(5)
        assert torch.equal(layer(x), expected)
    torch.manual_seed(5)
    assert not torch.equal(layer(x), expected)  # simlab's masks again after the block


def test_the_benchs_reference_method_trains_with_torchs_dropout_and_simlabs_paths_with_simlabs():
    from simlab.devtools.bench.methods import REFERENCE, SHARED, SIMLAB, TRAIN_LADDER
    from simlab.devtools.bench.paths import execution

    model = tiny_lora(0.3)
    layers = [m for m in model.modules() if isinstance(m, LoraDropout)]
    for method, expected in ((REFERENCE, True), (SIMLAB, False), (SHARED, False)):
        with execution(method, model):
            assert all(layer.torch_masks is expected for layer in layers), method.name
    assert not any(layer.torch_masks for layer in layers)
    assert [rung.torch_dropout for rung in TRAIN_LADDER] == [True] * 6 + [False, False]
    assert TRAIN_LADDER[-2].name.endswith("= simlab") and TRAIN_LADDER[-1].threads == 1
