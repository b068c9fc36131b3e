"""Multi-device training on CPU: DDP (gloo) matches one process at the same effective batch; the gpu/ddp/fsdp
trainer configs resolve and build; FSDP's wrap policy and the checkpoint/adapter path survive wrapper names."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO, compose_config, read_data_json
from hydra.utils import instantiate

from simlab.data.batching import LengthGroupedBatchSampler
from simlab.simulator.checkpoints import adapter_from_checkpoint
from simlab.training.distributed import (
    accumulation_for,
    check_launch,
    clean_param_name,
    fsdp_auto_wrap_policy,
)

# DDP averages the two ranks' gradients where one process sums two halves of an accumulated step: the same
# numbers in another order, so float32 results may differ in the last bits. Measured here: identical (0.0).
LOSS_TOLERANCE = 1e-5


def run_worker(out, trainer, devices, tiny_llama_dir, shared_data, extra=()):
    overrides = [
        "model=hf", f"model.path={tiny_llama_dir}", "model.loader.dtype=float32", "model.lora.lora_dropout=0",
        "module.optimizer.lr=1e-2",  # large enough that the weights, and so the losses, move step by step
        f"data.root={shared_data}", "data.limit_per_subset=64", "data.max_length=2048", "data.test_subsets=[C1-Q2]",
        "data.eval_batch_size=12",  # 64 test rows: 6 batches, 3 per rank, the last one short
        *extra,
    ]
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "distributed_worker.py"), str(out), trainer, str(devices), *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("extra", [
    (),
    # question_first prompts with shared-prefix batches: the rows of one question share a prefix computed once
    ("data.prompt_order=question_first", "data.shared_prefix=true"),
], ids=["per-row", "shared-prefix"])
def test_ddp_two_cpu_processes_match_one_process(tmp_path, tiny_llama_dir, shared_data, extra):
    if extra:  # whole questions (the first 64 rows of each file, in question order), so batches share prefixes
        root = tmp_path / "data"
        (root / "wvs7").mkdir(parents=True)
        for name in ("sft_wvs_train.json", "sft_wvs_valid.json"):
            rows = read_data_json(f"wvs7/{name}")
            rows = sorted(rows, key=lambda r: int(r["id"]))[:64]
            (root / "wvs7" / name).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        extra = (*extra, "data.files=[wvs7/sft_wvs_train.json,wvs7/sft_wvs_valid.json]")
        shared_data = root
    # one process: batch 8 x 1 device x 2 accumulated; DDP: batch 8 x 2 ranks x 1 -- both the paper's 16
    single = run_worker(tmp_path / "single.json", "gpu", 1, tiny_llama_dir, shared_data, extra)
    ddp = run_worker(tmp_path / "ddp.json", "ddp", 2, tiny_llama_dir, shared_data, extra)
    assert (single["world_size"], single["accumulate_grad_batches"]) == (1, 2)
    assert (ddp["world_size"], ddp["accumulate_grad_batches"]) == (2, 1)
    assert single["optimizer_steps"] == ddp["optimizer_steps"] == 4  # 64 rows / 16
    assert len(single["losses"]) == len(ddp["losses"]) == 8
    assert single["shared_prefix_batches"] == ddp["shared_prefix_batches"] == bool(extra)
    np.testing.assert_allclose(ddp["losses"], single["losses"], rtol=0, atol=LOSS_TOLERANCE)
    # the LoRA weights (adapter written from the last checkpoint) moved, and moved the same way
    lora_b = [np.abs(v).max() for k, v in single["adapter"].items() if "lora_B" in k]
    assert lora_b and min(lora_b) > 1e-3  # lora_B starts at zero
    assert single["adapter"].keys() == ddp["adapter"].keys()
    for key in single["adapter"]:
        np.testing.assert_allclose(ddp["adapter"][key], single["adapter"][key], rtol=0, atol=LOSS_TOLERANCE)
    # testing is sharded across ranks (uneven shares) and gathered back: every row once, same predictions
    assert (set(ddp["predictions"]["C1-Q2"]) == set(single["predictions"]["C1-Q2"])
            and len(single["predictions"]["C1-Q2"]) == 64)
    for row, probs in single["predictions"]["C1-Q2"].items():
        np.testing.assert_allclose(ddp["predictions"]["C1-Q2"][row], probs, rtol=0, atol=1e-6)
    assert ddp["test_results"]["C1-Q2"]["n"] == 64
    assert ddp["test_results"]["C1-Q2"]["one_minus_jsd"] == pytest.approx(
        single["test_results"]["C1-Q2"]["one_minus_jsd"], abs=1e-6)


@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_shards_batches_across_ranks(shuffle):
    lengths = [(i * 7) % 23 + 1 for i in range(45)]  # 45 rows, batch 4: 12 batches, the last one short
    whole = list(LengthGroupedBatchSampler(lengths, 4, shuffle=shuffle, seed=3))
    shards = [list(LengthGroupedBatchSampler(lengths, 4, shuffle=shuffle, seed=3, num_replicas=5, rank=r))
              for r in range(5)]
    for r, shard in enumerate(shards):
        assert len(shard) == len(LengthGroupedBatchSampler(lengths, 4, shuffle=shuffle, num_replicas=5, rank=r))
    if shuffle:  # training: the same number of steps on every rank, batch r, r + 5, ... of the one-process order
        assert [len(s) for s in shards] == [3] * 5
        padded = whole + whole[:3]
        assert all(shard == padded[r::5] for r, shard in enumerate(shards))
    else:  # evaluation: every row exactly once, no padding
        assert sorted(i for s in shards for b in s for i in b) == list(range(45))
        assert [len(s) for s in shards] == [3, 3, 2, 2, 2]
    with pytest.raises(ValueError, match="rank"):
        LengthGroupedBatchSampler(lengths, 4, shuffle=shuffle, num_replicas=2, rank=2)


@pytest.mark.parametrize("name,devices,accumulate", [("gpu", 1, 2), ("ddp", 2, 1), ("fsdp", 2, 1)])
def test_trainer_configs_resolve_and_build_without_a_gpu(name, devices, accumulate, tmp_path):
    from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
    from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

    cfg = compose_config(f"trainer={name}", "model=dsqwen7b", f"paths.output_dir={tmp_path}")
    assert cfg.trainer.accelerator == "gpu" and cfg.trainer.precision == "bf16-mixed" and cfg.trainer.devices == devices
    assert cfg.trainer.effective_batch_size == 16 and cfg.trainer.batch_size == cfg.data.batch_size == 8
    assert accumulation_for(16, 8, devices) == accumulate
    if name == "gpu":
        trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32-true", logger=False)
        assert trainer.accumulate_grad_batches == 2
        return
    assert cfg.trainer.use_distributed_sampler is False
    strategy = instantiate(cfg.trainer.strategy)
    if name == "ddp":
        assert isinstance(strategy, DDPStrategy)
        trainer = instantiate(cfg.trainer, accelerator="cpu", precision="32-true", strategy=strategy, logger=False)
        assert trainer.accumulate_grad_batches == 1 and trainer.world_size == 2
        check_launch(trainer, multirun=False)  # a single run may launch its own ranks
        with pytest.raises(RuntimeError, match="re-run the whole sweep"):
            check_launch(trainer, multirun=True)
        return
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.kwargs["use_orig_params"] is True
    assert (strategy.mixed_precision.param_dtype == torch.bfloat16
            and strategy.mixed_precision.reduce_dtype == torch.float32)
    assert strategy._state_dict_type == "full"
    checkpointed = strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    assert Qwen2DecoderLayer in checkpointed._module_classes


def test_cpu_precision_auto_follows_the_cpus_bf16_support_and_speed(tmp_path, monkeypatch):
    import simlab.training.precision as precision

    monkeypatch.delenv("SIMLAB_PRECISION", raising=False)  # the test suite pins it (conftest); users get auto
    cfg = compose_config(f"paths.output_dir={tmp_path}")
    assert cfg.trainer.precision == "auto" and cfg.trainer.accelerator == "cpu"
    for has_bf16, expected in ((False, "32-true"), (True, "bf16-mixed")):
        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda has_bf16=has_bf16: has_bf16)
        monkeypatch.setattr(precision, "bf16_cpu_speeds", lambda: (400.0, 200.0))  # where bf16 is also faster
        trainer = instantiate(cfg.trainer, logger=False, callbacks=[])
        assert trainer.precision == expected


def test_fsdp_needs_a_decoder_layer(tmp_path):
    cfg = compose_config("trainer=fsdp", "model=hf", "model.path=unused", f"paths.output_dir={tmp_path}")
    with pytest.raises(Exception, match="model.decoder_layer"):
        instantiate(cfg.trainer.strategy)
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_for(16, 3, 2)


def _tiny_peft_module(tiny_llama_dir):
    from peft import LoraConfig

    from simlab.model import attach_lora, load_language_model
    from simlab.training.losses import KLDivergenceLoss
    from simlab.training.module import SurveyLitModule

    lm = load_language_model(path=str(tiny_llama_dir))
    model = attach_lora(lm.model,
                        LoraConfig(task_type="CAUSAL_LM", r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():  # non-zero LoRA B, so the saved adapter is not trivially zero
        if "lora_B" in name:
            torch.nn.init.normal_(p)
    return SurveyLitModule(model=model, loss=KLDivergenceLoss(), optimizer=None)


def test_fsdp_wrap_policy_units(tiny_llama_dir):
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    module = _tiny_peft_module(tiny_llama_dir)
    policy = fsdp_auto_wrap_policy([LlamaDecoderLayer])
    wrapped = {n for n, m in module.named_modules() if n and policy(module=m, recurse=False, nonwrapped_numel=0)}
    layers = {n for n, m in module.named_modules() if isinstance(m, LlamaDecoderLayer)}
    lora = {n for n, m in module.named_modules() if n.split(".")[-2:-1] in (["lora_A"], ["lora_B"])}
    assert len(layers) == 2 and len(lora) == 2 * 2 * 2  # 2 layers x (q, v) x (A, B)
    assert wrapped == layers | lora  # frozen bf16 base and fp32 LoRA weights never share a flat parameter
    only_layers = fsdp_auto_wrap_policy([LlamaDecoderLayer], wrap_trainable_leaves=False)
    assert {n for n, m in module.named_modules()
            if n and only_layers(module=m, recurse=False, nonwrapped_numel=0)} == layers


def test_checkpoint_keeps_lora_weights_under_wrapper_names(tiny_llama_dir, tmp_path):
    """Activation checkpointing (as FSDP applies it) renames parameters but not state-dict keys: the
    checkpoint must still hold exactly the LoRA weights, and the adapter written from it must equal peft's own."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    module = _tiny_peft_module(tiny_llama_dir)
    module.model.save_pretrained(str(tmp_path / "peft"))
    apply_activation_checkpointing(module, check_fn=lambda m: isinstance(m, LlamaDecoderLayer))
    names = [n for n, p in module.named_parameters() if p.requires_grad]
    assert names and all("_checkpoint_wrapped_module." in n for n in names)
    assert clean_param_name(names[0]) in module.state_dict()
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    assert sorted(checkpoint["state_dict"]) == sorted(clean_param_name(n) for n in names)
    torch.save(checkpoint, tmp_path / "last.ckpt")
    adapter = adapter_from_checkpoint(module.model, tmp_path / "last.ckpt", tmp_path / "adapter")
    from safetensors.torch import load_file

    ours, peft_own = (load_file(adapter / "adapter_model.safetensors"),
                      load_file(tmp_path / "peft" / "adapter_model.safetensors"))
    assert ours and ours.keys() == peft_own.keys() and all(torch.equal(ours[k], peft_own[k]) for k in ours)
    from simlab.model import load_adapter, load_language_model

    reloaded = load_adapter(load_language_model(path=str(tiny_llama_dir)).model, adapter)
    expected = {clean_param_name(n): p for n, p in module.model.named_parameters() if "lora_" in n}
    assert all(torch.equal(p, expected[n]) for n, p in reloaded.named_parameters() if "lora_" in n)
    with pytest.raises(FileNotFoundError, match="single-file"):
        adapter_from_checkpoint(module.model, tmp_path, tmp_path / "again")


def test_gradients_are_clipped_by_norm_under_fsdp(tiny_llama_dir, tmp_path):
    """Lightning's FSDP precision plugin raises on gradient_clip_val (seen on an H200 with trainer=fsdp): the module
    clips through FSDP's own clip_grad_norm_, so the global gradient norm comes out at gradient_clip_val."""
    from types import SimpleNamespace

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    module = _tiny_peft_module(tiny_llama_dir)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'group'}", rank=0, world_size=1)
    try:
        wrapped = FSDP(module.model, use_orig_params=True, device_id=torch.device("cpu"))
        trainable = [p for p in wrapped.parameters() if p.requires_grad]
        for p in trainable:
            p.grad = torch.full_like(p, 10.0)
        module._trainer = SimpleNamespace(model=wrapped)  # what configure_gradient_clipping reads of the trainer
        module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in trainable]))
        assert norm == pytest.approx(1.0, rel=1e-4)
    finally:
        module._trainer = None
        dist.destroy_process_group()
