"""Compiled decoder layers (simlab.model.compilation): the same probabilities, losses, LoRA gradients and dropout
draws as eager execution on every batch layout, the two-pass layout kept eager, and the refusals."""

from __future__ import annotations

import types

import pytest
import torch
from peft import LoraConfig
from pytorch_lightning.accelerators import CPUAccelerator
from test_shared_prefix import LAYOUTS, assert_same, datamodule, lora_model, scores
from transformers import AutoModelForCausalLM

from simlab.data.batching import PadCollator, SharedPrefixCollator
from simlab.model import attach_lora, compilation
from simlab.model.scoring import option_logits
from simlab.training.losses import KLDivergenceLoss


@pytest.fixture(autouse=True)
def fresh_dynamo():
    """Each test compiles its own model; the generated code is cached per process."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def compiled_frames() -> int:
    return sum(torch._dynamo.utils.counters["frames"].values())


def batches(tmp_path, tokenizer):
    dm = datamodule(tmp_path, tokenizer, prompt_order="question_first")
    items = list(enumerate(dm.datasets["V"].encoded))
    pad = tokenizer.pad_token_id
    return {"per_row": PadCollator(pad)(items),
            **{layout: SharedPrefixCollator(pad, 0.0, pack_max_tokens=pack)(items) for layout, pack in LAYOUTS.items()}}


def test_compiled_layers_give_eager_results_on_every_layout_and_two_passes_stay_eager(tmp_path, tiny_tokenizer,
                                                                                      tiny_llama_dir):
    layouts = batches(tmp_path, tiny_tokenizer)
    assert "packed_ids" in layouts["packed"] and "prefix_ids" in layouts["two_pass"]
    model = lora_model(tiny_llama_dir)
    model.eval()  # dropout off; gradients still flow
    eager = {name: scores(model, batch) for name, batch in layouts.items()}
    assert compilation.compile_decoder_layers(model) == 2
    for name in ("per_row", "packed"):
        before = compiled_frames()
        assert_same(eager[name], scores(model, layouts[name]))
        assert compiled_frames() > before, f"{name}: the compiled layers did not run"
    before = compiled_frames()
    assert_same(eager["two_pass"], scores(model, layouts["two_pass"]))
    assert compiled_frames() == before  # the two passes ran eagerly (their caches are indexed by layer)
    with torch.no_grad():  # evaluation: a graph of its own, the same probabilities
        assert torch.allclose(option_logits(model, layouts["packed"]),
                              option_logits(model, layouts["per_row"]), atol=1e-5)


def test_cuda_graph_mode_marks_a_step_per_decoder_call_and_gives_eager_results_on_padded_batches(
        tmp_path, tiny_tokenizer, tiny_llama_dir, monkeypatch):
    """mode="reduce-overhead" (CUDA graphs on a GPU; on a CPU the default compilation): each decoder call begins a
    graph step, and packed batches padded to a length multiple score as eager unpadded ones."""
    dm = datamodule(tmp_path, tiny_tokenizer, prompt_order="question_first")
    items = list(enumerate(dm.datasets["V"].encoded))
    pad = tiny_tokenizer.pad_token_id
    plain = SharedPrefixCollator(pad, 0.0, pack_max_tokens=10**6)(items)
    padded = SharedPrefixCollator(pad, 0.0, pack_max_tokens=10**6, pack_length_multiple=64)(items)
    model = lora_model(tiny_llama_dir)
    model.eval()
    eager = scores(model, plain)
    steps = []
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: steps.append(1))
    scores(model, plain)
    assert steps == []  # eager, and compiled without CUDA graphs, mark nothing
    assert compilation.compile_decoder_layers(model, mode="reduce-overhead") == 2
    before = compiled_frames()
    assert_same(eager, scores(model, padded))
    assert compiled_frames() > before and steps == [1]
    with pytest.raises(ValueError, match="compile mode 'fast' is none of torch.compile's"):
        compilation.compile_decoder_layers(model, mode="fast")


def test_compiled_training_draws_the_same_dropout_masks(tmp_path, tiny_tokenizer, tiny_llama_dir):
    """LoRA dropout on (training mode): with the same seed, compiled steps give the eager steps' losses."""
    layouts = batches(tmp_path, tiny_tokenizer)

    def losses(compiled: bool) -> list[float]:
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
        model = attach_lora(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["q_proj", "v_proj"]))
        model.train()
        if compiled:
            compilation.compile_decoder_layers(model)
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(1)
        out = []
        for _ in range(3):
            batch = layouts["packed"]
            loss = KLDivergenceLoss()(option_logits(model, batch), batch["target"], batch["option_mask"])
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            out.append(float(loss.detach()))
        return out

    eager, compiled = losses(False), losses(True)
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-5, (eager, compiled)
    assert len(set(eager)) == 3  # the steps trained


def test_compile_without_a_cpp_compiler_is_refused(monkeypatch):
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(compilation.CompileUnavailable, match="C\\+\\+ compiler.*g\\+\\+, clang\\+\\+.*module.compile"):
        compilation.check_compiler("cpu")
    compilation.check_compiler("cuda")  # triton ships with CUDA builds of torch


def test_the_module_compiles_once_and_only_in_one_process(tiny_llama_dir):
    from simlab.training.module import SurveyLitModule

    module = SurveyLitModule(lora_model(tiny_llama_dir), KLDivergenceLoss(), compile=True)
    trainer = types.SimpleNamespace(precision="32-true", accelerator=CPUAccelerator(), world_size=2)
    module._trainer = trainer
    with pytest.raises(ValueError, match="module.compile=true runs in one process; this trainer has 2"):
        module.setup("fit")
    assert not compilation.is_compiled(module.model)
    trainer.world_size = 1
    module.setup("fit")
    module.setup("test")
    assert module._compiled and compilation.is_compiled(module.model)
    assert callable(module.compile)  # the option does not shadow nn.Module.compile
    with pytest.raises(ValueError, match="module.compile_mode=reduce-overhead compiles nothing without"):
        SurveyLitModule(lora_model(tiny_llama_dir), KLDivergenceLoss(), compile_mode="reduce-overhead")


@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_under_cuda_graphs_gradients_live_in_stable_buffers_zeroed_in_place(tiny_llama_dir, mode):
    """A .grad first allocated by a recorded backward would live in the CUDA graphs' memory (overwritten by the next
    replay): in that mode every trainable weight has a zeroed .grad before training and zero_grad keeps it."""
    from simlab.training.module import SurveyLitModule

    module = SurveyLitModule(lora_model(tiny_llama_dir), KLDivergenceLoss(), compile=True, compile_mode=mode)
    module.on_train_start()
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable)
    if mode is None:
        assert all(p.grad is None for p in trainable)
    else:
        assert trainable and all(p.grad is not None and not p.grad.any() for p in trainable)
        buffers = [p.grad for p in trainable]
        for p in trainable:
            p.grad.add_(1.0)
    module.optimizer_zero_grad(0, 0, optimizer)
    if mode is None:
        assert all(p.grad is None for p in trainable)
    else:
        assert all(p.grad is b and not b.any() for p, b in zip(trainable, buffers))
