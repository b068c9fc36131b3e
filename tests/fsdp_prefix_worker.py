"""FSDP on CPU (gloo, 2 ranks) with non-reentrant activation checkpointing, as trainer=fsdp wraps a model: two SGD
steps with shared-prefix batches, in both layouts (two passes; one packed sequence), must give the per-row batches'
losses and LoRA weights. For
tests/test_shared_prefix.py and tests/test_shared_prefix_families.py:

    python tests/fsdp_prefix_worker.py TINY_MODEL_DIR WORK_DIR OUT.json [float32|bf16]

bf16: as trainer=fsdp runs the paper's models, a bf16 base (peft's LoRA weights stay float32) under FSDP mixed
precision (bf16 compute, float32 gradient reduction) and autocast, as Lightning's bf16-mixed precision does. The
decoder-layer class is the model's (Llama or Qwen2).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS.parent))  # this checkout's simlab, whatever the environment has installed


def worker(rank: int, world: int, model_dir: str, work: str, out: str, port: int, precision: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    sys.path.insert(0, str(TESTS))
    from peft import LoraConfig
    from test_shared_prefix import datamodule
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp import MixedPrecision
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from simlab.data.batching import PadCollator, SharedPrefixCollator
    from simlab.model import attach_lora
    from simlab.model.scoring import option_logits
    from simlab.training.distributed import clean_param_name, fsdp_auto_wrap_policy
    from simlab.training.losses import KLDivergenceLoss

    class Scorer(torch.nn.Module):  # the root unit's forward runs the scoring, as Lightning's wrapper does
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return option_logits(self.model, batch)

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows_dir = Path(work) / f"rank{rank}"
    rows_dir.mkdir(parents=True, exist_ok=True)
    items = list(enumerate(datamodule(rows_dir, tokenizer, prompt_order="question_first").datasets["V"].encoded))
    bf16 = precision == "bf16"
    mixed = MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32, buffer_dtype=torch.bfloat16)
    results, layouts = {}, {}
    for name, collate in (("per-row", PadCollator(tokenizer.pad_token_id)),
                          ("shared", SharedPrefixCollator(tokenizer.pad_token_id, pack_max_tokens=0)),
                          ("packed", SharedPrefixCollator(tokenizer.pad_token_id, pack_max_tokens=10**6))):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16 if bf16 else torch.float32)
        layer = type(base.get_decoder().layers[0])  # LlamaDecoderLayer, Qwen2DecoderLayer
        model = attach_lora(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(std=0.1)
        scorer = Scorer(model)
        initial = {clean_param_name(n): p.detach().clone() for n, p in scorer.named_parameters() if "lora_" in n}
        wrapped = FSDP(scorer, auto_wrap_policy=fsdp_auto_wrap_policy([layer]), use_orig_params=True,
                       device_id=torch.device("cpu"), mixed_precision=mixed if bf16 else None)
        apply_activation_checkpointing(wrapped, check_fn=lambda m, layer=layer: isinstance(m, layer))
        wrapped.eval()  # dropout off; gradients still flow
        batch = collate(items)
        layouts[name] = "packed_ids" if "packed_ids" in batch else "prefix_ids" if "prefix_ids" in batch else "rows"
        losses = []
        for _ in range(2):
            # Lightning's bf16-mixed runs the forward under autocast (on the GPU: torch.autocast("cuda", bf16))
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = wrapped(batch)
                loss = KLDivergenceLoss()(logits, batch["target"], batch["option_mask"])
            loss.backward()
            losses.append(loss.item())
            with torch.no_grad():
                for param in wrapped.parameters():
                    if param.requires_grad and param.grad is not None:
                        param -= 0.5 * param.grad
            wrapped.zero_grad()
        with FSDP.summon_full_params(wrapped):
            weights = {clean_param_name(n): p.detach().clone() for n, p in wrapped.named_parameters() if "lora_" in n}
        results[name] = (losses, weights)
    if rank == 0:
        l1, w1 = results["per-row"]
        report = {"losses": [l1], "weights": len(w1), "layouts": layouts}
        for name in ("shared", "packed"):
            l2, w2 = results[name]
            report["losses"].append(l2)
            report[name] = {"same_names": sorted(w1) == sorted(w2),
                            "max_weight_difference": max(float((w1[k] - w2[k]).abs().max()) for k in w1),
                            # per LoRA matrix: the largest difference against the largest change the two steps made
                            "max_relative_weight_difference": max(
                                float((w1[k] - w2[k]).abs().max()) / float((w1[k] - initial[k]).abs().max())
                                for k in w1)}
        json.dump(report, open(out, "w"))
    dist.destroy_process_group()


if __name__ == "__main__":
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    precision = sys.argv[4] if len(sys.argv) > 4 else "float32"
    if precision not in ("float32", "bf16"):
        raise SystemExit(f"precision must be float32 or bf16, got {precision!r}")
    mp.spawn(worker, args=(2, sys.argv[1], sys.argv[2], sys.argv[3], free_port, precision), nprocs=2)
